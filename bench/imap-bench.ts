/**
 * IMAP throughput and memory benchmark (issue 2). One fixed workload — N concurrent
 * sessions looping login, select, fetch headers, fetch a body, store a flag, append,
 * logout — run in one process against several targets side by side:
 *   direct       straight to the legacy Dovecot
 *   socat        through a plain TCP relay (socat), the floor for any proxy
 *   gateway      through lemonade-gateway's plain listener
 *   gateway-tls  through lemonade-gateway with TLS terminated by the gateway
 *   gateway-workers2 / gateway-workers2-tls  the same with `workers: 2` (BENCH_WORKERS)
 *   gateway-ref / gateway-ref-tls  another build of the gateway (BENCH_GATEWAY_REF_MAIN=its
 *                dist/main.js), to compare a change with what it changes, in one run
 *   dovecot-proxy / dovecot-proxy-tls  through a second Dovecot in proxy mode
 * Then RSS per idle TLS session of the gateway (BENCH_IDLE_SESSIONS, 1,000 by default).
 *
 * Then, by store (issue 18; BENCH_PG_IDLE=1/0, default on when PostgreSQL is installed):
 * gateways that ran no workload, on the embedded SQLite store and with
 * `store: {kind: postgres}` on a fresh database of a private PostgreSQL
 * (test/helpers/postgres.ts), each measured two ways: BENCH_IDLE_SESSIONS idle TLS
 * sessions with the greeting received (as above), and as many logged in (LOGIN over
 * implicit TLS, answered OK; each holds its upstream connection to Dovecot), printed as
 * one table. Every measure gets a fresh gateway (the workload gateway's heap, or one a
 * previous measure grew, has room that would hide part of the cost).
 *
 * Not a test: run on demand with `npm run bench`; results go in bench/RESULTS.md.
 */
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { startLegacyStack } from '../test/helpers/stack.js';
import { removeGatewayDir, startGateway } from '../test/helpers/gateway.js';
import { RawImap } from '../test/helpers/imap-raw.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { postgresInstalled } from './postgres.js';
import { freePort, startSocat, waitForPort } from './relay.js';

const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 10);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const IDLE_SESSIONS = Number(process.env.BENCH_IDLE_SESSIONS ?? 1000);
const SLICE_SECONDS = 4;
/** Worker processes of the second gateway target (BENCH_WORKERS, default 2; 0 or 1: no second gateway). */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
/** Entry point of a reference build (e.g. a checkout of the commit before a refactor), run beside this tree's. */
const REF_MAIN = process.env.BENCH_GATEWAY_REF_MAIN;
/** Idle sessions by store, SQLite beside PostgreSQL (BENCH_PG_IDLE=0 leaves it out; default: when PostgreSQL is installed). */
const PG_IDLE = process.env.BENCH_PG_IDLE === undefined ? undefined : !['0', '', 'false', 'no'].includes(process.env.BENCH_PG_IDLE);
const USERS = ['alice', 'bob', 'carol'];

interface Target {
  name: string;
  port: number;
  tls: boolean;
}

const MESSAGE = [
  'From: bench@example.org',
  'To: alice@example.org',
  'Subject: benchmark message',
  'Message-ID: <bench@example.org>',
  '',
  ...Array.from({ length: 40 }, (_, i) => `line ${i} of a modest message body, the kind a phone fetches`),
  '',
].join('\r\n');

async function oneIteration(target: Target, user: string, latencies: number[]): Promise<void> {
  const started = performance.now();
  const c = await RawImap.connect(target.port, { tls: target.tls });
  await c.line();
  const expectOk = (lines: string[], tag: string) => {
    if (!lines.at(-1)!.startsWith(`${tag} OK`)) throw new Error(`${target.name}: ${lines.at(-1)}`);
  };
  expectOk(await c.command('a1', `LOGIN ${user} password`), 'a1');
  expectOk(await c.command('a2', 'SELECT INBOX'), 'a2');
  expectOk(await c.command('a3', 'FETCH 1:5 (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])'), 'a3');
  expectOk(await c.command('a4', 'FETCH 1 BODY.PEEK[]'), 'a4');
  expectOk(await c.command('a5', 'STORE 1 +FLAGS.SILENT (\\Flagged)'), 'a5');
  c.write(`a6 APPEND Bench (\\Seen) {${Buffer.byteLength(MESSAGE)}}\r\n`);
  const cont = await c.line();
  if (!cont?.startsWith('+')) throw new Error(`${target.name}: no continuation: ${cont}`);
  c.write(`${MESSAGE}\r\n`);
  expectOk(await c.until('a6'), 'a6');
  await c.command('a7', 'LOGOUT');
  c.close();
  latencies.push(performance.now() - started);
}

interface Tally {
  latencies: number[];
  errors: number;
  seconds: number;
}

/** Runs the workload against target for `seconds`, adding to its tally. */
async function runWorkload(target: Target, tally: Tally, seconds: number): Promise<void> {
  const latencies = tally.latencies;
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: SESSIONS }, async (_, i) => {
      const user = USERS[i % USERS.length]!;
      while (performance.now() < deadline) {
        try {
          await oneIteration(target, user, latencies);
        } catch (err) {
          errors++;
          if (errors < 5) console.error(`${target.name}: ${(err as Error).message}`);
        }
      }
    }),
  );
  tally.seconds += (performance.now() - started) / 1000;
  tally.errors += errors;
}

