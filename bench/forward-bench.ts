/**
 * Forward without download (issue 4): a phone forwards a message with a 1 MB or 10 MB
 * attachment, two ways, through the gateway in one run:
 *   traditional  FETCH the attachment section, then APPEND the whole new message
 *   catenate     APPEND ... CATENATE (TEXT, URL of the attachment's MIME header, URL of
 *                the attachment, TEXT): the gateway fetches the part upstream
 * For each: bytes the client sent and received on its socket, and wall time, over
 * BENCH_REPEAT forwards (median). Both produce the same message in Sent (checked).
 *
 * Not a test: run on demand with `bash bench/run.sh forward`; results go in bench/RESULTS.md.
 */
import { randomBytes } from 'node:crypto';
import { ImapFlow } from 'imapflow';
import { startLegacyStack } from '../test/helpers/stack.js';
import { startGateway } from '../test/helpers/gateway.js';
import { RawImap } from '../test/helpers/imap-raw.js';

const REPEAT = Number(process.env.BENCH_REPEAT ?? 5);
const SIZES = [1024 * 1024, 10 * 1024 * 1024];

function original(bytes: number): { raw: Buffer; mime: string; body: string } {
  // base64 of `bytes` random octets: the attachment as it sits in a real message.
  const body = randomBytes(bytes).toString('base64').replace(/.{76}/g, '$&\r\n');
  const mime = 'Content-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const raw = Buffer.from(
    'From: bob@example.org\r\nTo: alice@example.org\r\nSubject: data\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="o"\r\n\r\n' +
      `--o\r\nContent-Type: text/plain\r\n\r\nhere\r\n--o\r\n${mime}${body}\r\n--o--\r\n`,
  );
  return { raw, mime, body };
}

const HEAD = 'From: alice@example.org\r\nTo: carol@example.org\r\nSubject: Fwd: data\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="f"\r\n\r\n--f\r\nContent-Type: text/plain\r\n\r\nFYI\r\n--f\r\n';
const TAIL = '\r\n--f--\r\n';

function expectOk(lines: string[], tag: string): void {
  if (!lines.at(-1)?.startsWith(`${tag} OK`)) throw new Error(lines.slice(-3).join('\n'));
}

/** FETCH the MIME header and the attachment, then APPEND the whole forward. */
async function traditional(c: RawImap, uid: number): Promise<void> {
  const parts: Buffer[] = [];
  for (const section of ['2.MIME', '2']) {
    c.write(`f UID FETCH ${uid} (BODY.PEEK[${section}])\r\n`);
    const head = await c.line();
    const m = /\{(\d+)\}$/.exec(head ?? '');
    if (!m) throw new Error(`no literal: ${head}`);
    parts.push(await c.bytes(Number(m[1])));
    expectOk(await c.until('f'), 'f');
  }
  const message = Buffer.concat([Buffer.from(HEAD), ...parts, Buffer.from(TAIL)]);
  c.write(`a APPEND Sent {${message.length}+}\r\n`);
  c.write(message);
  c.write('\r\n');
  expectOk(await c.until('a', 120_000), 'a');
}

async function catenate(c: RawImap, uid: number, uidValidity: number): Promise<void> {
  const url = `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}/;SECTION=2`;
  c.write(`a APPEND Sent CATENATE (TEXT {${HEAD.length}+}\r\n${HEAD} URL "${url}.MIME" URL "${url}" TEXT {${TAIL.length}+}\r\n${TAIL})\r\n`);
  expectOk(await c.until('a', 120_000), 'a');
}

async function main(): Promise<void> {
  const stack = await startLegacyStack({ postfix: false });
  const gw = await startGateway(stack, { config: { imap: { limits: { maxLiteralSize: 64 * 1024 * 1024 } } } });
  const master = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: 'alice' }, logger: false,
  });
  await master.connect();
  await master.mailboxCreate('Sent').catch(() => undefined);
  const rows: string[] = [];
  try {
    for (const size of SIZES) {
      const o = original(size);
      await master.append('INBOX', o.raw);
      const box = await master.mailboxOpen('INBOX');
      const uid = Number(box.uidNext) - 1;
      const uidValidity = Number(box.uidValidity);
      const expected = Buffer.from(HEAD + o.mime + o.body + TAIL);
      for (const way of ['traditional', 'catenate'] as const) {
        const times: number[] = [];
        const bytes: number[] = [];
        for (let i = 0; i < REPEAT; i++) {
          const c = await RawImap.connect(gw.imapsPort, { tls: true });
          await c.line();
          expectOk(await c.command('l', 'LOGIN alice password'), 'l');
          expectOk(await c.command('s', 'SELECT INBOX'), 's');
          const sent0 = c.bytesSent;
          const received0 = c.bytesReceived;
          const started = performance.now();
          if (way === 'traditional') await traditional(c, uid);
          else await catenate(c, uid, uidValidity);
          times.push(performance.now() - started);
          bytes.push(c.bytesSent - sent0 + (c.bytesReceived - received0));
          c.close();
          await master.mailboxOpen('Sent');
          const last = await master.fetchOne('*', { source: true });
          if (!last || !last.source?.equals(expected)) throw new Error(`${way}: the message in Sent is not the expected forward`);
          await master.messageDelete('1:*');
        }
        const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
        rows.push(`| ${size / 1024 / 1024} MB | ${way} | ${median(bytes).toLocaleString('en')} | ${median(times).toFixed(0)} |`);
        console.error(rows.at(-1));
      }
    }
  } finally {
    await master.logout().catch(() => undefined);
    await gw.stop();
    await stack.stop();
  }
  console.log(`\nForward of a message with an attachment, through the gateway (TLS), median of ${REPEAT}:\n`);
  console.log('| attachment | way | client bytes (sent + received) | wall ms |');
  console.log('|---|---|---:|---:|');
  for (const r of rows) console.log(r);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
