/**
 * Starts the built gateway (dist/main.js) as a child process in front of a legacy stack,
 * with its own config and dataDir in a temp directory, and tells the test its ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

/** The checkout's root: the nearest directory above this file with a package.json (also from dist-bench/). */
export const repoRoot = ((): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();

export interface UpstreamLike {
  imapHost: string;
  imapPort: number;
  smtpPort?: number;
  master?: { user: string; password: string };
}

export interface RunningGateway {
  proc: ChildProcess;
  pid: number;
  dir: string;
  configFile: string;
  /** Everything the process wrote to stdout and stderr, as it arrives (DIR/gateway.log). */
  logFile: string;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** STARTTLS-capable plain listener. */
  imapPort: number;
  /** Implicit TLS listener. */
  imapsPort: number;
  /** Submission with STARTTLS (587 style), when the upstream has an MTA. */
  submissionPort: number;
  /** Submission with implicit TLS (465 style). */
  submissionsPort: number;
  metricsPort: number;
  /** Every line the gateway logged (pino JSON), for assertions and for debugging failures. */
  logs: string[];
  rssKiB(): number;
  metrics(): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface GatewayOptions {
  /** Deep-merged over the generated config. */
  config?: Record<string, unknown>;
  /** Also listen on a plain port where LOGIN without TLS is allowed from loopback. */
  plaintext?: boolean;
  nodeArgs?: string[];
  /** Another build's entry point instead of this tree's dist/main.js (the benchmarks compare builds). */
  main?: string;
  /** How long to wait for "lemonade-gateway ready" (default 20 s; `workers: N` starts N + 1 processes). */
  startTimeoutMs?: number;
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)
        ? merge(b as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/**
 * Gateway directories (config, dataDir) are removed when the test process exits, not at
 * stop(): a test may start a second gateway on the first one's dataDir (restarts).
 * LEMONADE_KEEP_GATEWAY=1 keeps them for a look.
 */
const dirsToRemove = new Set<string>();
function removeAtExit(dir: string): void {
  if (process.env.LEMONADE_KEEP_GATEWAY) return;
  if (dirsToRemove.size === 0) {
    process.on('exit', () => {
      for (const d of dirsToRemove) rmSync(d, { recursive: true, force: true });
    });
  }
  dirsToRemove.add(dir);
}

/** Removes a stopped gateway's directory now (benchmarks, between targets), unless LEMONADE_KEEP_GATEWAY=1. */
export function removeGatewayDir(gw: Pick<RunningGateway, 'dir'>): void {
  if (process.env.LEMONADE_KEEP_GATEWAY) return;
  rmSync(gw.dir, { recursive: true, force: true });
}

export async function startGateway(upstream: UpstreamLike, opts: GatewayOptions = {}): Promise<RunningGateway> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-gw-'));
  removeAtExit(dir);
  const config = merge(
    {
      hostname: 'localhost',
      dataDir: path.join(dir, 'data'),
      imap: {
        listen: [
          { host: '127.0.0.1', port: 0, tls: 'starttls', allowPlaintextAuth: opts.plaintext ?? false },
          { host: '127.0.0.1', port: 0, tls: 'implicit' },
        ],
        upstream: { host: upstream.imapHost, port: upstream.imapPort, tls: 'none', connectTimeoutMs: 3000 },
        ...(upstream.master ? { master: upstream.master } : {}),
      },
      ...(upstream.smtpPort
        ? {
            submission: {
              listen: [
                { host: '127.0.0.1', port: 0, tls: 'starttls', allowPlaintextAuth: opts.plaintext ?? false },
                { host: '127.0.0.1', port: 0, tls: 'implicit' },
              ],
              upstream: { host: '127.0.0.1', port: upstream.smtpPort, tls: 'none', connectTimeoutMs: 3000 },
            },
          }
        : {}),
      metrics: { host: '127.0.0.1', port: 0 },
      // Short, so stop() returns soon even with a client in mid-command (well inside its SIGKILL timer).
      shutdown: { graceSeconds: 5 },
      log: { level: 'debug' },
    },
    opts.config ?? {},
  );
  const configFile = path.join(dir, 'config.yaml');
  writeFileSync(configFile, stringify(config));
  // Run the entry point as deployed (its shebang carries the runtime flags), unless a test adds node flags.
  const main = opts.main ?? path.join(repoRoot, 'dist', 'main.js');
  const [cmd, args] = opts.nodeArgs
    ? [process.execPath, [...opts.nodeArgs, main, '--config', configFile]]
    : [main, ['--config', configFile]];
  const proc = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const logFile = path.join(dir, 'gateway.log');
  writeFileSync(logFile, '');
  // scripts/test.sh collects every gateway's log of the run here and searches them for secrets (scripts/check-logs.mjs).
  const runLog = process.env.LEMONADE_LOG_DIR ? path.join(process.env.LEMONADE_LOG_DIR, `${path.basename(dir)}.log`) : undefined;
  const keep = (chunk: Buffer) => {
    appendFileSync(logFile, chunk);
    if (runLog) appendFileSync(runLog, chunk);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  let buffered = '';
  type Bound = Array<{ port: number; tls: string }>;
  const ready = new Promise<{ imap: Bound; submission?: Bound; metrics: { port: number } }>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Never leave a half-started gateway behind.
      proc.kill('SIGKILL');
      reject(new Error(`gateway did not start:\n${logs.join('\n')}`));
    }, opts.startTimeoutMs ?? 20_000);
    proc.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        logs.push(line);
        try {
          const rec = JSON.parse(line) as { msg?: string; imap?: Bound; submission?: Bound; metrics?: { port: number } };
          if (rec.msg === 'lemonade-gateway ready' && rec.imap && rec.metrics) {
            clearTimeout(timer);
            resolve({ imap: rec.imap, submission: rec.submission, metrics: rec.metrics });
          }
        } catch {
          // not JSON: keep it in logs
        }
      }
    });
    proc.stderr!.on('data', (chunk: Buffer) => logs.push(chunk.toString('utf8')));
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${logs.join('\n')}`));
    });
  });
  const info = await ready;
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const plainPort = info.imap.find((l) => l.tls === 'starttls')!.port;
  const tlsPort = info.imap.find((l) => l.tls === 'implicit')!.port;
  return {
    proc,
    pid: proc.pid!,
    dir,
    configFile,
    logFile,
    exited,
    imapPort: plainPort,
    imapsPort: tlsPort,
    submissionPort: info.submission?.find((l) => l.tls === 'starttls')?.port ?? 0,
    submissionsPort: info.submission?.find((l) => l.tls === 'implicit')?.port ?? 0,
    metricsPort: info.metrics.port,
    logs,
    rssKiB() {
      const status = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    },
    async metrics() {
      const res = await fetch(`http://127.0.0.1:${info.metrics.port}/metrics`);
      return res.text();
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A loopback port nothing listens on (bound and released): for an upstream that refuses connections. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** The value of one sample of a metric in a Prometheus text exposition (sum over matching label sets). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
  }
  return total;
}

/**
 * The process's TCP connections to a loopback port that are established now, counted by
 * the kernel (/proc/PID/fd socket inodes matched in /proc/net/tcp): what a gauge of open
 * upstream connections is checked against.
 */
export function establishedTo(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed while listing
    }
  }
  let count = 0;
  // Columns: sl local_address rem_address st ... inode (ESTABLISHED is st 01).
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 10) continue;
    if (cols[3] === '01' && parseInt(cols[2]!.split(':')[1]!, 16) === port && inodes.has(cols[9]!)) count++;
  }
  return count;
}
