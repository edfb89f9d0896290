/**
 * Issue 2 acceptance: real clients (imapflow, Python imaplib, curl) through the gateway's
 * TLS listener give the same results as straight to the legacy Dovecot, IDLE sees a
 * Postfix delivery, STARTTLS works and plaintext LOGIN before it is refused.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

const run = promisify(execFile);

let stack: LegacyStack;
let gw: RunningGateway;

t.before(async () => {
  stack = await startLegacyStack({ mode: 'legacy', postfix: true });
  gw = await startGateway(stack);
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

function message(subject: string, body: string): string {
  return [
    'From: Bob <bob@example.org>',
    'To: Alice <alice@example.org>',
    `Subject: ${subject}`,
    'Message-ID: <' + subject.replace(/\W/g, '') + '@example.org>',
    'Date: Sat, 28 Nov 2026 12:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    body,
    '',
  ].join('\r\n');
}

interface Target {
  host: string;
  port: number;
  secure: boolean;
  user: string;
}

/** One fixed imapflow workload; returns what it saw, with values that legitimately differ (UIDVALIDITY) left out. */
async function workload(target: Target): Promise<Record<string, unknown>> {
  const client = new ImapFlow({
    host: target.host,
    port: target.port,
    secure: target.secure,
    auth: { user: target.user, pass: 'password' },
    tls: { rejectUnauthorized: false },
    logger: false,
    disableAutoIdle: true,
  });
  await client.connect();
  const out: Record<string, unknown> = {};
  try {
    await client.mailboxCreate('Work');
    out.list = (await client.list()).map((m) => `${m.path}|${[...(m.specialUse ? [m.specialUse] : [])].join(',')}`).sort();
    await client.mailboxOpen('INBOX');
    for (let i = 1; i <= 3; i++) await client.append('INBOX', message(`hello ${i}`, `body number ${i}\r\n`.repeat(i * 50)), i === 2 ? ['\\Flagged'] : []);
    const lock = await client.getMailboxLock('INBOX');
    try {
      const headers: string[] = [];
      for await (const msg of client.fetch('1:*', { envelope: true, flags: true, uid: true })) {
        headers.push(`${msg.seq}:${msg.uid}:${msg.envelope?.subject}:${[...(msg.flags ?? [])].sort().join(',')}`);
      }
      out.headers = headers;
      const full = await client.fetchOne('2', { source: true });
      out.fullBody = full ? full.source?.toString('utf8') : null;
      await client.messageFlagsAdd('1,3', ['\\Seen']);
      out.seen = await client.search({ seen: true });
      out.flagged = await client.search({ flagged: true });
      out.textSearch = await client.search({ body: 'number 3' });
      out.copy = Boolean(await client.messageCopy('1:2', 'Work'));
      out.deleted = await client.messageDelete('3');
      out.status = await client.status('INBOX', { messages: true, unseen: true });
      out.work = await client.status('Work', { messages: true });
    } finally {
      lock.release();
    }
  } finally {
    await client.logout();
  }
  return out;
}

t.test('imapflow: the same workload direct and through the gateway gives the same results', async (t) => {
  const direct = await workload({ host: stack.imapHost, port: stack.imapPort, secure: false, user: 'bob' });
  const before = await gw.metrics();
  const through = await workload({ host: '127.0.0.1', port: gw.imapsPort, secure: true, user: 'carol' });
  t.same(through, direct, 'identical results');
  t.equal((direct.headers as string[]).length, 3);
  t.match(direct.fullBody as string, /Subject: hello 2/);
  const after = await gw.metrics();
  t.ok(
    metricValue(after, 'lemonade_sessions_total', { protocol: 'imap' }) > metricValue(before, 'lemonade_sessions_total', { protocol: 'imap' }),
    'session counter moved',
  );
  t.ok(
    metricValue(after, 'lemonade_imap_commands_total', { command: 'FETCH' }) +
      metricValue(after, 'lemonade_imap_commands_total', { command: 'UID FETCH' }) >
      metricValue(before, 'lemonade_imap_commands_total', { command: 'FETCH' }) +
        metricValue(before, 'lemonade_imap_commands_total', { command: 'UID FETCH' }),
    'command counter moved',
  );
  t.ok(metricValue(after, 'lemonade_bytes_total', { direction: 'client_out' }) > 0, 'bytes counted');
});

t.test('IDLE through the gateway sees a message Postfix delivers', async (t) => {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: gw.imapsPort,
    secure: true,
    auth: { user: 'alice', pass: 'password' },
    tls: { rejectUnauthorized: false },
    logger: false,
  });
  await client.connect();
  const box = await client.mailboxOpen('INBOX');
  const startCount = box.exists;
  const seen = new Promise<number>((resolve) => client.on('exists', (ev: { count: number }) => resolve(ev.count)));
  const idling = client.idle();
  await new Promise((r) => setTimeout(r, 300));
  await stack.deliver({ from: 'bob@example.org', to: 'alice@example.org', raw: message('idle test', 'delivered while idling\r\n') });
  const count = await Promise.race([seen, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('no EXISTS within 15 s')), 15_000))]);
  t.equal(count, startCount + 1, 'EXISTS announced the new message');
  await client.logout();
  await idling.catch(() => undefined);
});

