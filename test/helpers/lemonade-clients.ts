/**
 * The Lemonade steps the multi-process tests (store-postgres.test.ts, workers.test.ts) take
 * through a running gateway with raw clients: log in, GENURLAUTH, URLFETCH, BURL, and the
 * concurrent APPENDs of issue 18's scenario 3.
 */
import type { RunningGateway } from './gateway.js';
import { RawImap } from './imap-raw.js';
import { RawSmtp } from './smtp-raw.js';
import { masterClient, type LegacyStackInfo } from './stack.js';

/** An IMAP session through gateway gw (implicit TLS), logged in as user. */
export async function imapLogin(gw: RunningGateway, user: string): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(r.at(-1) ?? '')) throw new Error(r.join('\n'));
  return c;
}

export async function genurlauth(c: RawImap, rump: string): Promise<string> {
  const r = await c.command('g', `GENURLAUTH "${rump}" INTERNAL`);
  const m = /^\* GENURLAUTH "([^"]+)"$/.exec(r[0] ?? '');
  if (!m || !/^g OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  return m[1]!;
}

/** URLFETCH of one URL: its content, or undefined for NIL. */
export async function urlfetch(c: RawImap, url: string): Promise<string | undefined> {
  c.write(`f URLFETCH "${url}"\r\n`);
  const first = await c.line();
  if (first === undefined) throw new Error('closed');
  if (/^\* URLFETCH "[^"]+" NIL$/.test(first)) {
    const done = await c.line();
    if (!/^f OK/.test(done ?? '')) throw new Error(`URLFETCH: ${done}`);
    return undefined;
  }
  const lit = /^\* URLFETCH "[^"]+" \{(\d+)\}$/.exec(first);
  if (!lit) throw new Error(`unexpected: ${first}`);
  const content = (await c.bytes(Number(lit[1]))).toString('latin1');
  await c.line(); // the CRLF that ends the response
  const done = await c.line();
  if (!/^f OK/.test(done ?? '')) throw new Error(`URLFETCH: ${done}`);
  return content;
}

/** BURL LAST of url through gateway gw's submission port, as alice to bob: the final reply. */
export async function burl(gw: RunningGateway, url: string): Promise<string> {
  const s = await RawSmtp.authenticated(gw.submissionsPort, { tls: true });
  try {
    const mail = await s.command('MAIL FROM:<alice@example.org>');
    if (mail.code !== 250) return mail.text;
    const rcpt = await s.command('RCPT TO:<bob@example.org>');
    if (rcpt.code !== 250) return rcpt.text;
    return (await s.command(`BURL ${url} LAST`, 30_000)).text;
  } finally {
    s.close();
  }
}

/** What one APPEND got: the message's number n and the APPENDUID the gateway answered. */
export interface AppendUid {
  n: number;
  uid: number;
  uidValidity: number;
}

/**
 * Issue 18 scenario 3's client: one session as alice through gw, `count` APPENDs to Busy
 * back to back, messages "concurrent N" from `first` on; each must get an APPENDUID.
 */
export async function appendSession(gw: RunningGateway, first: number, count = 5): Promise<AppendUid[]> {
  const c = await imapLogin(gw, 'alice');
  const out: AppendUid[] = [];
  try {
    for (let n = first; n < first + count; n++) {
      const body = `Subject: concurrent ${n}\r\nMessage-ID: <c${n}@example.org>\r\n\r\nmessage ${n}\r\n`;
      c.write(`a${n} APPEND Busy {${body.length}}\r\n`);
      const cont = await c.line(30_000);
      if (!cont?.startsWith('+')) throw new Error(`no continuation: ${cont}`);
      c.write(`${body}\r\n`);
      const done = (await c.until(`a${n}`, 60_000)).at(-1)!;
      const m = new RegExp(`^a${n} OK \\[APPENDUID (\\d+) (\\d+)\\]`).exec(done);
      if (!m) throw new Error(`append ${n}: ${done}`);
      out.push({ n, uidValidity: Number(m[1]), uid: Number(m[2]) });
    }
    return out;
  } finally {
    c.close();
  }
}

/** Reads Busy straight from Dovecot: how many messages it holds, and the APPENDUIDs that do not name the message appended. */
export async function wrongAppendUids(stack: LegacyStackInfo, results: AppendUid[]): Promise<{ stored: number; wrong: AppendUid[] }> {
  const direct = await masterClient(stack, 'alice');
  const box = await direct.mailboxOpen('Busy');
  const subjects = new Map<number, string>();
  for await (const msg of direct.fetch('1:*', { uid: true, envelope: true })) subjects.set(msg.uid, msg.envelope?.subject ?? '');
  await direct.logout();
  const wrong = results.filter((r) => r.uidValidity !== Number(box.uidValidity) || subjects.get(r.uid) !== `concurrent ${r.n}`);
  return { stored: subjects.size, wrong };
}
