/**
 * Submission throughput benchmark (issues 3 and 16). Two kinds of client, side by side in
 * one run (BENCH_CLIENT_KINDS, default both): nodemailer's pooled SMTP transport (BDAT-less
 * DATA, its own dot-stuffing) and Python's smtplib sendmail() (bench/smtplib-client.py),
 * each with one kept-open connection per client. They send 1 KB and 1 MB messages to local
 * users of the legacy stack (every accepted message is then delivered to Dovecot over
 * LMTP by Postfix, a cost all targets share) through several targets side by side:
 *   direct                  straight to the legacy Postfix (plain, no AUTH: loopback is in mynetworks)
 *   socat                   through a plain TCP relay (socat) in front of Postfix, the floor for any proxy
 *   gateway                 lemonade-gateway's plain submission listener (AUTH PLAIN allowed on loopback)
 *   gateway-tls             lemonade-gateway's implicit-TLS submission listener
 *   gateway-workers2 / gateway-workers2-tls  the same with `workers: 2` (issue 18; BENCH_WORKERS=N
 *                           for N workers, 0 or 1 leaves them out); its CPU counts the workers too
 *   gateway-ref             another build of the gateway (BENCH_GATEWAY_REF_MAIN), plain listener
 *   dovecot-submission      Dovecot's submission service relaying to the same Postfix, plain
 *   dovecot-submission-tls  the same with implicit TLS
 * Targets and sizes take turns in short slices, so drift on the machine falls on all alike;
 * after each slice the bench waits for Postfix's queue to drain and empties the INBOXes,
 * so no target pays for another's deliveries. Also reported: each relay's CPU time per
 * message (gateway, socat, Dovecot: the process and its descendants, from /proc), the
 * `workers: 1` gateway's RSS before and after, and the EHLO keywords of every target.
 *
 * Not a test: run on demand with `bash bench/run.sh smtp`; results go in bench/RESULTS.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { startLegacyStack, type LegacyStack } from '../test/helpers/stack.js';
import { removeGatewayDir, startGateway } from '../test/helpers/gateway.js';
import { RawImap } from '../test/helpers/imap-raw.js';
import { RawSmtp } from '../test/helpers/smtp-raw.js';
import { benchMessage, benchSubmissionConfig, drainQueue, freePort, startSocat, waitForPort } from './relay.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
/** Timed seconds per target and message size (split into slices). */
const SECONDS = Number(process.env.BENCH_SECONDS ?? 9);
const SLICE_SECONDS = Number(process.env.BENCH_SLICE_SECONDS ?? 3);
/** Extra node flags for the gateway (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"); they replace its shebang's. */
const GATEWAY_NODE_ARGS = process.env.BENCH_GATEWAY_NODE_ARGS?.split(/\s+/).filter(Boolean);
/**
 * A second gateway from another build (the path of its dist/main.js, e.g. a copy of dist/
 * made before a change, kept inside the repository so node_modules resolve), measured as
 * target "gateway-ref" in the same run: compares code variants under the same noise.
 */
const REF_MAIN = process.env.BENCH_GATEWAY_REF_MAIN;
/** Worker processes of the second gateway (BENCH_WORKERS, default 2; 0 or 1: no second gateway). */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
/** Only these targets (comma-separated names), e.g. for profiling one of them. */
const ONLY = process.env.BENCH_TARGETS?.split(',').filter(Boolean);
/** Which clients to run: nodemailer, smtplib (comma-separated). */
const CLIENT_KINDS = (process.env.BENCH_CLIENT_KINDS ?? 'nodemailer,smtplib').split(',').filter(Boolean) as ClientKind[];
type ClientKind = 'nodemailer' | 'smtplib';
const SMTPLIB_CLIENT = path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'bench', 'smtplib-client.py');
const USERS = ['alice', 'bob', 'carol'];
const PASSWORD = 'password';
const SENDER = 'bench@example.org';

interface Target {
  name: string;
  port: number;
  tls: boolean;
  auth: boolean;
  /** The relay's process (gateway, socat, Dovecot master): CPU of it and its descendants is tallied. */
  relayPid?: () => number;
}

interface Size {
  label: string;
  bytes: number;
}

