/**
 * A sandboxed legacy mail stack for one test file (or benchmark): a real Dovecot (IMAP +
 * LMTP) and, unless `postfix: false`, a real Postfix delivering example.org / example.net
 * to it, started by scripts/legacy-stack.sh in a temp directory on loopback ports of its own.
 *
 *   const stack = await startLegacyStack();            // legacy capabilities, with Postfix
 *   t.teardown(() => stack.stop());
 *   await stack.deliver({ from: 'bob@example.org', to: 'alice@example.org', raw });
 *   await stack.waitForMessageCount('alice', 'INBOX', 1);
 *
 * Users alice, bob, carol (password "password"); master user gateway / masterpw
 * ("alice*gateway", or SASL PLAIN with authzid). If the test process dies without stop(),
 * the script's watcher stops the stack within a second or so.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';

/** The checkout's root: the nearest directory above this file with a package.json (also when compiled to dist-bench/). */
const repoRoot = ((): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
const script = path.join(repoRoot, 'scripts', 'legacy-stack.sh');

/** What scripts/legacy-stack.sh writes to DIR/stack.json. */
export interface LegacyStackInfo {
  imapHost: string;
  imapPort: number;
  lmtpPort: number;
  /** Postfix's SMTP port; 0 when started with `postfix: false`. */
  smtpPort: number;
  mode: 'legacy' | 'full';
  dovecotPidFile: string;
  /** PID of the Postfix master; 0 without Postfix. */
  postfixPid: number;
  users: Record<string, string>;
  master: { user: string; password: string };
  /** Mail domains Postfix accepts (everything else: 554 5.7.1 relay access denied). */
  domains: string[];
  /** The sandbox directory (logs: dovecot/dovecot.log, postfix/postfix.log). */
  dir: string;
}

export interface LegacyStack extends LegacyStackInfo {
  /** Stops Dovecot and Postfix and removes the sandbox (kept when LEMONADE_KEEP_STACK=1). Idempotent. */
  stop(): Promise<void>;
  /** Stops only Dovecot (open IMAP sessions are cut); mail and ports stay. */
  stopDovecot(): Promise<void>;
  /** Starts Dovecot again on the same ports, resolving once it greets. */
  startDovecot(): Promise<void>;
  /** Stops only Postfix (its queue stays); the SMTP port then refuses connections. */
  stopPostfix(): Promise<void>;
  /** Starts Postfix again on the same port, resolving once it greets. */
  startPostfix(): Promise<void>;
  /** Sends a message through the stack's Postfix (plain SMTP on loopback); resolves once Postfix accepted it. */
  deliver(opts: { from: string; to: string | string[]; raw: string | Buffer }): Promise<void>;
  /**
   * Polls STATUS (logged in as `user` through the master user) until `mailbox` holds at least
   * `n` messages or `timeoutMs` passed; returns the last count either way.
   */
  waitForMessageCount(user: string, mailbox: string, n: number, timeoutMs?: number): Promise<number>;
  /** Appends a message to user's mailbox directly upstream; its UID and the mailbox's UIDVALIDITY. */
  append(user: string, mailbox: string, raw: Buffer): Promise<{ uid: number; uidValidity: number }>;
  /** Messages in user's INBOX now. */
  messageCount(user: string): Promise<number>;
  /** The newest message of user's INBOX, raw, once the INBOX holds n messages (throws if it never does). */
  newestMessage(user: string, n: number, timeoutMs?: number): Promise<Buffer>;
}

export interface LegacyStackOptions {
  /** 'legacy' (default): IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID IDLE NAMESPACE only; 'full': Dovecot's own list. */
  mode?: 'legacy' | 'full';
  /** Start Postfix too (default true). */
  postfix?: boolean;
}

function runScript(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('bash', [script, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const how = err.killed ? `timed out after ${timeoutMs} ms` : `exit ${String(err.code)}`;
        reject(new Error(`legacy-stack.sh ${args.join(' ')} failed (${how}):\n${stderr.trim()}`));
        return;
      }
      resolve(stdout);
    });
  });
}

