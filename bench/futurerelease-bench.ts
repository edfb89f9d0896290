/**
 * FUTURERELEASE (RFC 4865) benchmark (issue 6), over the legacy Postfix and Dovecot.
 *
 * Accept rate: BENCH_COUNT messages of exactly 10 KiB from alice to bob, over
 * BENCH_CONNECTIONS connections and then over one, through three targets in turn with the
 * same client (a bare pipelining SMTP client: MAIL, RCPT and DATA in one write, RFC 2920,
 * then the content and its final dot in one write):
 *   held       the gateway's plain submission listener (AUTH PLAIN on loopback), MAIL FROM
 *              with HOLDFOR=3600: spool file fsync + directory fsync + SQLite commit before 250
 *   immediate  the same listener without a hold: relayed to Postfix before the 250
 *   direct     the stack's Postfix itself (plain SMTP, no AUTH: loopback is in mynetworks)
 * Every target of every turn gets a fresh gateway (a new temp directory, so a new dataDir):
 * the held messages of a turn are removed with its gateway's dataDir and never released,
 * and each held turn starts on an empty spool. Each connection is opened (EHLO, AUTH)
 * and BENCH_WARMUP messages are sent through the target before the clock starts. After
 * an immediate or direct turn the bench waits for Postfix's queue to empty and expunges
 * bob's INBOX, so no target pays for another's deliveries (how long Postfix took to empty
 * its queue is printed on stderr). Also reported per turn: the gateway's CPU time (user +
 * system, from /proc) per message over the timed batch, and how busy the machine's CPUs
 * were meanwhile (/proc/stat, all cores), since client, gateway, Postfix and Dovecot share them.
 *
 * Release lag: BENCH_LAG_COUNT held messages (fresh gateway, default futureRelease
 * settings unless BENCH_RELEASE_CONCURRENCY sets futureRelease.concurrency) all with one
 * HOLDUNTIL, a whole second set a little after the submissions are expected to end (from
 * the held rate just measured, times 1.5, plus 3 s). Then from the
 * due second: when the gateway's spool gauge reads 0 (polled), when bob's INBOX holds them
 * all (polled with STATUS: the end-to-end drain), and the gateway's release lag histogram
 * (requested release time to the MTA's 250) read from /metrics, whose p50/p99 are
 * interpolated linearly within its buckets like PromQL's histogram_quantile; as a check,
 * the same quantiles from the gateway's "held message released" log lines (pino's ms
 * timestamps, logged once the MTA has answered, before the spool row is deleted, so a little later than the 250).
 *
 * Release lag by store (issue 18), BENCH_LAG_STORES (comma-separated, default
 * "sqlite,postgres,postgres-2"; empty: none): the same measurement per variant, then one
 * table of them all:
 *   sqlite      one gateway on its embedded SQLite store: the release-lag run above, reused
 *   postgres    one gateway with `store: {kind: postgres}` on a fresh database
 *   postgres-2  two gateways (a dataDir each) on one fresh database, BENCH_CONNECTIONS split
 *               between them and the messages half through each; both release (their
 *               schedulers claim due messages from the shared table)
 * PostgreSQL is a private server of this run (test/helpers/postgres.ts, scripts/postgres.sh;
 * left out with a message when it is not installed). Its accept rate is not measured, so
 * the due second is set further out than for SQLite (a longer wait costs time, not
 * accuracy: lags count from the due second). With two gateways the histograms are summed
 * bucket by bucket (same buckets) and the log lines of both are taken. "Spool empty" is the
 * gauge for SQLite and, for PostgreSQL, a count of held_messages polled every 100 ms (each
 * instance's gauge re-reads the shared table only once a second).
 *
 * Not a test: run on demand with `bash bench/run.sh futurerelease`; results go in bench/RESULTS.md.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { startLegacyStack, type LegacyStack } from '../test/helpers/stack.js';
import { benchMessage, drainQueue } from './relay.js';
import { postgresInstalled } from './postgres.js';
import { metricValue, removeGatewayDir, startGateway, type RunningGateway } from '../test/helpers/gateway.js';
import { query, startPostgres, type PostgresServer } from '../test/helpers/postgres.js';
import { RawImap } from '../test/helpers/imap-raw.js';
import { RawSmtp, type Reply } from '../test/helpers/smtp-raw.js';

/** Timed messages per target and connection count. */
const COUNT = Number(process.env.BENCH_COUNT ?? 2000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
/** Untimed messages through each target before its clock starts. */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 100);
/** Messages due at the same second for the release lag. */
const LAG_COUNT = Number(process.env.BENCH_LAG_COUNT ?? 1000);
/** submission.futureRelease.concurrency of the release-lag gateway; unset: the gateway's default (8). */
const RELEASE_CONCURRENCY = process.env.BENCH_RELEASE_CONCURRENCY ? Number(process.env.BENCH_RELEASE_CONCURRENCY) : undefined;

