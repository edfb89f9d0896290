/**
 * Forward with BURL over a slow link (issue 5): alice forwards a message whose second part
 * is a 5 MB attachment to bob, two ways, through the gateway (implicit TLS on both its IMAP
 * and its submission port) in front of the legacy Dovecot and Postfix:
 *   traditional  FETCH the attachment (BODY.PEEK[2.MIME], BODY.PEEK[2]), send the whole new
 *                message over SMTP (DATA), then APPEND it to Sent (the fcc a real client keeps)
 *   lemonade     APPEND Sent CATENATE (TEXT, URL, URL, TEXT) (RFC 4469 §5), GENURLAUTH of the
 *                Sent copy for submit+alice (RFC 4467 §7), SMTP MAIL, RCPT, BURL url LAST
 *                (RFC 4468 §3): the attachment never crosses the client's link
 * Each way runs once on direct loopback (reference) and once behind a SlowLink (bench/
 * throttle.ts: token bucket at BENCH_LINK_BPS each way, BENCH_LINK_RTT_MS round trip)
 * carrying both of the client's connections. For each: client bytes (inside TLS on both
 * sockets, and on the link: TLS records), round trips, wall time. Every run must deliver:
 * bob's newest message and alice's newest Sent message must equal the forward byte for byte
 * (trace fields aside), or the bench fails.
 *
 * Round trips are counted, not measured: one for each time the client waits for the
 * server before it can go on. Per connection that is TCP's handshake, TLS's (one round
 * trip in TLS 1.3, two in 1.2; checked) and the greeting; then one per command and reply.
 * Neither client pipelines (no RFC 2920 groups); both use LITERAL+ (RFC 7888), so
 * APPEND and CATENATE send their literals without waiting for "+".
 *
 * Not a test: run on demand with `bash bench/run.sh burl`; results go in bench/RESULTS.md.
 */
import tls from 'node:tls';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, withoutTrace, type LegacyStack } from '../test/helpers/stack.js';
import { startGateway } from '../test/helpers/gateway.js';
import { RawImap } from '../test/helpers/imap-raw.js';
import { RawSmtp } from '../test/helpers/smtp-raw.js';
import { withAttachment } from '../test/helpers/messages.js';
import { SlowLink } from './throttle.js';

/** Runs of each way and link (median reported). The slow traditional run takes about 3 minutes at 1 Mbit/s. */
const REPEAT = Number(process.env.BENCH_REPEAT ?? 1);
const LINK_BPS = Number(process.env.BENCH_LINK_BPS ?? 1_000_000);
const LINK_RTT_MS = Number(process.env.BENCH_LINK_RTT_MS ?? 50);
const ATTACHMENT_BYTES = Number(process.env.BENCH_ATTACHMENT_BYTES ?? 5 * 1024 * 1024);
const AUTH = `AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`;

/** What one forward cost the client. */
interface Tally {
  /** What the client waited for, in order (its length is the round-trip count). */
  turns: string[];
  appUp: number;
  appDown: number;
}

/** Ports the client connects to (the gateway's, or the slow link's in front of them), and how long a transfer may take. */
interface Route {
  imaps: number;
  submissions: number;
  timeoutMs: number;
}

function forwardText(id: string, mime: string, body: string): { head: string; tail: string; message: Buffer } {
  // Date and Message-ID are given so nothing downstream adds them and the copies compare byte for byte.
  const head =
    `From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Fwd: the data\r\nDate: Sun, 29 Nov 2026 06:00:00 +0000\r\n` +
    `Message-ID: <${id}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="f"\r\n\r\n` +
    '--f\r\nContent-Type: text/plain\r\n\r\nFor you.\r\n--f\r\n';
  const tail = '\r\n--f--\r\n';
  return { head, tail, message: Buffer.from(head + mime + body + tail) };
}

function expectOk(lines: string[], tag: string): string {
  const last = lines.at(-1) ?? '';
  if (!last.startsWith(`${tag} OK`)) throw new Error(lines.slice(-3).join('\n'));
  return last;
}

function expectCode(reply: { code: number; text: string }, code: number): void {
  if (reply.code !== code) throw new Error(`expected ${code}, got: ${reply.text}`);
}

