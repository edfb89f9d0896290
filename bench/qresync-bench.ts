/**
 * Quick reconnect with QRESYNC (issue 7): a client that had a mailbox of 1,000, 10,000 or
 * 50,000 messages in sync reconnects after a short disconnect (it vanished without LOGOUT,
 * as a phone losing its network does) during which 10 changes were made straight at
 * Dovecot: 6 flag changes, 2 expunges, 2 new messages (APPEND). Two ways, in one run:
 *   full     connect, LOGIN, SELECT, UID FETCH 1:* (UID FLAGS): what a client without
 *            QRESYNC does to learn what changed
 *   qresync  connect, LOGIN, ENABLE QRESYNC, SELECT box (QRESYNC (uidvalidity modseq)):
 *            VANISHED (EARLIER) and a FETCH per changed message only
 * against two targets:
 *   gateway  lemonade-gateway (implicit TLS) over the legacy Dovecot, which has neither
 *            CONDSTORE nor QRESYNC: the gateway emulates them with a full rescan
 *            (UID FETCH 1:* (FLAGS) on the client's upstream connection) at each SELECT
 *   native   the full-capability Dovecot with its own QRESYNC, no gateway (plain TCP: the
 *            sandbox Dovecot has no TLS), the peer an operator would compare with
 *            (BENCH_NATIVE=0 leaves it out)
 * and over two links: loopback, and a SlowLink (bench/throttle.ts: BENCH_LINK_BPS each way,
 * default 1 Mbit/s, BENCH_LINK_RTT_MS round trip, default 50 ms; BENCH_LINK_BPS=0 leaves it
 * out), a phone's link, where bytes and round trips cost time.
 * Per size, target and way: round trips (counted: TCP's handshake, TLS's as negotiated, the
 * greeting, one per command; no pipelining), the client's bytes (IMAP inside TLS, counted on
 * its socket from connect to the last tagged OK; on the slow link also the TLS records it
 * carried), wall time to the synchronized state (median of BENCH_REPEAT reconnects per link,
 * each after 10 fresh changes, both ways after the same changes), CPU the gateway and Dovecot
 * spent per reconnect (/proc utime+stime deltas, on loopback), and the gateway's
 * reconciliation time (lemonade_qresync_reconcile_duration_seconds deltas).
 * Every answer is checked against the bench's own model of the mailbox: the full resync
 * must give every UID with its flags, the QRESYNC resync exactly the expunged UIDs in
 * VANISHED (EARLIER) and exactly the changed and new UIDs in FETCH, with their flags.
 *
 * Not a test: run on demand with `bash bench/run.sh qresync`; results go in bench/RESULTS.md.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import type { ImapFlow } from 'imapflow';
import { bulkMaildir, masterClient, startLegacyStack, type LegacyStack } from '../test/helpers/stack.js';
import { metricValue, startGateway, type RunningGateway } from '../test/helpers/gateway.js';
import { RawImap } from '../test/helpers/imap-raw.js';
import { prng } from '../test/helpers/prng.js';
import { SlowLink } from './throttle.js';

const REPEAT = Number(process.env.BENCH_REPEAT ?? 5);
const SIZES = (process.env.BENCH_SIZES ?? '1000,10000,50000').split(',').map(Number);
const NATIVE = process.env.BENCH_NATIVE !== '0';
const LINK_BPS = Number(process.env.BENCH_LINK_BPS ?? 1_000_000);
const LINK_RTT_MS = Number(process.env.BENCH_LINK_RTT_MS ?? 50);
const FLAG_CHANGES = 6;
const EXPUNGES = 2;
const APPENDS = 2;
const TOGGLED = ['\\Flagged', '\\Seen', '\\Answered'];
const TICK_MS = 1000 / 100; // USER_HZ (getconf CLK_TCK) is 100 on Linux

function message(i: number): Buffer {
  return Buffer.from(
    `From: sender${i % 17}@example.org\r\nTo: alice@example.org\r\nSubject: message ${i}\r\n` +
      `Message-ID: <m${i}@example.org>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nBody of message ${i}.\r\n`,
  );
}

/** UID -> its flags, canonical (sorted, without \Recent, which is per session). */
type Model = Map<number, string>;