/** A store and instance layout the release lag is measured with (issue 18). */
interface LagVariant {
  name: 'sqlite' | 'postgres' | 'postgres-2';
  postgres: boolean;
  gateways: number;
}
const LAG_VARIANTS: LagVariant[] = [
  { name: 'sqlite', postgres: false, gateways: 1 },
  { name: 'postgres', postgres: true, gateways: 1 },
  { name: 'postgres-2', postgres: true, gateways: 2 },
];
const LAG_STORES = (process.env.BENCH_LAG_STORES ?? 'sqlite,postgres,postgres-2').split(',').map((v) => v.trim()).filter(Boolean);
for (const v of LAG_STORES) if (!LAG_VARIANTS.some((l) => l.name === v)) throw new Error(`BENCH_LAG_STORES: no variant ${v} (${LAG_VARIANTS.map((l) => l.name).join(', ')})`);
const MESSAGE_BYTES = 10 * 1024;
const AUTH = `AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`;
const OWN_SENDER = { senderPolicy: { mode: 'own', domains: ['example.org'] } };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function makeMessage(bytes: number): Buffer {
  return benchMessage(bytes, {
    from: 'alice@example.org',
    to: 'bob@example.org',
    subject: `futurerelease benchmark, ${bytes} bytes`,
    messageId: `futurerelease-bench-${bytes}@example.org`,
  });
}

// ---- the client -----------------------------------------------------------------------

interface Target {
  name: 'held' | 'immediate' | 'direct';
  port: number;
  auth: boolean;
  /** MAIL FROM parameter, e.g. HOLDFOR=3600. */
  hold?: string;
  /** The gateway's pid, for its CPU time. */
  pid?: number;
}

interface Batch {
  latencies: number[];
  errors: number;
  firstError?: string;
  seconds: number;
  /** Spool ids from the 250s of held messages. */
  ids: string[];
}

async function openConnection(target: Target): Promise<RawSmtp> {
  const c = await RawSmtp.connect(target.port);
  const greeting = await c.reply();
  if (greeting?.code !== 220) throw new Error(`${target.name}: greeting ${greeting?.text}`);
  const ehlo = await c.command('EHLO bench.example.org');
  if (ehlo.code !== 250 || !/PIPELINING/.test(ehlo.text)) throw new Error(`${target.name}: EHLO ${ehlo.text}`);
  if (target.hold !== undefined && !/FUTURERELEASE/.test(ehlo.text)) throw new Error(`${target.name}: no FUTURERELEASE in EHLO`);
  if (target.auth) {
    const a = await c.command(AUTH);
    if (a.code !== 235) throw new Error(`${target.name}: AUTH ${a.text}`);
  }
  return c;
}

async function reply(c: RawSmtp): Promise<Reply> {
  const r = await c.reply(60_000);
  if (r === undefined) throw new Error('connection closed');
  return r;
}

/**
 * One message on an open connection: MAIL, RCPT, DATA pipelined, then the content once
 * DATA's 354 is in. Returns the final reply's text, or throws an Error naming what failed
 * (the connection stays usable: a refused MAIL or RCPT makes DATA fail too).
 */