function summarize(tally: Tally): { opsPerSec: number; p50: number; p99: number; errors: number } {
  const latencies = [...tally.latencies].sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { opsPerSec: latencies.length / tally.seconds, p50: q(0.5), p99: q(0.99), errors: tally.errors };
}

/** A second Dovecot in proxy mode (static passdb proxy=y nopassword=y), the peer operators would otherwise use. */
async function startDovecotProxy(upstreamPort: number, certPem: string, keyPem: string): Promise<{ plain: number; tls: number; stop(): void }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-dproxy-'));
  const plain = await freePort();
  const imaps = await freePort();
  writeFileSync(path.join(dir, 'cert.pem'), certPem);
  writeFileSync(path.join(dir, 'key.pem'), keyPem);
  execFileSync('chmod', ['o+x', dir]);
  writeFileSync(
    path.join(dir, 'dovecot.conf'),
    `instance_name = lemonade-dproxy-${process.pid}
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <${dir}/cert.pem
ssl_key = <${dir}/key.pem
disable_plaintext_auth = no
default_internal_user = lemonademail
default_internal_group = lemonademail
default_login_user = lemonademail
passdb {
  driver = static
  args = proxy=y nopassword=y host=127.0.0.1 port=${upstreamPort}
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${plain}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ${imaps}
    ssl = yes
  }
}
`,
  );
  execFileSync('dovecot', ['-c', path.join(dir, 'dovecot.conf')], { stdio: 'ignore' });
  await waitForPort(plain);
  return {
    plain,
    tls: imaps,
    stop() {
      const pid = Number(readFileSync(path.join(dir, 'run', 'master.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
    },
  };
}

async function idleSessionCost(port: number, rss: () => number): Promise<number> {
  const sockets: tls.TLSSocket[] = [];
  // Let start-up garbage settle before the baseline.
  await new Promise((r) => setTimeout(r, 1000));
  const before = rss();
  for (let i = 0; i < IDLE_SESSIONS; i++) {
    const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const sock = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
      sock.once('data', () => resolve(sock)); // the greeting: the session exists
      sock.once('error', reject);
    });
    sockets.push(s);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const after = rss();
  for (const s of sockets) s.destroy();
  return ((after - before) * 1024) / IDLE_SESSIONS;
}

/** As idleSessionCost, with every session logged in (LOGIN over implicit TLS) and then left idle. */
async function loggedInSessionCost(port: number, rss: () => number): Promise<number> {
  const clients: RawImap[] = [];
  await new Promise((r) => setTimeout(r, 1000));
  const before = rss();
  try {
    for (let i = 0; i < IDLE_SESSIONS; i++) clients.push(await RawImap.loggedIn(port, USERS[i % USERS.length]!));
    await new Promise((r) => setTimeout(r, 2000));
    return ((rss() - before) * 1024) / IDLE_SESSIONS;
  } finally {
    for (const c of clients) c.close();
  }
}

/**
 * Idle-session RSS by store (issue 18): SQLite beside PostgreSQL (a private server), each
 * measure on a gateway of its own, fresh (and with PostgreSQL a fresh database): a second
 * measure on the same process would find heap the first one grew and count too little.
 */
async function idleByStore(stack: Awaited<ReturnType<typeof startLegacyStack>>): Promise<void> {
  const pg = await startPostgres();
  try {
    const rows: Array<{ store: string; greeting: number; loggedIn: number }> = [];
    for (const name of ['sqlite', 'postgres'] as const) {
      const measure = async (cost: typeof idleSessionCost): Promise<number> => {
        const store = name === 'postgres' ? { kind: 'postgres', url: await pg.createDatabase() } : {};
        const g = await startGateway(stack, { config: { log: { level: 'info' }, store } });
        try {
          return await cost(g.imapsPort, () => g.rssKiB());
        } finally {
          await g.stop();
          removeGatewayDir(g);
        }
      };
      rows.push({ store: name, greeting: await measure(idleSessionCost), loggedIn: await measure(loggedInSessionCost) });
    }
    console.log(`\nRSS per idle TLS session by store (${IDLE_SESSIONS} sessions, greeting only or logged in, each on a fresh gateway):\n`);
    console.log('| store | greeting only KiB | logged in KiB |');
    console.log('|---|---:|---:|');
    for (const r of rows) console.log(`| ${r.store} | ${(r.greeting / 1024).toFixed(1)} | ${(r.loggedIn / 1024).toFixed(1)} |`);
  } finally {
    await pg.stop();
  }
}

async function main(): Promise<void> {
  console.log(`# IMAP benchmark: ${SESSIONS} sessions x ${SECONDS} s per target, ${os.cpus().length} cores, node ${process.version}`);
  const stack = await startLegacyStack({ postfix: false });
  // Seed each user's INBOX so FETCH 1:5 has something to read.
  for (const user of USERS) {
    const c = await RawImap.connect(stack.imapPort);
    await c.line();
    await c.command('l', `LOGIN ${user} password`);
    // Appends go to their own mailbox, so INBOX (which every iteration selects) stays the same size.
    await c.command('m', 'CREATE Bench');
    for (let i = 0; i < 5; i++) {
      c.write(`s${i} APPEND INBOX {${Buffer.byteLength(MESSAGE)}+}\r\n${MESSAGE}\r\n`);
      await c.until(`s${i}`);
    }
    await c.command('o', 'LOGOUT');
    c.close();
  }
  // The harness reads the gateway's "ready" log line, which is logged at info.
  const gw = await startGateway(stack, { plaintext: true, config: { log: { level: 'info' } } }).catch(async (err: unknown) => {
    await stack.stop();
    throw err;
  });
  // The same gateway with two worker processes (issue 18: workers 1 vs 2 side by side);
  // BENCH_WORKERS=0 leaves it out.
  const gw2 = WORKERS > 1 ? await startGateway(stack, { plaintext: true, config: { log: { level: 'info' }, workers: WORKERS } }) : undefined;
  const gwRef = REF_MAIN ? await startGateway(stack, { plaintext: true, config: { log: { level: 'info' } }, main: path.resolve(REF_MAIN) }) : undefined;
  const socat = await startSocat(stack.imapPort);
  const dataDir = path.join(gw.dir, 'data', 'tls');
  let proxy: Awaited<ReturnType<typeof startDovecotProxy>> | undefined;
  try {
    proxy = await startDovecotProxy(
      stack.imapPort,
      readFileSync(path.join(dataDir, 'selfsigned-cert.pem'), 'utf8'),
      readFileSync(path.join(dataDir, 'selfsigned-key.pem'), 'utf8'),
    );
  } catch (err) {
    console.error(`dovecot proxy not started: ${(err as Error).message}`);
  }
  const targets: Target[] = [
    { name: 'direct', port: stack.imapPort, tls: false },
    { name: 'socat', port: socat.port, tls: false },
    { name: 'gateway', port: gw.imapPort, tls: false },
    { name: 'gateway-tls', port: gw.imapsPort, tls: true },
    ...(gw2
      ? [
          { name: `gateway-workers${WORKERS}`, port: gw2.imapPort, tls: false },
          { name: `gateway-workers${WORKERS}-tls`, port: gw2.imapsPort, tls: true },
        ]
      : []),
    ...(gwRef
      ? [
          { name: 'gateway-ref', port: gwRef.imapPort, tls: false },
          { name: 'gateway-ref-tls', port: gwRef.imapsPort, tls: true },
        ]
      : []),
    ...(proxy
      ? [
          { name: 'dovecot-proxy', port: proxy.plain, tls: false },
          { name: 'dovecot-proxy-tls', port: proxy.tls, tls: true },
        ]
      : []),
  ];
  const tallies = new Map<string, Tally>(targets.map((t) => [t.name, { latencies: [], errors: 0, seconds: 0 }]));
  try {
    // A short warm-up so the first target does not pay for cold caches.
    await runWorkload({ ...targets[0]!, name: 'warm-up' }, { latencies: [], errors: 0, seconds: 0 }, 3);
    // Targets take turns in short slices, so drift on the machine or in Dovecot's state
    // over the run falls on all of them alike.
    const slices = Math.max(1, Math.round(SECONDS / SLICE_SECONDS));
    for (let i = 0; i < slices; i++) {
      for (const target of targets) await runWorkload(target, tallies.get(target.name)!, SECONDS / slices);
    }
    const results = new Map([...tallies].map(([name, tally]) => [name, summarize(tally)]));
    const direct = results.get('direct')!;
    console.log('\n| target | iterations/s | p50 ms | p99 ms | errors | vs direct |');
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const [name, r] of results) {
      console.log(`| ${name} | ${r.opsPerSec.toFixed(1)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.errors} | ${(r.opsPerSec / direct.opsPerSec).toFixed(2)}x |`);
    }
    const perSession = await idleSessionCost(gw.imapsPort, () => gw.rssKiB());
    console.log(`\nRSS per idle TLS session (gateway, ${IDLE_SESSIONS} sessions): ${(perSession / 1024).toFixed(1)} KiB`);
    if (gwRef) {
      const refPerSession = await idleSessionCost(gwRef.imapsPort, () => gwRef.rssKiB());
      console.log(`RSS per idle TLS session (gateway-ref, ${IDLE_SESSIONS} sessions): ${(refPerSession / 1024).toFixed(1)} KiB`);
    }
    if (PG_IDLE ?? postgresInstalled()) {
      await idleByStore(stack).catch((err: unknown) => console.error(`idle sessions by store failed: ${(err as Error).message}`));
    } else if (PG_IDLE === undefined) {
      console.error('idle sessions by store left out: PostgreSQL is not installed (bash scripts/postgres.sh install)');
    }
  } finally {
    proxy?.stop();
    socat.proc.kill();
    await gw2?.stop();
    await gwRef?.stop();
    await gw.stop();
    await stack.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
