/** The plain TCP relay every benchmark compares against (socat), and the port helpers it needs. */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { LegacyStack } from '../test/helpers/stack.js';

/** A free TCP port on 127.0.0.1 (closed again; a tiny race with other processes is accepted). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on 127.0.0.1:port (10 s at most). */
export async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

/** socat relaying a free loopback port to upstreamPort, the floor for any proxy. */
export async function startSocat(upstreamPort: number): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn('socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `TCP:127.0.0.1:${upstreamPort}`], { stdio: 'ignore' });
  await waitForPort(port);
  return { port, proc };
}

/** Files in the sandbox Postfix's queue (accepted and not yet delivered, or deferred). */
export function queuedFiles(stack: LegacyStack): number {
  let n = 0;
  const walk = (dir: string) => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e);
      try {
        if (statSync(p).isDirectory()) walk(p);
        else n++;
      } catch {
        // delivered and removed while we looked
      }
    }
  };
  for (const q of ['maildrop', 'incoming', 'active', 'deferred', 'hold']) walk(path.join(stack.dir, 'postfix', 'queue', q));
  return n;
}

/** Waits until Postfix has delivered everything (at most timeoutMs); returns how long it took in ms. */
export async function drainQueue(stack: LegacyStack, timeoutMs: number): Promise<number> {
  const started = performance.now();
  while (queuedFiles(stack) > 0 && performance.now() - started < timeoutMs) await new Promise((r) => setTimeout(r, 100));
  return performance.now() - started;
}

/**
 * A message of exactly `bytes` octets: a few headers, then 76-character lines as in a
 * base64 attachment. No line starts with ".", so DATA needs no dot-stuffing.
 */
export function benchMessage(bytes: number, headers: { from: string; to: string; subject: string; messageId: string }): Buffer {
  const header = [
    `From: ${headers.from}`,
    `To: ${headers.to}`,
    `Subject: ${headers.subject}`,
    `Message-ID: <${headers.messageId}>`,
    'Date: Sun, 29 Nov 2026 00:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    '',
  ].join('\r\n');
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let body = '';
  let n = 0;
  while (header.length + body.length < bytes) {
    let line = '';
    for (let i = 0; i < 76; i++) line += alphabet[(n++ * 7 + i) % 64];
    body += `${line}\r\n`;
  }
  // Trim to the exact size, still ending in CRLF.
  const buf = Buffer.from((header + body).slice(0, bytes - 2) + '\r\n', 'latin1');
  if (buf.length !== bytes) throw new Error(`message is ${buf.length} bytes, not ${bytes}`);
  return buf;
}

/**
 * The gateway config of the submission benchmarks: its plain listener with AUTH allowed on
 * loopback, an implicit-TLS one, any sender, and info logs (the harness waits for the
 * "ready" line, logged at info). `extra` adds submission options (limits, relay pool).
 */
export function benchSubmissionConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    log: { level: 'info' },
    submission: {
      listen: [
        { host: '127.0.0.1', port: 0, tls: 'starttls', allowPlaintextAuth: true },
        { host: '127.0.0.1', port: 0, tls: 'implicit' },
      ],
      senderPolicy: { mode: 'any' },
      ...extra,
    },
  };
}