/** BENCH_SIZES=1KB or 1MB runs only that size (e.g. for profiling). */
const SIZES: Size[] = [
  { label: '1 KB', bytes: 1024 },
  { label: '1 MB', bytes: 1024 * 1024 },
].filter((s) => !process.env.BENCH_SIZES || process.env.BENCH_SIZES.split(',').includes(s.label.replace(' ', '')));

function makeMessage(bytes: number): Buffer {
  return benchMessage(bytes, { from: SENDER, to: 'bench-recipient@example.org', subject: `submission benchmark, ${bytes} bytes`, messageId: `bench-${bytes}@example.org` });
}

interface Tally {
  latencies: number[];
  errors: number;
  seconds: number;
  /** The relay's CPU (user + system, with its descendants') in ms over this target's slices. */
  cpuMs: number;
  /** Of cpuMs, system (kernel) time. */
  sysMs: number;
  /** Minor page faults of the relay's processes over this target's slices. */
  faults: number;
  /** Time the relay's threads waited for a CPU while runnable, in ms, over this target's slices. */
  waitMs: number;
}

const newTally = (): Tally => ({ latencies: [], errors: 0, seconds: 0, cpuMs: 0, sysMs: 0, faults: 0, waitMs: 0 });

/** The PIDs of a process and all its descendants, from /proc. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const out: number[] = [];
  const visit = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) visit(c);
  };
  visit(root);
  return out;
}

/**
 * CPU time (user + system) in ms of a process and all its descendants (clock ticks are
 * 100 Hz on Linux): each live process's own time plus what its exited, reaped children
 * used (cutime/cstime of a live child count in that child's entry, not its parent's).
 * Deltas are right as long as children that exit are reaped before the interval ends
 * (socat and Dovecot's master reap at once).
 */
function treeCpuMs(root: number): { cpuMs: number; sysMs: number; faults: number } {
  let ticks = 0;
  let sys = 0;
  let faults = 0;
  for (const pid of processTree(root)) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
      // utime stime cutime cstime: fields 14-17 of stat(5), 12-15 counting from state.
      ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      sys += Number(fields[12]) + Number(fields[14]);
      // minflt cminflt: fields 10-11 (page faults served without I/O, e.g. first touches of new memory).
      faults += Number(fields[7]) + Number(fields[8]);
    } catch {
      // exited meanwhile: its time is in its parent's cutime once reaped
    }
  }
  return { cpuMs: ticks * 10, sysMs: sys * 10, faults };
}

/**
 * Time in ms that the processes of a tree spent runnable but waiting for a CPU: the second
 * field of /proc/PID/schedstat, the main thread's (the gateway's event loop; socat and
 * Dovecot's processes have one thread). Read while the session processes are alive: a
 * process that exits takes its count with it.
 */
function treeRunqueueWaitMs(root: number): number {
  let ns = 0;
  for (const pid of processTree(root)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]);
    } catch {
      // exited meanwhile
    }
  }
  return ns / 1e6;
}

function transportFor(target: Target, user: string) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port: target.port,
    secure: target.tls,
    // Plain targets stay plain (no STARTTLS), so each target is measured as named.
    ignoreTLS: !target.tls,
    tls: { rejectUnauthorized: false },
    ...(target.auth ? { auth: { user, pass: PASSWORD } } : {}),
    // One connection per client, kept open for every message of the slice.
    pool: true,
    maxConnections: 1,
    maxMessages: Infinity,
    connectionTimeout: 10_000,
    socketTimeout: 60_000,
  });
}

/** The relay's CPU and runqueue counters at the start of a timed stretch, and their tally at its end. */
function relayMeter(target: Target, tally: Tally): { start(): void; stop(): void; settle(): Promise<void> } {
  let cpuBefore: ReturnType<typeof treeCpuMs> | undefined;
  let waitBefore = 0;
  return {
    start() {
      cpuBefore = target.relayPid ? treeCpuMs(target.relayPid()) : undefined;
      waitBefore = target.relayPid ? treeRunqueueWaitMs(target.relayPid()) : 0;
    },
    stop() {
      if (target.relayPid) tally.waitMs += treeRunqueueWaitMs(target.relayPid()) - waitBefore;
    },
    /** After the clients closed: let connection-per-process relays (socat, Dovecot) finish and be reaped, then count. */
    async settle() {
      await new Promise((r) => setTimeout(r, 300));
      if (target.relayPid && cpuBefore) {
        const after = treeCpuMs(target.relayPid());
        tally.cpuMs += after.cpuMs - cpuBefore.cpuMs;
        tally.sysMs += after.sysMs - cpuBefore.sysMs;
        tally.faults += after.faults - cpuBefore.faults;
      }
    },
  };
}