/** Opens an implicit-TLS connection and reads the greeting, tallying its round trips. */
async function open<C extends RawImap | RawSmtp>(kind: 'imap' | 'smtp', port: number, tally: Tally): Promise<C> {
  const c = (kind === 'imap' ? await RawImap.connect(port, { tls: true }) : await RawSmtp.connect(port, { tls: true })) as C;
  tally.turns.push(`${kind} TCP`);
  const version = (c.socket as tls.TLSSocket).getProtocol();
  tally.turns.push(`${kind} TLS`);
  if (version !== 'TLSv1.3') tally.turns.push(`${kind} TLS (${version}: a second round trip)`);
  if (c instanceof RawImap) {
    if (!(await c.line())?.startsWith('* OK')) throw new Error('no IMAP greeting');
  } else if ((await (c as RawSmtp).reply())?.code !== 220) throw new Error('no SMTP greeting');
  tally.turns.push(`${kind} greeting`);
  return c;
}

async function imapCommand(c: RawImap, tally: Tally, tag: string, text: string, label: string, timeoutMs?: number): Promise<string[]> {
  tally.turns.push(label);
  return c.command(tag, text, timeoutMs);
}

async function smtpCommand(s: RawSmtp, tally: Tally, line: string, code: number, timeoutMs?: number): Promise<void> {
  tally.turns.push(line.split(' ')[0]!);
  expectCode(await s.command(line, timeoutMs), code);
}

/** LOGIN, SELECT INBOX: both clients start here (a phone showing the message is already past it). */
async function imapSession(route: Route, tally: Tally): Promise<RawImap> {
  const c = await open<RawImap>('imap', route.imaps, tally);
  expectOk(await imapCommand(c, tally, 'l', 'LOGIN alice password', 'LOGIN'), 'l');
  expectOk(await imapCommand(c, tally, 's', 'SELECT INBOX', 'SELECT'), 's');
  return c;
}

/** Connect, EHLO, AUTH PLAIN with the initial response (RFC 4954 §4), MAIL, RCPT. */
async function smtpTransaction(route: Route, tally: Tally): Promise<RawSmtp> {
  const s = await open<RawSmtp>('smtp', route.submissions, tally);
  await smtpCommand(s, tally, 'EHLO phone.example.org', 250);
  await smtpCommand(s, tally, AUTH, 235);
  await smtpCommand(s, tally, 'MAIL FROM:<alice@example.org>', 250);
  await smtpCommand(s, tally, 'RCPT TO:<bob@example.org>', 250);
  return s;
}

/** One FETCH for both sections (a careful client asks once); literals are read whole. */
async function fetchSections(c: RawImap, tally: Tally, uid: number, timeoutMs: number): Promise<Map<string, Buffer>> {
  tally.turns.push('UID FETCH');
  c.write(`f UID FETCH ${uid} (BODY.PEEK[2.MIME] BODY.PEEK[2])\r\n`);
  const got = new Map<string, Buffer>();
  for (;;) {
    let line = await c.line(timeoutMs);
    if (line === undefined) throw new Error('closed during FETCH');
    if (line.startsWith('f ')) {
      expectOk([line], 'f');
      return got;
    }
    // A literal ends its line; the response goes on after it on the next one.
    let m: RegExpExecArray | null;
    while ((m = /BODY\[([^\]]*)\] \{(\d+)\}$/.exec(line))) {
      got.set(m[1]!, await c.bytes(Number(m[2]), timeoutMs));
      line = (await c.line(timeoutMs)) ?? '';
    }
  }
}

async function traditional(route: Route, tally: Tally, src: { uid: number }, id: string): Promise<void> {
  const c = await imapSession(route, tally);
  const parts = await fetchSections(c, tally, src.uid, route.timeoutMs);
  if (!parts.has('2.MIME') || !parts.has('2')) throw new Error(`FETCH returned ${[...parts.keys()].join(', ')}`);
  const { message } = forwardText(id, parts.get('2.MIME')!.toString('latin1'), parts.get('2')!.toString('latin1'));
  const s = await smtpTransaction(route, tally);
  await smtpCommand(s, tally, 'DATA', 354);
  // RFC 5321 §4.5.2: a line starting with "." gets another; base64 never does, the text might.
  s.write(message.toString('latin1').replace(/\r\n\./g, '\r\n..'));
  tally.turns.push('end of data');
  expectCode(await s.command('.', route.timeoutMs), 250);
  // The fcc: the same bytes again, up the same link (RFC 7888 LITERAL+, no wait for "+").
  c.write(`a APPEND Sent (\\Seen) {${message.length}+}\r\n`);
  c.write(message);
  c.write('\r\n');
  tally.turns.push('APPEND');
  expectOk(await c.until('a', route.timeoutMs), 'a');
  tally.appUp += c.bytesSent + s.bytesSent;
  tally.appDown += c.bytesReceived + s.bytesReceived;
  s.close();
  c.close();
}