async function sendOne(c: RawSmtp, target: Target, message: Buffer): Promise<string> {
  c.write(`MAIL FROM:<alice@example.org>${target.hold ? ` ${target.hold}` : ''}\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n`);
  const mail = await reply(c);
  const rcpt = await reply(c);
  const data = await reply(c);
  if (mail.code !== 250 || rcpt.code !== 250 || data.code !== 354) {
    if (data.code === 354) {
      // Cannot happen with a server that follows RFC 2920; end the transaction anyway.
      c.write('.\r\n');
      await reply(c);
    }
    throw new Error(`MAIL ${mail.text} / RCPT ${rcpt.text} / DATA ${data.text}`);
  }
  c.write(Buffer.concat([message, Buffer.from('.\r\n')]));
  const done = await reply(c);
  if (done.code !== 250) throw new Error(`end of data: ${done.text}`);
  const held = /held as (\S+) until/.exec(done.text);
  if ((target.hold !== undefined) !== (held !== null)) throw new Error(`unexpected final reply for ${target.name}: ${done.text}`);
  return done.text;
}

/** `count` messages over the open connections (each takes the next while any are left). */
async function runBatch(conns: RawSmtp[], target: Target, message: Buffer, count: number): Promise<Batch> {
  const batch: Batch = { latencies: [], errors: 0, seconds: 0, ids: [] };
  let next = 0;
  const started = performance.now();
  await Promise.all(
    conns.map(async (c) => {
      while (next < count) {
        next++;
        const t0 = performance.now();
        try {
          const text = await sendOne(c, target, message);
          batch.latencies.push(performance.now() - t0);
          const id = /held as (\S+) until/.exec(text)?.[1];
          if (id !== undefined) batch.ids.push(id);
        } catch (err) {
          batch.errors++;
          batch.firstError ??= (err as Error).message;
          if (c.closed) throw err;
        }
      }
    }),
  );
  batch.seconds = (performance.now() - started) / 1000;
  return batch;
}

const quantile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

/** CPU time (user + system) of one process in ms (clock ticks are 100 Hz on Linux). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** Jiffies of all CPUs: busy and total (from /proc/stat), to tell how loaded the machine was. */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  // idle and iowait are not busy
  return { busy: total - f[3]! - f[4]!, total };
}

const busyPercent = (a: { busy: number; total: number }, b: { busy: number; total: number }) => (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total);

// ---- between turns --------------------------------------------------------------------


/** Expunges bob's INBOX (through the master user) so every turn starts from the same Dovecot state. */
async function emptyInbox(stack: LegacyStack, user = 'bob'): Promise<void> {
  const c = await RawImap.connect(stack.imapPort);
  try {
    await c.line();
    await c.command('l', `LOGIN ${user}*${stack.master.user} ${stack.master.password}`);
    const selected = await c.command('s', 'SELECT INBOX');
    if (!selected.some((l) => / 0 EXISTS/.test(l))) {
      await c.command('f', 'STORE 1:* +FLAGS.SILENT (\\Deleted)', 60_000);
      await c.command('e', 'EXPUNGE', 60_000);
    }
    await c.command('o', 'LOGOUT');
  } finally {
    c.close();
  }
}

// ---- the gateway ----------------------------------------------------------------------

/**
 * A gateway as the brief says (plain listener with AUTH PLAIN on loopback, senderPolicy
 * own/example.org), logging at info, the deployed default (the harness's default, debug,
 * logs every command).
 */
function gateway(stack: LegacyStack, futureRelease: Record<string, unknown> = {}, store?: Record<string, unknown>): Promise<RunningGateway> {
  return startGateway(stack, { plaintext: true, config: { log: { level: 'info' }, submission: { ...OWN_SENDER, futureRelease }, ...(store ? { store } : {}) } });
}

async function stopGateway(gw: RunningGateway): Promise<void> {
  await gw.stop();
  removeGatewayDir(gw);
}