function parseInfo(stdout: string): LegacyStackInfo {
  const last = stdout.trim().split('\n').at(-1) ?? '';
  let info: LegacyStackInfo;
  try {
    info = JSON.parse(last) as LegacyStackInfo;
  } catch {
    throw new Error(`legacy-stack.sh start printed no JSON as its last line:\n${stdout}`);
  }
  if (typeof info.imapPort !== 'number' || typeof info.dir !== 'string') {
    throw new Error(`legacy-stack.sh start printed unexpected JSON: ${last}`);
  }
  return info;
}

export async function startLegacyStack(opts: LegacyStackOptions = {}): Promise<LegacyStack> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-stack-'));
  const args = ['start', '--dir', dir, '--mode', opts.mode ?? 'legacy', '--owner-pid', String(process.pid)];
  if (opts.postfix === false) args.push('--no-postfix');
  const info = parseInfo(await runScript(args, 120_000));

  let stopping: Promise<void> | undefined;
  const stack: LegacyStack = {
    ...info,
    stop() {
      stopping ??= (async () => {
        await runScript(['stop', '--dir', info.dir], 60_000);
        if (!process.env.LEMONADE_KEEP_STACK) rmSync(info.dir, { recursive: true, force: true });
      })();
      return stopping;
    },
    async stopDovecot() {
      await runScript(['stop-dovecot', '--dir', info.dir], 60_000);
    },
    async startDovecot() {
      await runScript(['start-dovecot', '--dir', info.dir], 60_000);
    },
    async stopPostfix() {
      await runScript(['stop-postfix', '--dir', info.dir], 60_000);
    },
    async startPostfix() {
      await runScript(['start-postfix', '--dir', info.dir], 60_000);
    },
    async deliver({ from, to, raw }) {
      if (!info.smtpPort) throw new Error('this legacy stack was started without Postfix');
      const transport = nodemailer.createTransport({
        host: '127.0.0.1',
        port: info.smtpPort,
        secure: false,
        ignoreTLS: true,
        connectionTimeout: 10_000,
      });
      try {
        await transport.sendMail({ envelope: { from, to }, raw });
      } finally {
        transport.close();
      }
    },
    async waitForMessageCount(user, mailbox, n, timeoutMs = 15_000) {
      const client = await masterClient(info, user);
      const deadline = Date.now() + timeoutMs;
      try {
        for (;;) {
          const st = await client.status(mailbox, { messages: true });
          if (!st) throw new Error(`STATUS ${mailbox} failed for ${user}`);
          const count = st.messages ?? 0;
          if (count >= n || Date.now() >= deadline) return count;
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await client.logout().catch(() => client.close());
      }
    },
    async append(user, mailbox, raw) {
      const client = await masterClient(info, user);
      try {
        await client.mailboxCreate(mailbox).catch(() => undefined);
        await client.append(mailbox, raw);
        const box = await client.mailboxOpen(mailbox);
        return { uid: Number(box.uidNext) - 1, uidValidity: Number(box.uidValidity) };
      } finally {
        await client.logout().catch(() => client.close());
      }
    },
    messageCount(user) {
      return stack.waitForMessageCount(user, 'INBOX', 0, 0);
    },
    async newestMessage(user, n, timeoutMs = 20_000) {
      const count = await stack.waitForMessageCount(user, 'INBOX', n, timeoutMs);
      if (count < n) throw new Error(`${user}'s INBOX holds ${count} messages, not ${n}`);
      const client = await masterClient(info, user);
      try {
        await client.mailboxOpen('INBOX');
        const msg = await client.fetchOne('*', { source: true });
        if (!msg || !msg.source) throw new Error(`no newest message in ${user}'s INBOX`);
        return msg.source;
      } finally {
        await client.logout().catch(() => client.close());
      }
    },
  };
  return stack;
}