async function lemonade(route: Route, tally: Tally, src: { uid: number; uidValidity: number }, id: string): Promise<void> {
  const c = await imapSession(route, tally);
  const { head, tail } = forwardText(id, '', '');
  // RFC 4469 §5: the new message is assembled server-side from the text and the original's parts.
  const url = `/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}/;SECTION=2`;
  c.write(`a APPEND Sent (\\Seen) CATENATE (TEXT {${head.length}+}\r\n${head} URL "${url}.MIME" URL "${url}" TEXT {${tail.length}+}\r\n${tail})\r\n`);
  tally.turns.push('APPEND CATENATE');
  const appended = expectOk(await c.until('a', route.timeoutMs), 'a');
  // RFC 4315 §3 APPENDUID names the Sent copy, which is what gets submitted.
  const uid = /\[APPENDUID (\d+) (\d+)\]/.exec(appended);
  if (!uid) throw new Error(`no APPENDUID: ${appended}`);
  // RFC 4467 §7: an authorized URL the submission server (acting for alice) may fetch.
  const rump = `imap://alice@localhost/Sent;UIDVALIDITY=${uid[1]}/;UID=${uid[2]};URLAUTH=submit+alice`;
  const g = await imapCommand(c, tally, 'g', `GENURLAUTH "${rump}" INTERNAL`, 'GENURLAUTH');
  expectOk(g, 'g');
  const full = /^\* GENURLAUTH "([^"]+)"/.exec(g[0] ?? '');
  if (!full) throw new Error(g.join('\n'));
  const s = await smtpTransaction(route, tally);
  // RFC 4468 §3.5: BURL url LAST, the whole message from the URL, and the transaction ends.
  await smtpCommand(s, tally, `BURL ${full[1]} LAST`, 250, route.timeoutMs);
  tally.appUp += c.bytesSent + s.bytesSent;
  tally.appDown += c.bytesReceived + s.bytesReceived;
  s.close();
  c.close();
}

/** alice's session on Dovecot itself (master user), to create Sent and check what landed in it. */
async function aliceUpstream(stack: LegacyStack): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: 'alice' }, logger: false, disableAutoIdle: true,
  });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** alice's newest Sent message, raw. */
async function newestSent(alice: ImapFlow): Promise<Buffer> {
  await alice.mailboxOpen('Sent');
  const msg = await alice.fetchOne('*', { source: true });
  if (!msg || !msg.source) throw new Error('no message in Sent');
  return msg.source;
}