function canon(flags: string): string {
  return flags
    .split(' ')
    .filter((f) => f !== '' && f.toLowerCase() !== '\\recent')
    .sort()
    .join(' ');
}

interface Target {
  name: 'gateway' | 'native';
  port: number;
  /** The same port behind the slow link (0: no slow link). */
  slowPort: number;
  tls: boolean;
  stack: LegacyStack;
  gw?: RunningGateway;
  /** Master-user session at Dovecot that makes the changes. */
  master: ImapFlow;
}

/** One mailbox on one target, as the two clients last saw it. */
interface Box {
  target: Target;
  name: string;
  size: number;
  model: Model;
  uidValidity: number;
  highestModseq: bigint;
  rand: () => number;
  /** The last changes made: what the next reconnect must report. */
  last: { flagged: number[]; expunged: number[]; added: number[] };
  /** The gateway's first reconciliation of the mailbox (every message recorded), seconds. */
  firstReconcile?: number;
  firstSync: { full: number; qresync: number };
}

type Via = 'loopback' | 'slow';

interface Sample {
  ms: number;
  /** TLS records (or plain TCP payload) the slow link carried down to the client; 0 on loopback. */
  linkDown: number;
  linkUp: number;
  sent: number;
  received: number;
  roundTrips: number;
  commands: number;
  gatewayCpuMs: number;
  dovecotCpuMs: number;
  reconcileS: number;
  reconciles: number;
  warmReused: number;
}

function expectOk(lines: string[], tag: string): void {
  if (!lines.at(-1)?.startsWith(`${tag} OK`)) throw new Error(lines.slice(-3).join('\n'));
}

/** utime + stime of a process in clock ticks (0 once it is gone). */
function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

/** CPU ticks of every child of this stack's Dovecot master (imap, imap-login, auth, ...), by PID. */
function dovecotTicks(stack: LegacyStack): Map<number, number> {
  const master = Number(readFileSync(stack.dovecotPidFile, 'utf8').trim());
  const out = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) !== master && Number(e) !== master) continue;
      out.set(Number(e), Number(f[11]) + Number(f[12]));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function ticksDelta(before: Map<number, number>, after: Map<number, number>): number {
  let d = 0;
  for (const [pid, t] of after) d += t - (before.get(pid) ?? 0);
  return d;
}

/** What a reconnect costs, measured around run(): CPU, metrics, warm reuses. */
async function measured<T>(box: Box, run: () => Promise<{ result: T; client: RawImap; commands: number; ms: number }>): Promise<{ result: T; sample: Sample }> {
  const { gw, stack } = box.target;
  const m0 = gw ? await gw.metrics() : '';
  const l0 = link?.bytes ?? { up: 0, down: 0 };
  const g0 = gw ? cpuTicks(gw.pid) : 0;
  const d0 = dovecotTicks(stack);
  const { result, client, commands, ms } = await run();
  // Read before the client goes: Dovecot's process for this connection is still there.
  const g1 = gw ? cpuTicks(gw.pid) : 0;
  const d1 = dovecotTicks(stack);
  const protocol = box.target.tls ? (client.socket as TLSSocket).getProtocol() : null;
  client.close(); // vanish without LOGOUT
  const m1 = gw ? await gw.metrics() : '';
  const l1 = link?.bytes ?? { up: 0, down: 0 };
  const delta = (name: string, labels: Record<string, string> = {}) => (gw ? metricValue(m1, name, labels) - metricValue(m0, name, labels) : 0);
  const handshake = box.target.tls ? (protocol === 'TLSv1.3' ? 1 : 2) : 0;
  return {
    result,
    sample: {
      ms,
      linkDown: l1.down - l0.down,
      linkUp: l1.up - l0.up,
      sent: client.bytesSent,
      received: client.bytesReceived,
      // TCP handshake, TLS handshake as negotiated, the greeting (sent once the handshake is done), then one per command.
      roundTrips: 1 + handshake + 1 + commands,
      commands,
      gatewayCpuMs: (g1 - g0) * TICK_MS,
      dovecotCpuMs: ticksDelta(d0, d1) * TICK_MS,
      reconcileS: delta('lemonade_qresync_reconcile_duration_seconds_sum'),
      reconciles: delta('lemonade_qresync_reconcile_duration_seconds_count'),
      warmReused: delta('lemonade_imap_warm_upstream_total', { outcome: 'reused' }),
    },
  };
}