/** An IMAP session as user, logged in through the master user (SASL PLAIN authzid). */
export async function masterClient(info: LegacyStackInfo, user: string): Promise<ImapFlow> {
  const client = new ImapFlow({
    host: info.imapHost,
    port: info.imapPort,
    secure: false,
    auth: { user: info.master.user, pass: info.master.password, authzid: user },
    logger: false,
    disableAutoIdle: true,
  });
  // Errors surface through the awaited calls; an unhandled 'error' event would crash the test.
  client.on('error', () => {});
  await client.connect();
  return client;
}

/**
 * Writes n messages straight into a Maildir folder of the sandbox ('' is the INBOX);
 * Dovecot indexes them at the next SELECT/EXAMINE. APPEND costs an fsync each upstream
 * (~10 ms, 8 minutes for 50,000). Maildir flags: every third message \Seen, every seventh
 * \Flagged too. Needs root (the files belong to the sandbox's mail user).
 */
export function bulkMaildir(info: LegacyStackInfo, user: string, folder: string, n: number, message: (i: number) => Buffer): void {
  const mail = path.join(info.dir, 'mail', user, 'Maildir', folder === '' ? '' : `.${folder}`);
  const uid = Number(execFileSync('id', ['-u', 'lemonademail']).toString());
  const gid = Number(execFileSync('id', ['-g', 'lemonademail']).toString());
  for (const d of ['', 'cur', 'new', 'tmp']) {
    mkdirSync(path.join(mail, d), { recursive: true, mode: 0o700 });
    chownSync(path.join(mail, d), uid, gid);
  }
  // Directories created on the way (the user's, Maildir) belong to the mail user too.
  for (let d = path.dirname(mail); d.length > path.join(info.dir, 'mail').length; d = path.dirname(d)) chownSync(d, uid, gid);
  if (folder !== '') {
    writeFileSync(path.join(mail, 'maildirfolder'), '');
    chownSync(path.join(mail, 'maildirfolder'), uid, gid);
  }
  const base = Math.floor(Date.now() / 1000) - n;
  for (let i = 1; i <= n; i++) {
    const raw = message(i);
    const flags = i % 7 === 0 ? 'FS' : i % 3 === 0 ? 'S' : '';
    const file = path.join(mail, 'cur', `${base + i}.M${i}P1.lemonade,S=${raw.length}:2,${flags}`);
    writeFileSync(file, raw, { mode: 0o600 });
    chownSync(file, uid, gid);
  }
}

/** The message without the trace fields Postfix and Dovecot prepend (RFC 5321 §4.4), and the gateway's. */
export function withoutTrace(raw: Buffer): Buffer {
  let pos = 0;
  while (true) {
    const rest = raw.subarray(pos, pos + 20).toString('latin1');
    if (!/^(Return-Path|Delivered-To|Received|X-Original-To):/i.test(rest)) return raw.subarray(pos);
    let end = raw.indexOf('\r\n', pos);
    while (raw[end + 2] === 0x20 || raw[end + 2] === 0x09) end = raw.indexOf('\r\n', end + 2);
    pos = end + 2;
  }
}

/** How many times each subject starting with prefix is in user's INBOX (read as the master user, at Dovecot directly). */
export async function subjectCounts(stack: LegacyStackInfo, user: string, prefix: string): Promise<Map<string, number>> {
  const c = await masterClient(stack, user);
  const counts = new Map<string, number>();
  const lock = await c.getMailboxLock('INBOX');
  try {
    const uids = await c.search({ subject: prefix }, { uid: true });
    if (uids && uids.length > 0) {
      for await (const m of c.fetch(uids, { envelope: true }, { uid: true })) {
        const s = m.envelope?.subject ?? '';
        if (s.startsWith(prefix)) counts.set(s, (counts.get(s) ?? 0) + 1);
      }
    }
  } finally {
    lock.release();
    await c.logout();
  }
  return counts;
}