interface Row {
  link: string;
  way: string;
  appUp: number;
  appDown: number;
  wireUp?: number;
  wireDown?: number;
  trips: number;
  ms: number;
  turns: string[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const n = (x: number | undefined) => (x === undefined ? '' : x.toLocaleString('en'));

async function main(): Promise<void> {
  const stack = await startLegacyStack({ postfix: true });
  const gw = await startGateway(stack, { config: { submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } } } });
  let alice: ImapFlow | undefined;
  const rows: Row[] = [];
  try {
    alice = await aliceUpstream(stack);
    const o = withAttachment(ATTACHMENT_BYTES, 'carol@example.org');
    const src = await stack.append('alice', 'INBOX', o.raw);
    await alice.mailboxCreate('Sent');
    // Transfers of the attachment take about its size over the rate; give them three times that.
    const slowTimeout = Math.max(60_000, (3 * (o.raw.length * 8 * 1000)) / LINK_BPS);
    const links = [
      { name: 'loopback', slow: false },
      { name: `${LINK_BPS / 1e6} Mbit/s, ${LINK_RTT_MS} ms RTT`, slow: true },
    ];
    for (const link of links) {
      for (const way of ['traditional', 'lemonade'] as const) {
        const runs: Row[] = [];
        for (let i = 0; i < REPEAT; i++) {
          const id = `burl-bench-${way}-${link.slow ? 'slow' : 'direct'}-${i}-${Date.now()}`;
          const slowLink = link.slow ? new SlowLink({ bitsPerSecond: LINK_BPS, rttMs: LINK_RTT_MS }) : undefined;
          const route: Route = slowLink
            ? { imaps: await slowLink.forward(gw.imapsPort), submissions: await slowLink.forward(gw.submissionsPort), timeoutMs: slowTimeout }
            : { imaps: gw.imapsPort, submissions: gw.submissionsPort, timeoutMs: 60_000 };
          const tally: Tally = { turns: [], appUp: 0, appDown: 0 };
          const bobBefore = await stack.messageCount('bob');
          const started = performance.now();
          try {
            if (way === 'traditional') await traditional(route, tally, src, id);
            else await lemonade(route, tally, src, id);
          } finally {
            await slowLink?.close();
          }
          const ms = performance.now() - started;
          // A forward that did not arrive intact is an error, not a number.
          const expected = forwardText(id, o.mime, o.body).message;
          const delivered = withoutTrace(await stack.newestMessage('bob', bobBefore + 1, 60_000));
          if (!delivered.equals(expected)) throw new Error(`${way} over ${link.name}: bob's copy (${delivered.length} bytes) is not the forward (${expected.length} bytes)`);
          const sent = await newestSent(alice);
          if (!sent.equals(expected)) throw new Error(`${way} over ${link.name}: the Sent copy (${sent.length} bytes) is not the forward`);
          const row: Row = {
            link: link.name, way, appUp: tally.appUp, appDown: tally.appDown,
            wireUp: slowLink?.bytes.up, wireDown: slowLink?.bytes.down,
            trips: tally.turns.length, ms, turns: tally.turns,
          };
          runs.push(row);
          console.error(`${link.name} ${way} #${i + 1}: ${(ms / 1000).toFixed(2)} s, ${row.trips} round trips, app ${n(row.appUp)} up / ${n(row.appDown)} down, link ${n(row.wireUp)} up / ${n(row.wireDown)} down; delivered and in Sent (${expected.length} bytes)`);
        }
        const med = (f: (r: Row) => number) => median(runs.map(f));
        rows.push({
          link: link.name, way, appUp: med((r) => r.appUp), appDown: med((r) => r.appDown),
          wireUp: link.slow ? med((r) => r.wireUp!) : undefined, wireDown: link.slow ? med((r) => r.wireDown!) : undefined,
          trips: med((r) => r.trips), ms: med((r) => r.ms), turns: runs[0]!.turns,
        });
      }
    }
    console.log(`\nForward of a message with a ${n(ATTACHMENT_BYTES)}-byte attachment (${n(o.raw.length)}-byte original), alice to bob, through the gateway (TLS); median of ${REPEAT}:\n`);
    console.log('| client link | way | client bytes up (inside TLS) | client bytes down (inside TLS) | on the link up / down (TLS records) | round trips | wall s |');
    console.log('|---|---|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      const wire = r.wireUp === undefined ? '' : `${n(r.wireUp)} / ${n(r.wireDown)}`;
      console.log(`| ${r.link} | ${r.way} | ${n(r.appUp)} | ${n(r.appDown)} | ${wire} | ${r.trips} | ${(r.ms / 1000).toFixed(2)} |`);
    }
    const slow = rows.filter((r) => r.wireUp !== undefined);
    const [t, l] = [slow.find((r) => r.way === 'traditional')!, slow.find((r) => r.way === 'lemonade')!];
    console.log(`\nOn the slow link: lemonade saves ${((t.ms - l.ms) / 1000).toFixed(2)} s (${(t.ms / l.ms).toFixed(0)}x faster) and ${n(t.wireUp! + t.wireDown! - l.wireUp! - l.wireDown!)} bytes.`);
    for (const way of ['traditional', 'lemonade']) {
      console.log(`\nRound trips, ${way}: ${rows.find((r) => r.way === way)!.turns.join(', ')}`);
    }
    // Warnings and errors the gateway logged meanwhile (pino levels 40 and up): a bench that
    // delivered can still have hit a fault worth a look.
    const complaints = gw.logs.filter((l) => /"level":[4-6]0\b/.test(l));
    console.log(`\nGateway log lines at warn or above during the run: ${complaints.length}`);
    for (const l of complaints.slice(0, 10)) console.log(`  ${l.slice(0, 300)}`);
  } catch (err) {
    console.error(`gateway's last log lines:\n${gw.logs.slice(-20).join('\n')}`);
    throw err;
  } finally {
    await alice?.logout().catch(() => alice?.close());
    await gw.stop();
    await stack.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