/**
 * The smtplib kind of slice: CLIENTS Python processes, each one connection that sends an
 * untimed message, says "ready", and on "go" sends back to back for `seconds`, printing
 * each latency (bench/smtplib-client.py).
 */
async function runSmtplibSlice(target: Target, messageFile: string, tally: Tally, seconds: number): Promise<void> {
  const meter = relayMeter(target, tally);
  const procs = Array.from({ length: CLIENTS }, (_, i) => {
    const user = USERS[i % USERS.length]!;
    const args = [SMTPLIB_CLIENT, '127.0.0.1', String(target.port), target.tls ? '1' : '0', target.auth ? user : '-', PASSWORD, messageFile, SENDER, `${user}@example.org`, String(seconds)];
    const proc = spawn('python3', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const ready = new Promise<void>((resolve) => {
      const check = () => (out.includes('ready\n') ? resolve() : undefined);
      proc.stdout.on('data', check);
      proc.on('exit', () => resolve());
    });
    const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
    return { proc, ready, exited, output: () => ({ out, err }) };
  });
  await Promise.all(procs.map((p) => p.ready));
  meter.start();
  const started = performance.now();
  for (const p of procs) p.proc.stdin.end('go\n');
  await Promise.all(procs.map((p) => p.exited));
  tally.seconds += (performance.now() - started) / 1000;
  meter.stop();
  for (const p of procs) {
    const { out, err } = p.output();
    for (const line of out.split('\n').slice(1)) if (line.trim() !== '') tally.latencies.push(Number(line));
    const errors = err.split('\n').filter((l) => l.trim() !== '');
    if (tally.errors < 5 && errors.length > 0) console.error(`${target.name} (smtplib): ${errors.slice(0, 3).join(' | ')}`);
    tally.errors += errors.length;
  }
  await meter.settle();
}

/**
 * One slice: CLIENTS clients each open their connection and send one untimed message
 * (connection setup, EHLO, AUTH), then send back to back until the deadline. A latency is
 * one whole transaction on the open connection: MAIL FROM through the 250 after the data.
 */
async function runSlice(target: Target, message: Buffer, tally: Tally, seconds: number): Promise<void> {
  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    const user = USERS[i % USERS.length]!;
    return { user, to: `${user}@example.org`, transport: transportFor(target, user) };
  });
  let errors = 0;
  const note = (err: unknown) => {
    errors++;
    if (tally.errors + errors <= 5) console.error(`${target.name}: ${(err as Error).message}`);
  };
  try {
    await Promise.all(
      clients.map((c) => c.transport.sendMail({ envelope: { from: SENDER, to: c.to }, raw: message }).catch(note)),
    );
    const meter = relayMeter(target, tally);
    meter.start();
    const started = performance.now();
    const deadline = started + seconds * 1000;
    await Promise.all(
      clients.map(async (c) => {
        while (performance.now() < deadline) {
          const t0 = performance.now();
          try {
            await c.transport.sendMail({ envelope: { from: SENDER, to: c.to }, raw: message });
            tally.latencies.push(performance.now() - t0);
          } catch (err) {
            note(err);
          }
        }
      }),
    );
    tally.seconds += (performance.now() - started) / 1000;
    meter.stop();
    for (const c of clients) c.transport.close();
    await meter.settle();
  } finally {
    for (const c of clients) c.transport.close();
    tally.errors += errors;
  }
}

function summarize(tally: Tally): { perSec: number; p50: number; p99: number; n: number } {
  const latencies = [...tally.latencies].sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { perSec: latencies.length / tally.seconds, p50: q(0.5), p99: q(0.99), n: latencies.length };
}

// ---- between slices -------------------------------------------------------------------