t.test('Python imaplib over IMAP4_SSL: login, select, append with a synchronizing literal, fetch', async (t) => {
  const script = `
import imaplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL('127.0.0.1', ${gw.imapsPort}, ssl_context=ctx)
print('caps', ' '.join(m.capabilities))
m.login('alice', 'password')
typ, data = m.select('INBOX')
n = int(data[0])
msg = b'From: a@example.org\\r\\nSubject: from python\\r\\n\\r\\nhello from imaplib\\r\\n'
typ, _ = m.append('INBOX', '(\\\\Seen)', None, msg)
print('append', typ)
typ, data = m.select('INBOX')
typ, data = m.fetch(data[0].decode(), '(BODY.PEEK[])')
print('same', data[0][1] == msg)
print('logout', m.logout()[0])
`;
  const { stdout } = await run('python3', ['-c', script], { timeout: 30_000 });
  t.match(stdout, /caps IMAP4REV1/);
  t.match(stdout, /append OK/);
  t.match(stdout, /same True/);
  t.match(stdout, /logout BYE/);
});

t.test('curl imaps:// lists and fetches', async (t) => {
  const base = `imaps://127.0.0.1:${gw.imapsPort}`;
  const list = await run('curl', ['-sS', '-k', '--user', 'alice:password', `${base}/`], { timeout: 30_000 });
  t.match(list.stdout, /INBOX/);
  const fetched = await run('curl', ['-sS', '-k', '--user', 'alice:password', `${base}/INBOX;UID=1`], { timeout: 30_000 });
  t.match(fetched.stdout, /Subject:/);
});

t.test('STARTTLS on the plain listener; LOGIN before it is refused', async (t) => {
  const c = await RawImap.connect(gw.imapPort);
  const greeting = await c.line();
  t.match(greeting, /^\* OK \[CAPABILITY [^\]]*STARTTLS/);
  t.match(greeting, /LOGINDISABLED/);
  t.notMatch(greeting, /AUTH=PLAIN/);
  const refused = await c.command('a1', 'LOGIN alice password');
  t.match(refused.at(-1), /^a1 NO \[PRIVACYREQUIRED\]/);
  const auth = await c.command('a2', `AUTHENTICATE PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`);
  t.match(auth.at(-1), /^a2 NO \[PRIVACYREQUIRED\]/);
  const st = await c.command('a3', 'STARTTLS');
  t.match(st.at(-1), /^a3 OK/);
  await c.starttls();
  const caps = await c.command('a4', 'CAPABILITY');
  t.match(caps[0], /AUTH=PLAIN/);
  t.notMatch(caps[0], /STARTTLS|LOGINDISABLED/);
  const ok = await c.command('a5', 'LOGIN alice password');
  t.match(ok.at(-1), /^a5 OK \[CAPABILITY /);
  const sel = await c.command('a6', 'SELECT INBOX');
  t.match(sel.at(-1), /^a6 OK \[READ-WRITE\]/);
  const bye = await c.command('a7', 'LOGOUT');
  t.match(bye[0], /^\* BYE/);
  c.close();
});

t.test('capabilities: the upstream list plus what the gateway provides, nothing it does not', async (t) => {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('a', 'LOGIN alice password');
  const caps = (await c.command('b', 'CAPABILITY'))[0]!.split(' ').slice(2);
  for (const absent of ['MULTIAPPEND', 'BINARY', 'STARTTLS', 'LOGINDISABLED']) {
    t.notOk(caps.includes(absent), `${absent} not advertised`);
  }
  // Emulated by the gateway itself (test/urlauth.test.ts, test/catenate.test.ts).
  for (const emulated of ['URLAUTH', 'CATENATE', 'UIDPLUS', 'CONDSTORE', 'QRESYNC', 'ENABLE']) t.ok(caps.includes(emulated), `${emulated} advertised (emulated)`);
  for (const present of ['IMAP4rev1', 'LITERAL+', 'IDLE', 'NAMESPACE', 'ID']) t.ok(caps.includes(present), `${present} advertised`);
  // The legacy upstream has no ENABLE: the gateway answers it (for CONDSTORE/QRESYNC) and
  // ignores what it cannot enable (RFC 5161 §3.1) without sending ENABLE upstream.
  t.same(await c.command('c', 'ENABLE UTF8=ACCEPT'), ['* ENABLED', 'c OK ENABLE completed']);
  await c.command('d', 'SELECT INBOX');
  t.match((await c.command('e', 'UID EXPUNGE 999999')).at(-1), /^e OK/, 'UID EXPUNGE answered by the emulation');
  t.match((await c.command('f', 'NOOP')).at(-1), /^f OK/);
  c.close();
});