function complaints(gw: RunningGateway): string[] {
  return gw.logs.filter((l) => /"level":[4-6]0\b/.test(l));
}

// ---- histogram ------------------------------------------------------------------------

interface Histogram {
  buckets: Array<{ le: number; count: number }>;
  count: number;
  sum: number;
}

function readHistogram(text: string, name: string): Histogram {
  const buckets: Array<{ le: number; count: number }> = [];
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))) {
    buckets.push({ le: m[1] === '+Inf' ? Infinity : Number(m[1]), count: Number(m[2]) });
  }
  buckets.sort((a, b) => a.le - b.le);
  return { buckets, count: metricValue(text, `${name}_count`), sum: metricValue(text, `${name}_sum`) };
}

/** Two processes' histograms of one metric as one (the same buckets, counts added). */
function addHistograms(a: Histogram, b: Histogram): Histogram {
  return {
    buckets: a.buckets.map((x) => ({ le: x.le, count: x.count + (b.buckets.find((y) => y.le === x.le)?.count ?? NaN) })),
    count: a.count + b.count,
    sum: a.sum + b.sum,
  };
}

/** The q-quantile by linear interpolation within the bucket it falls in (PromQL's histogram_quantile). */
function histogramQuantile(h: Histogram, q: number): number {
  const rank = q * h.count;
  let lower = 0;
  let below = 0;
  for (const b of h.buckets) {
    if (b.count >= rank) {
      // Beyond the last finite bucket, PromQL answers that bucket's upper bound.
      if (b.le === Infinity) return lower;
      return lower + ((b.le - lower) * (rank - below)) / Math.max(1, b.count - below);
    }
    lower = b.le;
    below = b.count;
  }
  return NaN;
}

// ---- the phases -----------------------------------------------------------------------

interface Row {
  connections: number;
  target: Target['name'];
  messages: number;
  perSec: number;
  p50: number;
  p99: number;
  errors: number;
  firstError?: string;
  cpuPerMsg?: number;
  /** Machine CPU busy over the timed batch (all cores, %). */
  busy: number;
}

async function acceptTurn(stack: LegacyStack, name: Target['name'], connections: number, message: Buffer): Promise<Row> {
  const gw = name === 'direct' ? undefined : await gateway(stack);
  try {
    const target: Target = gw
      ? { name, port: gw.submissionPort, auth: true, pid: gw.pid, ...(name === 'held' ? { hold: 'HOLDFOR=3600' } : {}) }
      : { name, port: stack.smtpPort, auth: false };
    const conns = await Promise.all(Array.from({ length: connections }, () => openConnection(target)));
    try {
      const warm = await runBatch(conns, target, message, WARMUP);
      if (warm.errors > 0) throw new Error(`${name}: warm-up failed: ${warm.firstError}`);
      const cpuBefore = target.pid ? cpuMs(target.pid) : 0;
      const ticksBefore = machineTicks();
      const batch = await runBatch(conns, target, message, COUNT);
      const busy = busyPercent(ticksBefore, machineTicks());
      const cpu = target.pid ? cpuMs(target.pid) - cpuBefore : undefined;
      for (const c of conns) c.write('QUIT\r\n');
      if (gw && name === 'held') {
        const held = metricValue(await gw.metrics(), 'lemonade_futurerelease_held_messages');
        const expected = WARMUP + batch.latencies.length;
        if (held !== expected) console.error(`held: the spool gauge reads ${held}, not ${expected}`);
        if (new Set(batch.ids).size !== batch.latencies.length) console.error('held: spool ids not unique');
      }
      const sorted = [...batch.latencies].sort((a, b) => a - b);
      const row: Row = {
        connections, target: name, messages: sorted.length, perSec: sorted.length / batch.seconds,
        p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), errors: batch.errors, busy,
        ...(batch.firstError !== undefined ? { firstError: batch.firstError } : {}),
        ...(cpu !== undefined && sorted.length > 0 ? { cpuPerMsg: cpu / sorted.length } : {}),
      };
      if (gw) for (const l of complaints(gw).slice(0, 3)) console.error(`${name} gateway: ${l.slice(0, 300)}`);
      return row;
    } finally {
      for (const c of conns) c.close();
    }
  } finally {
    if (gw) await stopGateway(gw);
    if (name !== 'held') {
      const drained = await drainQueue(stack, 120_000);
      await emptyInbox(stack);
      console.error(`${name}, ${connections} connection(s): Postfix queue empty ${(drained / 1000).toFixed(1)} s after the last 250`);
    }
  }
}