let link: SlowLink | undefined;

async function connect(target: Target, via: Via): Promise<RawImap> {
  const c = await RawImap.connect(via === 'slow' ? target.slowPort : target.port, { tls: target.tls });
  const greeting = await c.line();
  if (!greeting?.startsWith('* OK')) throw new Error(`${target.name}: greeting ${greeting}`);
  expectOk(await c.command('l', 'LOGIN alice password'), 'l');
  return c;
}

function parseFetches(lines: string[]): Array<{ uid: number; flags: string }> {
  const out: Array<{ uid: number; flags: string }> = [];
  for (const l of lines) {
    if (!/^\* [0-9]+ FETCH \(/.test(l)) continue;
    const uid = /[( ]UID ([0-9]+)/.exec(l)?.[1];
    const flags = /[( ]FLAGS \(([^)]*)\)/.exec(l)?.[1];
    if (uid === undefined || flags === undefined) throw new Error(`FETCH without UID or FLAGS: ${l}`);
    out.push({ uid: Number(uid), flags: canon(flags) });
  }
  return out;
}

function expandSet(set: string): number[] {
  const out: number[] = [];
  for (const part of set.split(',')) {
    const [a, b] = part.split(':').map(Number);
    for (let u = Math.min(a!, b ?? a!); u <= Math.max(a!, b ?? a!); u++) out.push(u);
  }
  return out;
}

function selectInfo(lines: string[]): { exists: number; uidValidity: number; highestModseq?: bigint } {
  const find = (re: RegExp) => lines.map((l) => re.exec(l)?.[1]).find((v) => v !== undefined);
  const exists = find(/^\* ([0-9]+) EXISTS/);
  const uv = find(/\[UIDVALIDITY ([0-9]+)\]/);
  const hm = find(/\[HIGHESTMODSEQ ([0-9]+)\]/);
  if (exists === undefined || uv === undefined) throw new Error(`no EXISTS/UIDVALIDITY in ${lines.join(' | ')}`);
  return { exists: Number(exists), uidValidity: Number(uv), ...(hm === undefined ? {} : { highestModseq: BigInt(hm) }) };
}

const sorted = (xs: Iterable<number>) => [...xs].sort((a, b) => a - b);
const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** (a) connect, LOGIN, SELECT, UID FETCH 1:* (UID FLAGS); the answer must match the model exactly. */
async function fullResync(box: Box, via: Via): Promise<Sample> {
  const { sample } = await measured(box, async () => {
    const started = performance.now();
    const c = await connect(box.target, via);
    const sel = await c.command('s', `SELECT ${box.name}`, 60_000);
    expectOk(sel, 's');
    const f = await c.command('f', 'UID FETCH 1:* (UID FLAGS)', 120_000);
    expectOk(f, 'f');
    const ms = performance.now() - started;
    const got = parseFetches(f);
    if (got.length !== box.model.size || selectInfo(sel).exists !== box.model.size) {
      throw new Error(`${box.target.name} ${box.name} full: ${got.length} messages, expected ${box.model.size}`);
    }
    for (const { uid, flags } of got) {
      if (box.model.get(uid) !== flags) throw new Error(`${box.target.name} ${box.name} full: UID ${uid} has (${flags}), expected (${box.model.get(uid)})`);
    }
    return { result: undefined, client: c, commands: 3, ms };
  });
  return sample;
}

/** (b) connect, LOGIN, ENABLE QRESYNC, SELECT (QRESYNC ...); exactly the last changes must come back. */
async function qresyncResync(box: Box, via: Via): Promise<Sample> {
  const { result, sample } = await measured(box, async () => {
    const started = performance.now();
    const c = await connect(box.target, via);
    const e = await c.command('e', 'ENABLE QRESYNC');
    expectOk(e, 'e');
    if (!e.some((l) => /^\* ENABLED .*QRESYNC/i.test(l))) throw new Error(`${box.target.name}: QRESYNC not enabled: ${e.join(' | ')}`);
    const lines = await c.command('s', `SELECT ${box.name} (QRESYNC (${box.uidValidity} ${box.highestModseq}))`, 120_000);
    expectOk(lines, 's');
    const ms = performance.now() - started;
    return { result: lines, client: c, commands: 3, ms };
  });
  const what = `${box.target.name} ${box.name} qresync`;
  const info = selectInfo(result);
  if (info.highestModseq === undefined || info.highestModseq <= box.highestModseq) throw new Error(`${what}: HIGHESTMODSEQ ${info.highestModseq} not above ${box.highestModseq}`);
  if (info.exists !== box.model.size) throw new Error(`${what}: ${info.exists} EXISTS, expected ${box.model.size}`);
  const vanished = sorted(result.filter((l) => l.startsWith('* VANISHED (EARLIER) ')).flatMap((l) => expandSet(l.slice(21))));
  if (!same(vanished, sorted(box.last.expunged))) throw new Error(`${what}: VANISHED (EARLIER) ${vanished.join(',')}, expected ${sorted(box.last.expunged).join(',')}`);
  const fetched = parseFetches(result);
  const expected = sorted([...box.last.flagged, ...box.last.added]);
  if (!same(sorted(fetched.map((f) => f.uid)), expected)) throw new Error(`${what}: FETCH for ${sorted(fetched.map((f) => f.uid)).join(',')}, expected ${expected.join(',')}`);
  for (const { uid, flags } of fetched) {
    if (box.model.get(uid) !== flags) throw new Error(`${what}: UID ${uid} has (${flags}), expected (${box.model.get(uid)})`);
  }
  box.highestModseq = info.highestModseq;
  return sample;
}

/** 6 flag changes, 2 expunges, 2 APPENDs straight at Dovecot; the model follows. */
async function makeChanges(box: Box): Promise<void> {
  const master = box.target.master;
  const opened = await master.mailboxOpen(box.name);
  const uidNext = Number(opened.uidNext);
  const uids = [...box.model.keys()];
  const picked = new Set<number>();
  while (picked.size < FLAG_CHANGES + EXPUNGES) picked.add(uids[Math.floor(box.rand() * uids.length)]!);
  const [flagged, expunged] = [[...picked].slice(0, FLAG_CHANGES), [...picked].slice(FLAG_CHANGES)];
  for (const [i, uid] of flagged.entries()) {
    const flag = TOGGLED[i % TOGGLED.length]!;
    const now = new Set(box.model.get(uid)!.split(' ').filter((f) => f !== ''));
    if (now.has(flag)) {
      await master.messageFlagsRemove(String(uid), [flag], { uid: true });
      now.delete(flag);
    } else {
      await master.messageFlagsAdd(String(uid), [flag], { uid: true });
      now.add(flag);
    }
    box.model.set(uid, canon([...now].join(' ')));
  }
  await master.messageDelete(expunged.join(','), { uid: true });
  for (const uid of expunged) box.model.delete(uid);
  const added: number[] = [];
  for (let i = 0; i < APPENDS; i++) {
    await master.append(box.name, message(uidNext + i));
    added.push(uidNext + i);
    box.model.set(uidNext + i, '');
  }
  box.last = { flagged, expunged, added };
}

/** Fills the folder, lets Dovecot index it, and does the first sync of both clients. */
async function prepare(target: Target, size: number, seed: number): Promise<Box> {
  const name = `Bench${size}`;
  const filled = performance.now();
  bulkMaildir(target.stack, 'alice', name, size, message);
  const fillMs = performance.now() - filled;
  const indexed = performance.now();
  const opened = await target.master.mailboxOpen(name);
  if (opened.exists !== size) throw new Error(`${target.name} ${name}: ${opened.exists} messages after the fill`);
  console.error(`${target.name} ${name}: filled in ${(fillMs / 1000).toFixed(1)} s, indexed by Dovecot in ${((performance.now() - indexed) / 1000).toFixed(1)} s`);
  await target.master.mailboxClose();
  const model: Model = new Map();
  // bulkMaildir's flags: every seventh \Flagged and \Seen, every third \Seen.
  for (let i = 1; i <= size; i++) model.set(i, i % 7 === 0 ? '\\Flagged \\Seen' : i % 3 === 0 ? '\\Seen' : '');
  const box: Box = {
    target, name, size, model, uidValidity: 0, highestModseq: 0n, rand: prng(seed),
    last: { flagged: [], expunged: [], added: [] }, firstSync: { full: 0, qresync: 0 },
  };
  // The QRESYNC client's first sync: ENABLE QRESYNC, SELECT; it notes UIDVALIDITY and HIGHESTMODSEQ.
  const q = await measured(box, async () => {
    const started = performance.now();
    const c = await connect(target, 'loopback');
    expectOk(await c.command('e', 'ENABLE QRESYNC'), 'e');
    const lines = await c.command('s', `SELECT ${name}`, 300_000);
    expectOk(lines, 's');
    return { result: lines, client: c, commands: 3, ms: performance.now() - started };
  });
  const info = selectInfo(q.result);
  if (info.highestModseq === undefined) throw new Error(`${target.name} ${name}: no HIGHESTMODSEQ`);
  box.uidValidity = info.uidValidity;
  box.highestModseq = info.highestModseq;
  box.firstSync.qresync = q.sample.ms;
  if (target.gw) box.firstReconcile = q.sample.reconcileS;
  // The full-resync client's first sync: every UID and its flags (checked against the model).
  box.firstSync.full = (await fullResync(box, 'loopback')).ms;
  return box;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const legacy = await startLegacyStack({ postfix: false });
  // Logging at info, the deployed default (the test harness's debug logs every command).
  const gw = await startGateway(legacy, { config: { log: { level: 'info' } } });
  link = LINK_BPS > 0 ? new SlowLink({ bitsPerSecond: LINK_BPS, rttMs: LINK_RTT_MS }) : undefined;
  const vias: Via[] = link ? ['loopback', 'slow'] : ['loopback'];
  const targets: Target[] = [
    {
      name: 'gateway', port: gw.imapsPort, slowPort: (await link?.forward(gw.imapsPort)) ?? 0, tls: true,
      stack: legacy, gw, master: await masterClient(legacy, 'alice'),
    },
  ];
  let full: LegacyStack | undefined;
  if (NATIVE) {
    full = await startLegacyStack({ mode: 'full', postfix: false });
    targets.push({
      name: 'native', port: full.imapPort, slowPort: (await link?.forward(full.imapPort)) ?? 0, tls: false,
      stack: full, master: await masterClient(full, 'alice'),
    });
  }
  const rows: string[] = [];
  const costRows: string[] = [];
  const firstRows: string[] = [];
  const range = (xs: number[]) => {
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    return lo === hi ? lo.toLocaleString('en') : `${lo.toLocaleString('en')}–${hi.toLocaleString('en')}`;
  };
  const timing = (xs: number[]) => (xs.length === 0 ? '–' : `${median(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`);
  try {
    for (const size of SIZES) {
      const boxes: Box[] = [];
      for (const target of targets) boxes.push(await prepare(target, size, size));
      const samples = new Map<string, Sample[]>();
      const get = (key: string) => samples.get(key) ?? [];
      for (let r = 0; r < REPEAT; r++) {
        for (const box of boxes) {
          for (const via of vias) {
            await makeChanges(box);
            // Both ways after the same changes (the full-resync client does not touch the
            // gateway's mod-sequence state), in turns first so caches favour neither.
            const order = r % 2 === 0 ? (['full', 'qresync'] as const) : (['qresync', 'full'] as const);
            for (const way of order) {
              const s = way === 'full' ? await fullResync(box, via) : await qresyncResync(box, via);
              const key = `${box.target.name} ${via} ${way}`;
              samples.set(key, [...get(key), s]);
              console.error(
                `${size} ${key} #${r + 1}: ${s.ms.toFixed(0)} ms, ${s.received} B in, link ${s.linkDown} B down, ` +
                  `gateway CPU ${s.gatewayCpuMs} ms, Dovecot CPU ${s.dovecotCpuMs} ms, reconcile ${(s.reconcileS * 1000).toFixed(0)} ms, warm ${s.warmReused}`,
              );
            }
          }
        }
      }
      for (const box of boxes) {
        const t = box.target;
        for (const way of ['full', 'qresync'] as const) {
          const lo = get(`${t.name} loopback ${way}`);
          const slow = get(`${t.name} slow ${way}`);
          const all = [...lo, ...slow];
          rows.push(
            `| ${size.toLocaleString('en')} | ${t.name}${t.tls ? ' (TLS)' : ' (plain)'} | ${way} | ${lo[0]!.roundTrips} | ${range(all.map((x) => x.sent))} | ${range(all.map((x) => x.received))} | ` +
              `${slow.length > 0 ? range(slow.map((x) => x.linkDown)) : '–'} | ${timing(lo.map((x) => x.ms))} | ${timing(slow.map((x) => x.ms))} | ` +
              `${t.gw ? mean(lo.map((x) => x.gatewayCpuMs)).toFixed(0) : '–'} | ${mean(lo.map((x) => x.dovecotCpuMs)).toFixed(0)} |`,
          );
          console.error(rows.at(-1));
        }
        if (t.gw) {
          const q = [...get(`${t.name} loopback qresync`), ...get(`${t.name} slow qresync`)];
          const f = [...get(`${t.name} loopback full`), ...get(`${t.name} slow full`)];
          const rec = q.reduce((a, x) => a + x.reconcileS, 0);
          const n = q.reduce((a, x) => a + x.reconciles, 0);
          const warm = [...q, ...f].reduce((a, x) => a + x.warmReused, 0);
          costRows.push(
            `| ${size.toLocaleString('en')} | ${((box.firstReconcile ?? 0) * 1000).toFixed(0)} | ${n} | ${n > 0 ? ((rec / n) * 1000).toFixed(0) : '–'} | ` +
              `${timing(q.map((x) => x.reconcileS * 1000))} | ${mean(get(`${t.name} loopback qresync`).map((x) => x.gatewayCpuMs)).toFixed(0)} | ` +
              `${mean(get(`${t.name} loopback full`).map((x) => x.gatewayCpuMs)).toFixed(0)} | ${warm}/${q.length + f.length} |`,
          );
          console.error(costRows.at(-1));
        }
        firstRows.push(`| ${size.toLocaleString('en')} | ${t.name} | ${box.firstSync.qresync.toFixed(0)} | ${box.firstSync.full.toFixed(0)} |`);
        console.error(firstRows.at(-1));
      }
    }
  } finally {
    for (const t of targets) await t.master.logout().catch(() => t.master.close());
    await link?.close();
    await gw.stop();
    await legacy.stop();
    await full?.stop();
  }
  const slowName = link ? `${LINK_BPS / 1e6} Mbit/s, ${LINK_RTT_MS} ms RTT` : 'no slow link';
  console.log(`\nReconnect after 10 changes (6 flag changes, 2 expunges, 2 APPENDs), median of ${REPEAT} per link (min–max):\n`);
  console.log(`| messages | target | way | round trips | client bytes sent | client bytes received | link bytes down | loopback ms | ${slowName} ms | gateway CPU ms | Dovecot CPU ms |`);
  console.log('|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(r);
  console.log("\nThe gateway's reconciliation (full rescan, lemonade_qresync_reconcile_duration_seconds) per mailbox size, QRESYNC reconnects on both links:\n");
  console.log('| messages | first reconcile ms (records every message) | reconciles | mean ms | median ms (min–max) | gateway CPU ms per QRESYNC reconnect | gateway CPU ms per full resync | warm upstream reused |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of costRows) console.log(r);
  console.log('\nFirst sync (loopback; not part of the comparison: the QRESYNC client gets no flags here, the gateway records every message):\n');
  console.log('| messages | target | ENABLE QRESYNC + SELECT ms | SELECT + UID FETCH 1:* (UID FLAGS) ms |');
  console.log('|---:|---|---:|---:|');
  for (const r of firstRows) console.log(r);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
