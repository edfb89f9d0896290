/**
 * The legacy stack the other tests stand on (scripts/legacy-stack.sh via helpers/stack.ts):
 * a legacy-mode and a full-mode sandbox side by side, their capability lists on the wire,
 * logins (plain, master user by separator and by SASL authzid), delivery through Postfix to
 * Dovecot, Postfix's refusals, stopping and restarting Dovecot alone, loopback-only
 * listeners, and that nothing is left running afterwards.
 */
import t from 'tap';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';

const NOT_IN_LEGACY = ['CATENATE', 'URLAUTH', 'CONDSTORE', 'QRESYNC', 'UIDPLUS', 'ENABLE', 'BINARY', 'MULTIAPPEND'];
const LEGACY_CAPS = ['IMAP4REV1', 'LITERAL+', 'SASL-IR', 'LOGIN-REFERRALS', 'ID', 'IDLE', 'NAMESPACE'];

let legacy: LegacyStack;
let full: LegacyStack;

t.before(async () => {
  // Two sandboxes at once, as parallel test files start them.
  const started = Date.now();
  [legacy, full] = await Promise.all([startLegacyStack(), startLegacyStack({ mode: 'full', postfix: false })]);
  t.comment(`both stacks up in ${Date.now() - started} ms`);
});
t.teardown(async () => {
  await Promise.all([legacy?.stop(), full?.stop()]);
});

/** Capability atoms (upper-cased) from a CAPABILITY response or a greeting's [CAPABILITY ...] code. */
function capsFrom(lines: string[]): Set<string> {
  for (const line of lines) {
    const m = /^\* CAPABILITY (.*)$/i.exec(line) ?? /^\* OK \[CAPABILITY ([^\]]*)\]/i.exec(line);
    if (m) return new Set(m[1]!.trim().toUpperCase().split(/\s+/));
  }
  throw new Error(`no capability list in: ${lines.join(' | ')}`);
}