interface LagResult {
  variant: LagVariant['name'];
  gateways: number;
  /** Held messages accepted (250) of the LAG_COUNT submitted. */
  accepted: number;
  dueAt: Date;
  submitSeconds: number;
  submittedBeforeDue: boolean;
  errors: number;
  histogram: Histogram;
  p50: number;
  p99: number;
  logP50: number;
  logP99: number;
  logFirst: number;
  logLast: number;
  logCount: number;
  spoolEmptyS: number;
  inboxS: number;
  delivered: number;
  released: number;
  failed: number;
  warnings: string[];
  /** Gateway CPU (all gateways of the variant) per message and machine busy % from the due second until the INBOX held them all. */
  cpuPerMsg: number;
  busy: number;
}

/**
 * One release-lag run: fresh gateways of the variant (a fresh database for PostgreSQL),
 * LAG_COUNT held messages (split evenly between the gateways) due at one second, then
 * the measures from that second on, taken over every gateway of the variant.
 */
async function releaseLag(stack: LegacyStack, heldRate: number, message: Buffer, variant: LagVariant, pg?: PostgresServer): Promise<LagResult> {
  await emptyInbox(stack);
  const bobBefore = await stack.messageCount('bob');
  const url = variant.postgres ? await pg!.createDatabase() : undefined;
  const store = url ? { kind: 'postgres', url } : undefined;
  const gws: RunningGateway[] = [];
  try {
    for (let i = 0; i < variant.gateways; i++) gws.push(await gateway(stack, RELEASE_CONCURRENCY === undefined ? {} : { concurrency: RELEASE_CONCURRENCY }, store));
    // What is held: the spool gauge of the one SQLite gateway; the shared table with PostgreSQL.
    const heldNow = async (): Promise<number> =>
      url
        ? Number((await query<{ n: string }>(url, 'SELECT COUNT(*) AS n FROM held_messages'))[0]!.n)
        : metricValue(await gws[0]!.metrics(), 'lemonade_futurerelease_held_messages');
    const perGateway = Math.max(1, Math.round(CONNECTIONS / gws.length));
    const probes: Target[] = gws.map((gw) => ({ name: 'held', port: gw.submissionPort, auth: true, pid: gw.pid }));
    const conns = await Promise.all(probes.map((p) => Promise.all(Array.from({ length: perGateway }, () => openConnection(p)))));
    // Due a whole second (HOLDUNTIL here carries seconds) after the expected end plus margin;
    // PostgreSQL's accept rate is not measured, so its margin is wider.
    const expectedMs = (LAG_COUNT / heldRate) * 1000;
    const dueAt = new Date(Math.ceil((Date.now() + expectedMs * (variant.postgres ? 4 : 1.5) + 3000) / 1000) * 1000);
    const hold = `HOLDUNTIL=${dueAt.toISOString().replace(/\.\d{3}Z$/, 'Z')}`;
    console.error(
      `release lag${variant.name === 'sqlite' ? '' : ` (${variant.name})`}: ${LAG_COUNT} messages held until ${dueAt.toISOString()} ` +
        `(expected to take ${(expectedMs / 1000).toFixed(1)} s to submit)`,
    );
    // Half (or the n-th part) through each gateway, all at once.
    const started = performance.now();
    const batches = await Promise.all(
      probes.map((p, i) => runBatch(conns[i]!, { ...p, hold }, message, Math.floor(LAG_COUNT / gws.length) + (i < LAG_COUNT % gws.length ? 1 : 0))),
    );
    const submitSeconds = (performance.now() - started) / 1000;
    const submittedBeforeDue = Date.now() < dueAt.getTime();
    for (const c of conns.flat()) {
      c.write('QUIT\r\n');
      c.close();
    }
    const errors = batches.reduce((n, b) => n + b.errors, 0);
    const firstError = batches.find((b) => b.firstError !== undefined)?.firstError;
    if (errors > 0) console.error(`release lag: ${errors} submissions failed; first: ${firstError}`);
    const accepted = batches.reduce((n, b) => n + b.latencies.length, 0);
    const held = await heldNow();
    if (held !== accepted) console.error(`release lag: ${url ? 'held_messages holds' : 'the spool gauge reads'} ${held} before the due time, not ${accepted}`);

    // From the due second on: what is held (polled every 100 ms) and bob's INBOX (STATUS every 100 ms).
    await sleep(dueAt.getTime() - Date.now());
    const cpuAtDue = gws.map((gw) => cpuMs(gw.pid));
    const ticksAtDue = machineTicks();
    let spoolEmptyAt = NaN;
    const spoolWatch = (async () => {
      const until = dueAt.getTime() + 300_000;
      while (Date.now() < until) {
        if ((await heldNow()) === 0) {
          spoolEmptyAt = Date.now();
          return;
        }
        await sleep(100);
      }
    })();
    const delivered = (await stack.waitForMessageCount('bob', 'INBOX', bobBefore + accepted, dueAt.getTime() + 300_000 - Date.now())) - bobBefore;
    const inboxAt = Date.now();
    const cpuPerMsg = gws.reduce((n, gw, i) => n + cpuMs(gw.pid) - cpuAtDue[i]!, 0) / accepted;
    const busy = busyPercent(ticksAtDue, machineTicks());
    await spoolWatch;
    const metrics = await Promise.all(gws.map((gw) => gw.metrics()));
    const histogram = metrics.map((m) => readHistogram(m, 'lemonade_futurerelease_release_lag_seconds')).reduce(addHistograms);

    // The same lags from the log lines, as a check on the bucket interpolation.
    const releasedAt: number[] = [];
    for (const l of gws.flatMap((gw) => gw.logs)) {
      if (!l.includes('"msg":"held message released"')) continue;
      const rec = JSON.parse(l) as { time: number };
      releasedAt.push((rec.time - dueAt.getTime()) / 1000);
    }
    releasedAt.sort((a, b) => a - b);
    const total = (event: string) => metrics.reduce((n, m) => n + metricValue(m, 'lemonade_futurerelease_messages_total', { event }), 0);
    return {
      variant: variant.name, gateways: gws.length, accepted,
      dueAt, submitSeconds, submittedBeforeDue, errors, histogram,
      p50: histogramQuantile(histogram, 0.5), p99: histogramQuantile(histogram, 0.99),
      logP50: quantile(releasedAt, 0.5), logP99: quantile(releasedAt, 0.99),
      logFirst: releasedAt[0] ?? NaN, logLast: releasedAt.at(-1) ?? NaN, logCount: releasedAt.length,
      spoolEmptyS: (spoolEmptyAt - dueAt.getTime()) / 1000, inboxS: (inboxAt - dueAt.getTime()) / 1000, delivered,
      released: total('released'), failed: total('failed'),
      warnings: gws.flatMap(complaints), cpuPerMsg, busy,
    };
  } finally {
    for (const gw of gws) await stopGateway(gw);
  }
}

