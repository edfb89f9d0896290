/**
 * Starts a sandboxed legacy Dovecot (+ Postfix) through scripts/legacy-stack.sh for one
 * test file, in its own temp directory on its own loopback ports.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { ImapFlow } from 'imapflow';
import { repoRoot } from './gateway.js';

const run = promisify(execFile);
const script = path.join(repoRoot, 'scripts', 'legacy-stack.sh');

export interface LegacyStack {
  imapHost: string;
  imapPort: number;
  lmtpPort: number;
  smtpPort: number;
  mode: 'legacy' | 'full';
  dir: string;
  users: Record<string, string>;
  master: { user: string; password: string };
  stop(): Promise<void>;
  stopDovecot(): Promise<void>;
  startDovecot(): Promise<void>;
  /** Sends a message through the stack's Postfix (SMTP on loopback, no TLS). */
  deliver(opts: { from: string; to: string | string[]; raw: string | Buffer }): Promise<void>;
  /** Waits until user's mailbox holds at least n messages (read with the master login). */
  waitForMessageCount(user: string, mailbox: string, n: number, timeoutMs?: number): Promise<number>;
}

export async function startLegacyStack(opts: { mode?: 'legacy' | 'full'; postfix?: boolean } = {}): Promise<LegacyStack> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-stack-'));
  const args = ['start', '--dir', dir, '--mode', opts.mode ?? 'legacy', ...(opts.postfix === false ? ['--no-postfix'] : [])];
  const { stdout } = await run('bash', [script, ...args], { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  const info = JSON.parse(stdout.trim().split('\n').at(-1)!) as Omit<LegacyStack, 'stop' | 'stopDovecot' | 'startDovecot' | 'deliver' | 'waitForMessageCount'>;
  const stack: LegacyStack = {
    ...info,
    async stop() {
      await run('bash', [script, 'stop', '--dir', dir], { timeout: 60_000 });
    },
    async stopDovecot() {
      await run('bash', [script, 'stop-dovecot', '--dir', dir], { timeout: 60_000 });
    },
    async startDovecot() {
      await run('bash', [script, 'start-dovecot', '--dir', dir], { timeout: 60_000 });
    },
    async deliver({ from, to, raw }) {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: info.smtpPort, secure: false, ignoreTLS: true });
      try {
        await transport.sendMail({ envelope: { from, to }, raw });
      } finally {
        transport.close();
      }
    },
    async waitForMessageCount(user, mailbox, n, timeoutMs = 15_000) {
      const client = new ImapFlow({
        host: info.imapHost,
        port: info.imapPort,
        secure: false,
        auth: { user: info.master.user, pass: info.master.password, authzid: user },
        logger: false,
        disableAutoIdle: true,
      });
      await client.connect();
      const deadline = Date.now() + timeoutMs;
      try {
        while (true) {
          const st = await client.status(mailbox, { messages: true });
          const count = st ? (st.messages ?? 0) : 0;
          if (count >= n || Date.now() > deadline) return count;
          await new Promise((r) => setTimeout(r, 200));
        }
      } finally {
        await client.logout();
      }
    },
  };
  return stack;
}