/** Expunges every user's INBOX (through the master user) so Dovecot's state is the same for every slice. */
async function emptyInboxes(stack: LegacyStack): Promise<void> {
  for (const user of USERS) {
    const c = await RawImap.connect(stack.imapPort);
    await c.line();
    await c.command('l', `LOGIN ${user}*${stack.master.user} ${stack.master.password}`);
    const selected = await c.command('s', 'SELECT INBOX');
    if (!selected.some((l) => / 0 EXISTS/.test(l))) {
      await c.command('f', 'STORE 1:* +FLAGS.SILENT (\\Deleted)');
      await c.command('e', 'EXPUNGE');
    }
    await c.command('o', 'LOGOUT');
    c.close();
  }
}

// ---- the other targets ----------------------------------------------------------------

/**
 * Dovecot's own submission service (dovecot-submissiond) as a second Dovecot instance,
 * relaying to the stack's Postfix: the peer an operator would otherwise deploy. Users
 * authenticate against a static passdb (any of the bench users, password "password").
 */
async function startDovecotSubmission(relayPort: number, certPem: string, keyPem: string): Promise<{ plain: number; tls: number; log: string; masterPid(): number; stop(): Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-dsubmit-'));
  const plain = await freePort();
  const submissions = await freePort();
  writeFileSync(path.join(dir, 'cert.pem'), certPem);
  writeFileSync(path.join(dir, 'key.pem'), keyPem);
  execFileSync('chmod', ['o+x', dir]);
  const log = path.join(dir, 'dovecot.log');
  writeFileSync(
    path.join(dir, 'dovecot.conf'),
    `instance_name = lemonade-dsubmit-${process.pid}
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${log}
protocols = submission
listen = 127.0.0.1
hostname = localhost
ssl = yes
ssl_cert = <${dir}/cert.pem
ssl_key = <${dir}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
default_internal_user = lemonademail
default_internal_group = lemonademail
default_login_user = lemonademail
mail_uid = lemonademail
mail_gid = lemonademail
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:${dir}/mail/%u
submission_relay_host = 127.0.0.1
submission_relay_port = ${relayPort}
submission_relay_trusted = yes
submission_relay_ssl = no
default_process_limit = 512
passdb {
  driver = static
  args = password=${PASSWORD}
}
userdb {
  driver = static
  args = uid=lemonademail gid=lemonademail home=${dir}/home/%u
}
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = ${plain}
  }
  inet_listener submissions {
    address = 127.0.0.1
    port = ${submissions}
    ssl = yes
  }
}
`,
  );
  execFileSync('dovecot', ['-c', path.join(dir, 'dovecot.conf')], { stdio: 'ignore' });
  await waitForPort(plain);
  return {
    plain,
    tls: submissions,
    log,
    masterPid: () => Number(readFileSync(path.join(dir, 'run', 'master.pid'), 'utf8')),
    async stop() {
      const pid = Number(readFileSync(path.join(dir, 'run', 'master.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
      // Remove the instance's directory once its master (and so every child) is gone.
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 100));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The EHLO keywords a target offers (to record which extensions each one has). */
async function ehloKeywords(target: Target): Promise<string> {
  const c = await RawSmtp.connect(target.port, { tls: target.tls });
  try {
    await c.reply();
    const r = await c.command('EHLO bench.example.org');
    await c.command('QUIT').catch(() => undefined);
    return r.text
      .split('\n')
      .slice(1)
      .map((l) => l.slice(4))
      .join(', ');
  } finally {
    c.close();
  }
}

async function main(): Promise<void> {
  console.log(
    `# Submission benchmark: ${CLIENTS} clients, ${SECONDS} s per target and size in ${SLICE_SECONDS} s slices, ` +
      `${os.cpus().length} cores, node ${process.version}`,
  );
  const stack = await startLegacyStack({ postfix: true });
  const stops: Array<() => unknown> = [() => stack.stop()];
  const stopAll = async () => {
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (err) {
        console.error(`stopping: ${(err as Error).message}`);
      }
    }
  };
  try {
    const gatewayConfig = benchSubmissionConfig({
      limits: { maxMessageSize: 64 * 1024 * 1024, maxSessions: 1000 },
      relay: { poolSize: CLIENTS * 2 },
    });
    const gw = await startGateway(stack, {
      config: gatewayConfig,
      ...(GATEWAY_NODE_ARGS ? { nodeArgs: GATEWAY_NODE_ARGS } : {}),
    });
    stops.push(async () => {
      await gw.stop();
      removeGatewayDir(gw);
    });
    const ref = REF_MAIN ? await startGateway(stack, { config: gatewayConfig, main: path.resolve(REF_MAIN) }) : undefined;
    if (ref) {
      stops.push(async () => {
        await ref.stop();
        removeGatewayDir(ref);
      });
    }
    // The same gateway with N worker processes (issue 18: workers 1 vs N side by side).
    // Its relay CPU is the primary's process tree, so the workers' CPU is in it.
    const gwN =
      WORKERS > 1
        ? await startGateway(stack, { config: { ...gatewayConfig, workers: WORKERS }, startTimeoutMs: 60_000, ...(GATEWAY_NODE_ARGS ? { nodeArgs: GATEWAY_NODE_ARGS } : {}) })
        : undefined;
    if (gwN) {
      stops.push(async () => {
        await gwN.stop();
        removeGatewayDir(gwN);
      });
    }
    const socat = await startSocat(stack.smtpPort);
    stops.push(() => socat.proc.kill());
    const tlsDir = path.join(gw.dir, 'data', 'tls');
    let dsub: Awaited<ReturnType<typeof startDovecotSubmission>> | undefined;
    try {
      dsub = await startDovecotSubmission(
        stack.smtpPort,
        readFileSync(path.join(tlsDir, 'selfsigned-cert.pem'), 'utf8'),
        readFileSync(path.join(tlsDir, 'selfsigned-key.pem'), 'utf8'),
      );
      const d = dsub;
      stops.push(() => d.stop());
    } catch (err) {
      console.error(`dovecot submission not started: ${(err as Error).message}`);
    }
    const all: Target[] = [
      { name: 'direct', port: stack.smtpPort, tls: false, auth: false },
      { name: 'socat', port: socat.port, tls: false, auth: false, relayPid: () => socat.proc.pid! },
      { name: 'gateway', port: gw.submissionPort, tls: false, auth: true, relayPid: () => gw.pid },
      ...(ref ? [{ name: 'gateway-ref', port: ref.submissionPort, tls: false, auth: true, relayPid: () => ref.pid }] : []),
      { name: 'gateway-tls', port: gw.submissionsPort, tls: true, auth: true, relayPid: () => gw.pid },
      ...(gwN
        ? [
            { name: `gateway-workers${WORKERS}`, port: gwN.submissionPort, tls: false, auth: true, relayPid: () => gwN.pid },
            { name: `gateway-workers${WORKERS}-tls`, port: gwN.submissionsPort, tls: true, auth: true, relayPid: () => gwN.pid },
          ]
        : []),
      ...(dsub
        ? [
            { name: 'dovecot-submission', port: dsub.plain, tls: false, auth: true, relayPid: dsub.masterPid },
            { name: 'dovecot-submission-tls', port: dsub.tls, tls: true, auth: true, relayPid: dsub.masterPid },
          ]
        : []),
    ];
    const targets = all.filter((t) => t.name === 'direct' || !ONLY || ONLY.includes(t.name));

    console.log('\nEHLO keywords:');
    for (const t of targets) console.log(`  ${t.name}: ${await ehloKeywords(t).catch((err: unknown) => `(${(err as Error).message})`)}`);

    const messages = new Map(SIZES.map((s) => [s.label, makeMessage(s.bytes)]));
    // smtplib clients read the message from a file.
    const messageDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-bench-msg-'));
    stops.push(() => rmSync(messageDir, { recursive: true, force: true }));
    const messageFiles = new Map(
      SIZES.map((s) => {
        const file = path.join(messageDir, `${s.bytes}.eml`);
        writeFileSync(file, messages.get(s.label)!);
        return [s.label, file];
      }),
    );
    const slice = (kind: ClientKind, t: Target, s: Size, tally: Tally, seconds: number) =>
      kind === 'smtplib' ? runSmtplibSlice(t, messageFiles.get(s.label)!, tally, seconds) : runSlice(t, messages.get(s.label)!, tally, seconds);
    const tallies = new Map<string, Tally>();
    for (const k of CLIENT_KINDS) for (const s of SIZES) for (const t of targets) tallies.set(`${k}/${s.label}/${t.name}`, newTally());

    // Warm-up: every target once, untimed, so the first one does not pay for cold caches.
    for (const k of CLIENT_KINDS) for (const t of targets) await slice(k, t, SIZES[0]!, newTally(), 1);
    await drainQueue(stack, 60_000);
    await emptyInboxes(stack);

    await new Promise((r) => setTimeout(r, 1000));
    const rssBefore = gw.rssKiB();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => {
      try {
        rssPeak = Math.max(rssPeak, gw.rssKiB());
      } catch {
        // gone
      }
    }, 250);
    const drainMs = new Map<string, number>();
    const runStarted = performance.now();
    try {
      // Targets and sizes take turns in short slices, so drift on the machine falls on all alike.
      const slices = Math.max(1, Math.round(SECONDS / SLICE_SECONDS));
      for (let i = 0; i < slices; i++) {
        for (const k of CLIENT_KINDS) {
          for (const s of SIZES) {
            for (const t of targets) {
              const key = `${k}/${s.label}/${t.name}`;
              await slice(k, t, s, tallies.get(key)!, SECONDS / slices);
              drainMs.set(key, (drainMs.get(key) ?? 0) + (await drainQueue(stack, 60_000)));
              await emptyInboxes(stack);
            }
          }
        }
        console.error(
          `round ${i + 1}/${slices} done after ${((performance.now() - runStarted) / 1000).toFixed(0)} s, ` +
            `gateway RSS ${(gw.rssKiB() / 1024).toFixed(1)} MiB`,
        );
      }
    } finally {
      clearInterval(sampler);
    }
    await new Promise((r) => setTimeout(r, 2000));
    const rssAfter = gw.rssKiB();

    for (const k of CLIENT_KINDS) for (const s of SIZES) {
      const direct = summarize(tallies.get(`${k}/${s.label}/direct`)!);
      console.log(`\n${s.label} messages, ${k} clients:\n`);
      console.log('| target | messages/s | p50 ms | p99 ms | messages | errors | vs direct | relay CPU ms/msg | of it system | relay faults/msg | relay runqueue wait ms/msg |');
      console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const t of targets) {
        const tally = tallies.get(`${k}/${s.label}/${t.name}`)!;
        const r = summarize(tally);
        const cpu = t.relayPid && r.n > 0 ? (tally.cpuMs / r.n).toFixed(2) : '';
        const wait = t.relayPid && r.n > 0 ? (tally.waitMs / r.n).toFixed(2) : '';
        const sys = t.relayPid && r.n > 0 ? (tally.sysMs / r.n).toFixed(2) : '';
        const faults = t.relayPid && r.n > 0 ? (tally.faults / r.n).toFixed(0) : '';
        console.log(
          `| ${t.name} | ${r.perSec.toFixed(1)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.n} | ${tally.errors} | ` +
            `${(r.perSec / direct.perSec).toFixed(2)}x | ${cpu} | ${sys} | ${faults} | ${wait} |`,
        );
      }
    }
    console.log('\nPostfix queue drain after slices (s, total per target):');
    for (const [key, ms] of drainMs) console.log(`  ${key}: ${(ms / 1000).toFixed(1)}`);
    console.log(
      `\nGateway RSS: ${(rssBefore / 1024).toFixed(1)} MiB before, ${(rssAfter / 1024).toFixed(1)} MiB after ` +
        `(peak sampled ${(rssPeak / 1024).toFixed(1)} MiB)`,
    );
    const warnings = gw.logs.filter((l) => /"level":(40|50|60)/.test(l));
    if (warnings.length > 0) console.log(`Gateway warnings/errors: ${warnings.length}; first: ${warnings[0]!.slice(0, 300)}`);
    const warningsN = gwN?.logs.filter((l) => /"level":(40|50|60)/.test(l)) ?? [];
    if (warningsN.length > 0) console.log(`Gateway (workers: ${WORKERS}) warnings/errors: ${warningsN.length}; first: ${warningsN[0]!.slice(0, 300)}`);
  } finally {
    await stopAll();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