/**
 * The release lag of every BENCH_LAG_STORES variant: "sqlite" is the run main() already
 * made; the PostgreSQL ones share one private server, a fresh database each. A variant
 * that fails is reported and the others still run.
 */
async function lagByStore(stack: LegacyStack, heldRate: number, message: Buffer, sqlite: LagResult): Promise<Array<LagResult | { variant: string; error: string }>> {
  const out: Array<LagResult | { variant: string; error: string }> = [];
  let pg: PostgresServer | undefined;
  let pgError: string | undefined;
  try {
    for (const name of LAG_STORES) {
      const variant = LAG_VARIANTS.find((v) => v.name === name)!;
      if (!variant.postgres) {
        out.push(sqlite);
        continue;
      }
      if (!pg && pgError === undefined) {
        if (!postgresInstalled()) pgError = 'PostgreSQL is not installed (bash scripts/postgres.sh install)';
        else pg = await startPostgres().catch((err: unknown) => ((pgError = (err as Error).message), undefined));
      }
      if (!pg) {
        console.error(`release lag (${name}): left out: ${pgError}`);
        out.push({ variant: name, error: pgError! });
        continue;
      }
      try {
        out.push(await releaseLag(stack, heldRate, message, variant, pg));
      } catch (err) {
        console.error(`release lag (${name}) failed: ${(err as Error).message}`);
        out.push({ variant: name, error: (err as Error).message.split('\n')[0]! });
      }
    }
  } finally {
    await pg?.stop();
  }
  return out;
}

