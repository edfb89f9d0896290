/**
 * What the gateway logs (issue 8): a workload through every way credentials and tokens
 * reach it — IMAP LOGIN (atom and literal), AUTHENTICATE PLAIN (initial response and
 * continuation), SMTP AUTH PLAIN and AUTH LOGIN (base64), failed attempts, GENURLAUTH /
 * URLFETCH / BURL and a refused token — at log level debug, then the whole log is
 * searched: no password (plain or base64), no URLAUTH token, no message content; every
 * session line carries its session id, and the user once logged in. Every CATENATE outcome,
 * refusals by the gateway included, has its `command` line (issue 15 §4).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
/** The stack's users all have this password; the master user has its own. */
const PASSWORD = 'password';
const WRONG = 'Wr0ng-Secret-77';
const MARKER = `body-marker-${process.pid}-${Date.now()}`;

let stack: LegacyStack;
let gw: RunningGateway;
t.before(async () => {
  stack = await startLegacyStack();
  gw = await startGateway(stack, { config: { log: { level: 'trace' }, submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } } } });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

async function imap(): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  return c;
}

async function smtp(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await c.reply();
  await c.command('EHLO client.example.org');
  return c;
}

interface LogLine {
  level: number;
  msg: string;
  session?: string;
  user?: string;
  command?: string;
  [key: string]: unknown;
}