function message(subject: string, body: string): string {
  return [
    'From: Bob <bob@example.org>',
    'To: Alice <alice@example.org>',
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, '')}.${Date.now()}@example.org>`,
    'Date: Sat, 28 Nov 2026 12:00:00 +0000',
    '',
    body,
    '',
  ].join('\r\n');
}

function imapClient(stack: LegacyStack, auth: { user: string; pass: string; authzid?: string }): ImapFlow {
  const client = new ImapFlow({ host: stack.imapHost, port: stack.imapPort, secure: false, auth, logger: false, disableAutoIdle: true });
  client.on('error', () => {});
  return client;
}

// ---- processes and sockets, read from /proc

interface Proc {
  pid: number;
  pgid: number;
  state: string;
  cmdline: string;
}

function processes(): Proc[] {
  const out: Proc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.push({ pid: Number(name), state: rest[0]!, pgid: Number(rest[2]), cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function readPid(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/** Every live process of a sandbox: the Dovecot and Postfix process groups, the start-fg wrapper, the owner watcher. */
function sandboxProcesses(stack: LegacyStack): Proc[] {
  const groups = new Set([readPid(stack.dovecotPidFile), stack.postfixPid].filter((p) => p > 0));
  const pids = new Set([readPid(path.join(stack.dir, 'watch.pid')), readPid(path.join(stack.dir, 'postfix', 'start-fg.pid'))].filter((p) => p > 0));
  return processes().filter((p) => p.state !== 'Z' && (groups.has(p.pgid) || pids.has(p.pid) || p.cmdline.includes(stack.dir)));
}

/** Listening TCP sockets ("addr:port", from /proc/net/tcp{,6}) held by the given processes. */
function listeners(pids: number[]): string[] {
  const inodes = new Set<string>();
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
  }
  const found = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9]!)) continue; // 0A = LISTEN
      const [hexAddr, hexPort] = f[1]!.split(':') as [string, string];
      const addr =
        hexAddr.length === 8
          ? [3, 2, 1, 0].map((i) => parseInt(hexAddr.slice(i * 2, i * 2 + 2), 16)).join('.')
          : `[${hexAddr}]`;
      found.add(`${addr}:${parseInt(hexPort, 16)}`);
    }
  }
  return [...found].sort();
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- tests

t.test('stack.json describes each sandbox', async (t) => {
  t.equal(legacy.mode, 'legacy');
  t.equal(full.mode, 'full');
  t.equal(legacy.imapHost, '127.0.0.1');
  for (const s of [legacy, full]) {
    t.ok(s.imapPort > 0 && s.lmtpPort > 0, 'ports');
    t.same(s.users, { alice: 'password', bob: 'password', carol: 'password', submit: 'password' });
    t.same(s.master, { user: 'gateway', password: 'masterpw' });
    // (JSON.stringify drops the methods)
    t.same(JSON.parse(readFileSync(path.join(s.dir, 'stack.json'), 'utf8')), JSON.parse(JSON.stringify(s)), 'stack.json matches');
    t.ok(readPid(s.dovecotPidFile) > 0, 'dovecot master.pid');
  }
  t.ok(legacy.smtpPort > 0 && legacy.postfixPid > 0, 'postfix running');
  t.equal(full.smtpPort, 0, 'no postfix: smtpPort 0');
  t.equal(full.postfixPid, 0);
  t.not(legacy.dir, full.dir);
  t.equal(new Set([legacy.imapPort, legacy.lmtpPort, legacy.smtpPort, full.imapPort, full.lmtpPort]).size, 5, 'distinct ports');
  const alternate = readFileSync('/etc/postfix/main.cf', 'utf8');
  t.match(alternate, new RegExp(`^alternate_config_directories = .*${legacy.dir}/postfix/etc`, 'm'), 'postfix config dir registered');
});

t.test('each sandbox listens on 127.0.0.1 only, on its own ports', async (t) => {
  t.same(listeners(sandboxProcesses(legacy).map((p) => p.pid)), [legacy.imapPort, legacy.lmtpPort, legacy.smtpPort].map((p) => `127.0.0.1:${p}`).sort());
  t.same(listeners(sandboxProcesses(full).map((p) => p.pid)), [full.imapPort, full.lmtpPort].map((p) => `127.0.0.1:${p}`).sort());
});

t.test('legacy Dovecot advertises the legacy list only, before and after login', async (t) => {
  const c = await RawImap.connect(legacy.imapPort);
  const greeting = capsFrom([(await c.line())!]);
  const before = capsFrom(await c.command('a1', 'CAPABILITY'));
  t.match((await c.command('a2', 'LOGIN alice password')).at(-1), /^a2 OK/);
  const after = capsFrom(await c.command('a3', 'CAPABILITY'));
  await c.command('a4', 'LOGOUT');
  c.close();
  for (const [when, caps] of [['greeting', greeting], ['pre-login', before], ['post-login', after]] as const) {
    for (const cap of NOT_IN_LEGACY) t.notOk(caps.has(cap), `${when}: no ${cap}`);
    for (const cap of LEGACY_CAPS) t.ok(caps.has(cap), `${when}: ${cap}`);
  }
  t.same([...after].sort(), [...LEGACY_CAPS].sort(), 'exactly the legacy list after login');
});

t.test('full Dovecot advertises UIDPLUS, CATENATE, URLAUTH, CONDSTORE after login', async (t) => {
  const c = await RawImap.connect(full.imapPort);
  await c.line();
  t.match((await c.command('a1', 'LOGIN bob password')).at(-1), /^a1 OK/);
  const caps = capsFrom(await c.command('a2', 'CAPABILITY'));
  await c.command('a3', 'LOGOUT');
  c.close();
  for (const cap of ['UIDPLUS', 'CATENATE', 'URLAUTH', 'CONDSTORE', 'QRESYNC', 'ENABLE']) t.ok(caps.has(cap), cap);
});

t.test('alice logs in with imapflow; special-use folders exist and are subscribed', async (t) => {
  const client = imapClient(legacy, { user: 'alice', pass: 'password' });
  await client.connect();
  const list = await client.list();
  const byUse = new Map(list.filter((m) => m.specialUse).map((m) => [m.specialUse, m]));
  for (const use of ['\\Sent', '\\Drafts', '\\Trash', '\\Junk']) {
    t.ok(byUse.get(use)?.subscribed, `${use} subscribed`);
  }
  t.ok(list.some((m) => m.path === 'INBOX'));
  await client.logout();
  const wrong = imapClient(legacy, { user: 'alice', pass: 'nope' });
  await t.rejects(wrong.connect(), 'wrong password refused');
  wrong.close();
});

t.test('a message sent to Postfix arrives in INBOX over LMTP', async (t) => {
  const before = await legacy.waitForMessageCount('alice', 'INBOX', 0, 0);
  const subject = `through postfix ${Date.now()}`;
  const sent = Date.now();
  await legacy.deliver({ from: 'bob@example.org', to: 'alice@example.org', raw: message(subject, 'hello alice') });
  const count = await legacy.waitForMessageCount('alice', 'INBOX', before + 1, 5_000);
  t.equal(count, before + 1, 'delivered');
  t.comment(`delivered in ${Date.now() - sent} ms`);

  const client = imapClient(legacy, { user: 'alice', pass: 'password' });
  await client.connect();
  const lock = await client.getMailboxLock('INBOX');
  try {
    const msg = await client.fetchOne('*', { envelope: true });
    t.equal(msg && msg.envelope?.subject, subject);
  } finally {
    lock.release();
  }
  await client.logout();

  // Plus-addressing and the second domain land in the same mailbox.
  const bobBefore = await legacy.waitForMessageCount('bob', 'INBOX', 0, 0);
  await legacy.deliver({ from: 'alice@example.org', to: ['bob+tag@example.net', 'bob@example.org'], raw: message('two rcpts', 'x') });
  t.equal(await legacy.waitForMessageCount('bob', 'INBOX', bobBefore + 2, 5_000), bobBefore + 2, 'bob+tag@example.net and bob@example.org');
});

t.test('Postfix refuses unknown users and other domains, offers no AUTH/BURL', async (t) => {
  const c = await RawSmtp.connect(legacy.smtpPort);
  t.equal((await c.reply())?.code, 220);
  const ehlo = await c.command('EHLO client.example.org');
  t.equal(ehlo.code, 250);
  t.match(ehlo.text, /PIPELINING/);
  t.match(ehlo.text, /CHUNKING/);
  t.notMatch(ehlo.text, /AUTH|BURL|FUTURERELEASE|STARTTLS/);
  t.equal((await c.command('MAIL FROM:<bob@example.org>')).code, 250);
  t.match((await c.command('RCPT TO:<dave@example.org>')).text, /^550 5\.1\.1/, 'unknown user');
  t.match((await c.command('RCPT TO:<x@elsewhere.invalid>')).text, /^554 5\.7\.1/, 'relay denied');
  t.equal((await c.command('RCPT TO:<carol@example.org>')).code, 250, 'known user');
  await c.command('QUIT');
  c.close();
});

t.test('the master user logs in as alice, by separator and by SASL authzid', async (t) => {
  const c = await RawImap.connect(legacy.imapPort);
  await c.line();
  t.match((await c.command('m1', 'LOGIN alice*gateway masterpw')).at(-1), /^m1 OK/, 'LOGIN alice*gateway');
  const sel = await c.command('m2', 'SELECT INBOX');
  t.match(sel.at(-1), /^m2 OK/);
  const exists = Number(sel.map((l) => /^\* (\d+) EXISTS/.exec(l)?.[1]).find(Boolean));
  t.ok(exists >= 1, 'sees alice’s mail');
  t.match((await c.command('m3', 'LOGOUT')).at(-1), /^m3 OK/);
  c.close();

  const client = imapClient(legacy, { user: 'gateway', pass: 'masterpw', authzid: 'alice' });
  await client.connect();
  const st = await client.status('INBOX', { messages: true });
  t.equal(st && st.messages, exists, 'SASL PLAIN authzid=alice sees the same INBOX');
  await client.logout();

  const bad = await RawImap.connect(legacy.imapPort);
  await bad.line();
  t.match((await bad.command('m4', 'LOGIN alice*gateway wrong')).at(-1), /^m4 NO/, 'wrong master password');
  t.match((await bad.command('m5', 'LOGIN dave*gateway masterpw')).at(-1), /^m5 NO/, 'no such user');
  bad.close();
});

t.test('Dovecot alone can be stopped and started again on the same port', async (t) => {
  const c = await RawImap.connect(legacy.imapPort);
  await c.line();
  await c.command('s1', 'LOGIN carol password');
  const oldMaster = readPid(legacy.dovecotPidFile);
  await legacy.stopDovecot();
  const last = await c.closedAfter(5_000);
  t.ok(last.every((l) => l.startsWith('* BYE')), `open session cut (${last.join(' | ') || 'no BYE'})`);
  await t.rejects(RawImap.connect(legacy.imapPort), 'port closed');
  t.equal(readPid(path.join(legacy.dir, 'postfix', 'queue', 'pid', 'master.pid')), legacy.postfixPid, 'postfix still running');
  t.ok(readPid(full.dovecotPidFile) > 0, 'the other sandbox is untouched');

  // Mail accepted meanwhile is queued and delivered once Dovecot is back.
  await legacy.deliver({ from: 'bob@example.org', to: 'carol@example.org', raw: message('while down', 'queued') });

  await legacy.startDovecot();
  t.not(readPid(legacy.dovecotPidFile), oldMaster, 'a new master');
  const again = await RawImap.connect(legacy.imapPort);
  t.match(await again.line(), /^\* OK/, 'greets again');
  again.close();
  t.ok((await legacy.waitForMessageCount('carol', 'INBOX', 1, 15_000)) >= 1, 'queued message delivered after restart');
});

t.test('stop ends every process of the sandbox and unregisters its Postfix', async (t) => {
  for (const s of [legacy, full]) {
    const procs = sandboxProcesses(s);
    t.ok(procs.length >= 3, `${s.mode}: ${procs.length} processes while running`);
    const pids = procs.map((p) => p.pid);
    const dir = s.dir;
    const started = Date.now();
    await s.stop();
    t.comment(`${s.mode} stack stopped in ${Date.now() - started} ms`);
    await waitUntil('sandbox processes to exit', () => {
      const alive = new Set(processes().filter((p) => p.state !== 'Z').map((p) => p.pid));
      return pids.every((p) => !alive.has(p));
    });
    t.same(processes().filter((p) => p.state !== 'Z' && p.cmdline.includes(dir)), [], 'nothing mentions the sandbox');
    t.notMatch(readFileSync('/etc/postfix/main.cf', 'utf8'), dir, 'main.cf no longer lists it');
    await t.rejects(RawImap.connect(s.imapPort), 'IMAP port closed');
  }
  await legacy.stop(); // idempotent
});