function printLagByStore(results: Array<LagResult | { variant: string; error: string }>): void {
  console.log(
    `\nRelease lag by store (issue 18), ${LAG_COUNT} held ${MESSAGE_BYTES}-byte messages due at once over ${CONNECTIONS} connections ` +
      `(split between the gateways); lag p50/p99 from the histograms (buckets interpolated, summed over the gateways) and from the log lines; ` +
      `spool empty: gauge (sqlite) or held_messages count (postgres), polled every 100 ms; drain: all in bob's INBOX:\n`,
  );
  console.log(
    '| store | gateways | held | submit s | all before due | lag p50 s | lag p99 s | log p50 s | log p99 s | release rate msg/s | spool empty s | drain s | delivered | released / failed | gateway CPU ms/msg | machine busy | warnings |',
  );
  console.log('|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|');
  for (const r of results) {
    if ('error' in r) {
      console.log(`| ${r.variant} | | | | | | | | | | | | | | | | not run: ${r.error.slice(0, 200)} |`);
      continue;
    }
    const rate = (r.logCount - 1) / (r.logLast - r.logFirst);
    console.log(
      `| ${r.variant} | ${r.gateways} | ${r.accepted} | ${r.submitSeconds.toFixed(1)} | ${r.submittedBeforeDue ? 'yes' : 'NO'} | ` +
        `${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.logP50.toFixed(2)} | ${r.logP99.toFixed(2)} | ${rate.toFixed(1)} | ` +
        `${r.spoolEmptyS.toFixed(2)} | ${r.inboxS.toFixed(2)} | ${r.delivered} | ${r.released} / ${r.failed} | ${r.cpuPerMsg.toFixed(2)} | ${r.busy.toFixed(0)}% | ${r.warnings.length} |`,
    );
  }
  for (const r of results) {
    if ('error' in r || r.variant === 'sqlite') continue;
    for (const l of r.warnings.slice(0, 3)) console.log(`  ${r.variant}: ${l.slice(0, 300)}`);
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `# FUTURERELEASE benchmark: ${COUNT} messages of ${MESSAGE_BYTES} bytes per target over ${CONNECTIONS} and 1 connection(s) ` +
      `(after ${WARMUP} untimed), release lag of ${LAG_COUNT}; ${os.cpus().length} cores, node ${process.version}`,
  );
  const message = makeMessage(MESSAGE_BYTES);
  const stack = await startLegacyStack({ postfix: true });
  try {
    const rows: Row[] = [];
    const levels = [...new Set([CONNECTIONS, 1])];
    for (const connections of levels) {
      for (const name of ['held', 'immediate', 'direct'] as const) {
        const row = await acceptTurn(stack, name, connections, message);
        rows.push(row);
        console.error(
          `${name}, ${connections} connection(s): ${row.perSec.toFixed(1)} messages/s, p50 ${row.p50.toFixed(1)} ms, p99 ${row.p99.toFixed(1)} ms, ` +
            `${row.errors} errors${row.firstError ? ` (first: ${row.firstError})` : ''} (${((performance.now() - started) / 1000).toFixed(0)} s into the run)`,
        );
      }
    }
    const heldRate = rows.find((r) => r.connections === CONNECTIONS && r.target === 'held')!.perSec;
    const lag = await releaseLag(stack, heldRate, message, LAG_VARIANTS[0]!);
    const byStore = await lagByStore(stack, heldRate, message, lag);

    console.log(`\nAccept rate, ${MESSAGE_BYTES}-byte messages, ${COUNT} per row (pipelined MAIL/RCPT/DATA; latency: MAIL written to the final reply):\n`);
    console.log('| connections | target | messages/s | p50 ms | p99 ms | messages | errors | vs direct | gateway CPU ms/msg | machine busy |');
    console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      const direct = rows.find((d) => d.connections === r.connections && d.target === 'direct')!;
      console.log(
        `| ${r.connections} | ${r.target} | ${r.perSec.toFixed(1)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.messages} | ${r.errors} | ` +
          `${(r.perSec / direct.perSec).toFixed(2)}x | ${r.cpuPerMsg === undefined ? '' : r.cpuPerMsg.toFixed(2)} | ${r.busy.toFixed(0)}% |`,
      );
    }

    console.log(
      `\nRelease lag, ${LAG_COUNT} held ${MESSAGE_BYTES}-byte messages due at ${lag.dueAt.toISOString()} ` +
        `(submitted over ${CONNECTIONS} connections in ${lag.submitSeconds.toFixed(1)} s, ${lag.submittedBeforeDue ? 'all before' : 'NOT all before'} the due time; ${lag.errors} errors):\n`,
    );
    console.log('| measure | p50 s | p99 s | other |');
    console.log('|---|---:|---:|---|');
    console.log(
      `| lemonade_futurerelease_release_lag_seconds (due -> MTA 250), buckets interpolated | ${lag.p50.toFixed(2)} | ${lag.p99.toFixed(2)} | ` +
        `count ${lag.histogram.count}, mean ${(lag.histogram.sum / lag.histogram.count).toFixed(2)} s |`,
    );
    console.log(
      `| gateway log "held message released" - due time | ${lag.logP50.toFixed(2)} | ${lag.logP99.toFixed(2)} | first ${lag.logFirst.toFixed(2)} s, last ${lag.logLast.toFixed(2)} s |`,
    );
    console.log(
      `| release rate, first to last "held message released" | | | ${((lag.logCount - 1) / (lag.logLast - lag.logFirst)).toFixed(1)} messages/s ` +
        `(futureRelease.concurrency ${RELEASE_CONCURRENCY ?? '8, the default'}) |`,
    );
    console.log(`| spool gauge 0 (polled every 100 ms) - due time | | | ${lag.spoolEmptyS.toFixed(2)} s |`);
    console.log(`| all ${LAG_COUNT} in bob's INBOX (STATUS every 100 ms) - due time: end-to-end drain | | | ${lag.inboxS.toFixed(2)} s (${lag.delivered} delivered) |`);
    console.log(
      `\nHistogram buckets (cumulative): ${lag.histogram.buckets.map((b) => `le=${b.le === Infinity ? '+Inf' : b.le}: ${b.count}`).join(', ')}; ` +
        `messages_total released ${lag.released}, failed ${lag.failed}`,
    );
    console.log(
      `From the due second to the last message in the INBOX: gateway CPU ${lag.cpuPerMsg.toFixed(2)} ms per message, ` +
        `machine ${lag.busy.toFixed(0)}% busy (both cores)`,
    );
    console.log(`Gateway log lines at warn or above in the release-lag gateway: ${lag.warnings.length}`);
    for (const l of lag.warnings.slice(0, 5)) console.log(`  ${l.slice(0, 300)}`);
    if (byStore.length > 0) printLagByStore(byStore);
    console.log(`\nWhole run: ${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    await stack.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