t.test('the start-up log names the TLS certificate clients get, with its SHA-256 fingerprint', async (t) => {
  const line = gw.logs.find((l) => l.includes('"msg":"TLS certificate"'));
  t.ok(line, 'a "TLS certificate" line');
  const logged = JSON.parse(line ?? '{}') as { certificate?: { file?: string; sha256?: string; selfSigned?: boolean } };
  t.match(logged.certificate?.file, /tls\/selfsigned-cert\.pem$/, 'the generated file');
  t.equal(logged.certificate?.selfSigned, true);
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  const presented = (c.socket as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256;
  c.close();
  t.equal(logged.certificate?.sha256, presented, 'the fingerprint of the certificate the listener presents');
  t.notMatch(gw.logs.join('\n'), /senderPolicy\.mode is "own" but lists no domains/, 'no sender-policy warning with domains set');
});

t.test('a workload with every kind of secret, then the whole log is searched', async (t) => {
  const seeded = await stack.append('alice', 'INBOX', Buffer.from(`From: bob@example.org\r\nTo: alice@example.org\r\nSubject: seeded\r\n\r\n${MARKER} seeded\r\n`));
  const secrets: Record<string, string> = {
    password: PASSWORD,
    'password, base64': b64(PASSWORD),
    'wrong password': WRONG,
    'wrong password, base64': b64(WRONG),
    'master password': stack.master.password,
    'message content': MARKER,
  };
  for (const user of ['alice', 'bob', 'carol']) secrets[`PLAIN response of ${user}`] = b64(`\0${user}\0${PASSWORD}`);
  secrets['PLAIN response with the wrong password'] = b64(`\0alice\0${WRONG}`);

  // IMAP: LOGIN with atoms, a failed LOGIN with a literal, AUTHENTICATE PLAIN both ways.
  const alice = await imap();
  t.match((await alice.command('w', `LOGIN alice {${WRONG.length}+}\r\n${WRONG}`)).at(-1), /^w NO/);
  t.match((await alice.command('l', `LOGIN alice ${PASSWORD}`)).at(-1), /^l OK/);
  const bob = await imap();
  t.match((await bob.command('a', `AUTHENTICATE PLAIN ${b64(`\0bob\0${PASSWORD}`)}`)).at(-1), /^a OK/);
  const carol = await imap();
  carol.write('a AUTHENTICATE PLAIN\r\n');
  t.match(await carol.line(), /^\+/);
  carol.write(`${b64(`\0carol\0${PASSWORD}`)}\r\n`);
  t.match((await carol.until('a')).at(-1), /^a OK/);

  // Message content through the relay, URLAUTH tokens issued, fetched and refused.
  await alice.command('s', 'SELECT INBOX');
  t.match((await alice.command('f', `UID FETCH ${seeded.uid} BODY[]`)).join('\n'), new RegExp(MARKER));
  const rump = `imap://alice@localhost/INBOX;UIDVALIDITY=${seeded.uidValidity}/;UID=${seeded.uid}`;
  const issued: string[] = [];
  for (const access of ['user+alice', 'submit+alice']) {
    const r = await alice.command('g', `GENURLAUTH "${rump};URLAUTH=${access}" INTERNAL`);
    const url = /^\* GENURLAUTH "([^"]+)"/.exec(r[0] ?? '')?.[1];
    t.ok(url, `GENURLAUTH ${access}`);
    issued.push(url!);
    secrets[`token for ${access}`] = url!.split(':').at(-1)!;
  }
  t.match((await alice.command('u', `URLFETCH "${issued[0]}"`)).join('\n'), new RegExp(MARKER), 'URLFETCH serves the part');
  const tampered = issued[0]!.replace(/.$/, (c) => (c === '0' ? '1' : '0'));
  secrets['tampered token'] = tampered.split(':').at(-1)!;
  t.match((await alice.command('u', `URLFETCH "${tampered}"`)).join('\n'), /URLFETCH "[^"]+" NIL/, 'a wrong token is refused');

  // CATENATE (RFC 4469) in a session of its own: every outcome, refused by the gateway
  // (BADURL, TOOBIG at the first literal and at a later one) or answered by the upstream
  // (TRYCREATE, OK), ends with a `command` line, checked below in this order.
  const cat = await imap();
  t.match((await cat.command('l', `LOGIN alice ${PASSWORD}`)).at(-1), /^l OK/);
  t.match((await cat.command('c1', `APPEND INBOX CATENATE (URL "/INBOX;UIDVALIDITY=${seeded.uidValidity}/;UID=99999")`)).at(-1), /^c1 NO \[BADURL /);
  t.match((await cat.command('c2', 'APPEND INBOX CATENATE (TEXT {99999999999}')).at(-1), /^c2 NO \[TOOBIG\]/);
  t.match((await cat.command('c3', 'APPEND INBOX CATENATE (TEXT {5+}\r\nHello TEXT {99999999999}')).at(-1), /^c3 NO \[TOOBIG\]/);
  t.match((await cat.command('c4', 'APPEND NoSuchBox CATENATE (TEXT {5+}\r\nHello)')).at(-1), /^c4 NO \[TRYCREATE\]/);
  const body = 'Subject: catenated\r\n\r\nHello\r\n';
  t.match((await cat.command('c5', `APPEND INBOX CATENATE (TEXT {${body.length}+}\r\n${body} URL "/INBOX;UIDVALIDITY=${seeded.uidValidity}/;UID=${seeded.uid}/;SECTION=HEADER")`)).at(-1), /^c5 OK/);

  // Submission: AUTH PLAIN (initial response), a failed AUTH PLAIN in a continuation, AUTH LOGIN.
  const s1 = await smtp();
  t.equal((await s1.command(`AUTH PLAIN ${b64(`\0alice\0${PASSWORD}`)}`)).code, 235);
  t.equal((await s1.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await s1.command('RCPT TO:<bob@example.org>')).code, 250);
  t.equal((await s1.command('DATA')).code, 354);
  t.match((await s1.command(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: s\r\n\r\n${MARKER} submitted\r\n.`, 30_000)).text, /^250 /);
  t.equal((await s1.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await s1.command('RCPT TO:<bob@example.org>')).code, 250);
  t.match((await s1.command(`BURL ${issued[1]} LAST`, 30_000)).text, /^250 /, 'BURL with the token');
  t.equal((await s1.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await s1.command('RCPT TO:<bob@example.org>')).code, 250);
  t.match((await s1.command(`BURL ${tampered} LAST`, 30_000)).text, /^554 /, 'BURL with a wrong token is refused');
  const s2 = await smtp();
  t.equal((await s2.command('AUTH PLAIN')).code, 334);
  t.equal((await s2.command(b64(`\0alice\0${WRONG}`))).code, 535);
  t.equal((await s2.command('AUTH LOGIN')).code, 334);
  t.equal((await s2.command(b64('bob'))).code, 334);
  t.equal((await s2.command(b64(PASSWORD))).code, 235);
  await s1.command('QUIT');
  await s2.command('QUIT');
  for (const c of [alice, bob, carol, cat]) await c.command('o', 'LOGOUT');

  t.equal(await gw.stop(), 0);
  const text = readFileSync(gw.logFile, 'utf8');
  const lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as LogLine);

  // The workload was logged at all (a silent log would pass the search below).
  const messages = new Set(lines.map((l) => l.msg));
  for (const m of ['logged in', 'login failed', 'authenticated', 'authentication failed', 'command', 'URLFETCH refused', 'BURL refused', 'message relayed']) {
    t.ok(messages.has(m), `"${m}" was logged`);
  }
  for (const command of ['LOGIN', 'AUTHENTICATE', 'GENURLAUTH', 'URLFETCH', 'UID FETCH', 'LOGOUT', 'AUTH', 'BURL', 'DATA']) {
    t.ok(lines.some((l) => l.msg === 'command' && l.command === command), `command ${command} is logged`);
  }
  t.ok(lines.some((l) => l.msg === 'command' && l.command === 'LOGIN' && l.result === 'no'), 'with its outcome');
  const catSession = lines.find((l) => l.msg === 'CATENATE refused')?.session;
  t.ok(catSession, 'CATENATE refusals are logged with the session');
  const appends = lines.filter((l) => l.session === catSession && l.msg === 'command' && l.command === 'APPEND');
  t.same(appends.map((l) => l.result), ['no', 'no', 'no', 'no', 'ok'], 'every CATENATE outcome has its command line: BADURL, TOOBIG twice, TRYCREATE, OK');
  t.ok(appends.every((l) => typeof l.ms === 'number'), 'each with its duration');

  for (const [what, secret] of Object.entries(secrets)) {
    t.notOk(text.includes(secret), `no ${what} in the log`);
  }

  // Session lines carry the session id; once a session has a user, every later line says who.
  for (const l of lines) {
    if (l.command !== undefined || l.remote !== undefined) t.ok(l.session, `"${l.msg}" carries a session id`);
  }
  const userOf = new Map<string, string>();
  let checked = 0;
  for (const l of lines) {
    if (l.session === undefined) continue;
    const known = userOf.get(l.session);
    if (known !== undefined) {
      checked++;
      if (l.user !== known) t.fail(`"${l.msg}" of session ${l.session} after login lacks user ${known}`);
    } else if ((l.msg === 'logged in' || l.msg === 'authenticated') && typeof l.user === 'string') {
      userOf.set(l.session, l.user);
    }
  }
  t.equal(userOf.size, 6, 'six sessions logged in');
  t.ok(checked > 10, `${checked} lines after a login all name the user`);
});

