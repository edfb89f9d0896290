/**
 * The QRESYNC reconciler (RFC 7162 emulated) against the real legacy Dovecot: a side
 * connection logged in through the master user EXAMINEs the mailbox and streams UID FETCH
 * 1:* (FLAGS) into the store. First run records every message; flag changes, expunges and
 * appends made by another session come out as exactly those changes and VANISHED UIDs;
 * \Recent never counts; a UIDVALIDITY change starts over; a slow store gives the same
 * answer (with the upstream paused meanwhile), a failing one rejects; and a 50,000-message
 * mailbox is reconciled with its heap growth measured against holding the responses.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { ImapFlow } from 'imapflow';
import { bulkMaildir, masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { UpstreamConnection, loginUpstream } from '../src/imap/upstream.js';
import { astringParts } from '../src/imap/protocol/writer.js';
import { fetchAttributes, numberValue } from '../src/imap/protocol/responses.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { ModseqStateGone, type ModseqIndex } from '../src/store/store.js';
import { MailboxReconciler, ReconcileOrderError, reconcileMailbox, type RescanNotes } from '../src/lemonade/qresync/reconcile.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let stack: LegacyStack;
let config: Config;
const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-reconcile-'));
const open: UpstreamConnection[] = [];
const clients: ImapFlow[] = [];

t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  config = configSchema.parse({ imap: { upstream: { host: stack.imapHost, port: stack.imapPort }, master: stack.master } });
});
t.teardown(async () => {
  for (const c of clients) await c.logout().catch(() => c.close());
  for (const c of open) c.destroy();
  await stack?.stop();
});

const message = (i: number) =>
  Buffer.from(`From: bob@example.org\r\nTo: alice@example.org\r\nSubject: message ${i}\r\nMessage-ID: <m${i}.${Date.now()}@example.org>\r\n\r\nbody ${i}\r\n`);

/** A side connection as the gateway makes them: the master identity, the user as authzid. */
async function side(user: string): Promise<UpstreamConnection> {
  const conn = await UpstreamConnection.open(config.imap.upstream);
  open.push(conn);
  const login = await loginUpstream(conn, { user: stack.master.user, password: stack.master.password, authzid: user, mechanism: 'plain' });
  if (login.status !== 'OK') throw new Error(`side login as ${user}: ${login.text}`);
  return conn;
}

/** EXAMINE (RFC 3501 §6.3.2): read-only, so the rescan takes no \Recent and sets no \Seen. */
async function examine(conn: UpstreamConnection, mailbox: string): Promise<{ uidValidity: number; exists: number }> {
  const r = await conn.command(['EXAMINE ', ...astringParts(mailbox)]);
  if (r.status !== 'OK') throw new Error(`EXAMINE ${mailbox}: ${r.text}`);
  const code = r.codes.find((c) => /^UIDVALIDITY /i.test(c));
  const exists = r.untagged.find((l) => l.items[1]?.type === 'atom' && l.items[1].value.toUpperCase() === 'EXISTS');
  const n = exists?.items[0];
  return { uidValidity: Number(code!.split(' ')[1]), exists: n?.type === 'atom' ? Number(n.value) : 0 };
}

/** Another session of the user, doing what a mail client does upstream. */
async function direct(user: string): Promise<ImapFlow> {
  const client = await masterClient(stack, user);
  clients.push(client);
  return client;
}

async function upstreamUids(client: ImapFlow, mailbox: string): Promise<number[]> {
  const lock = await client.getMailboxLock(mailbox);
  try {
    const found = await client.search({ all: true }, { uid: true });
    return (found || []).sort((a, b) => a - b);
  } finally {
    lock.release();
  }
}

/** EXAMINE, open the state for its UIDVALIDITY, reconcile. */
async function rescan(conn: UpstreamConnection, index: ModseqIndex, user: string, mailbox: string, opts: { batch?: number; notes?: RescanNotes } = {}) {
  const { uidValidity, exists } = await examine(conn, mailbox);
  const state = await index.modseqOpen(user, mailbox, uidValidity);
  const result = await reconcileMailbox(conn, index, state, { expectedCount: exists, ...opts });
  return { state, result, exists };
}

t.test('first run records all; then exactly the changes, expunges and new messages', async (t) => {
  const store = SqliteStore.open(path.join(dir, 'basic', 'store.sqlite'));
  t.teardown(() => store.close());
  const client = await direct('alice');
  await client.mailboxCreate('Recon');
  for (let i = 1; i <= 10; i++) await client.append('Recon', message(i));
  const conn = await side('alice');

  const first = await rescan(conn, store, 'alice', 'Recon');
  const h0 = first.state.highestModseq;
  t.same([...first.result.uids], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  t.match(first.result, { count: 10, changed: 10, expunged: 0, highestModseq: h0 + 10 }, 'every message is new the first time');
  const stored = await store.modseqRange(first.state.id, 0, 100);
  t.same(stored.map((m) => m.modseq), Array.from({ length: 10 }, (_, i) => h0 + 1 + i), 'mod-sequences in UID order');
  t.ok(stored.every((m) => m.flags.length === 0), 'EXAMINE shows \\Recent on each; it is not stored');

  // A SELECT elsewhere takes \Recent away (RFC 3501 §2.3.2): still no change.
  const lock = await client.getMailboxLock('Recon');
  lock.release();
  const quiet = await rescan(conn, store, 'alice', 'Recon');
  t.match(quiet.result, { count: 10, changed: 0, expunged: 0, highestModseq: h0 + 10 }, 'nothing changed, nothing recorded');
  t.equal(quiet.state.id, first.state.id);

  // Flags on 3, 2 expunged, 1 appended: by another session, straight upstream.
  const lock2 = await client.getMailboxLock('Recon');
  try {
    await client.messageFlagsAdd('2', ['\\Seen'], { uid: true });
    await client.messageFlagsAdd('5', ['\\Flagged', 'Urgent'], { uid: true });
    await client.messageFlagsAdd('7', ['\\Answered'], { uid: true });
    await client.messageFlagsAdd('3,9', ['\\Deleted'], { uid: true });
    await client.mailboxClose(); // CLOSE expunges the \Deleted ones (RFC 3501 §6.4.2)
  } finally {
    lock2.release();
  }
  await client.append('Recon', message(11));
  const previous = quiet.result.highestModseq;
  const second = await rescan(conn, store, 'alice', 'Recon');
  t.match(second.result, { count: 9, changed: 4, expunged: 2 }, '3 flag changes + 1 new, 2 expunged');
  t.same([...second.result.uids], await upstreamUids(client, 'Recon'), 'the UID list is the upstream\'s');
  t.same([...second.result.uids], [1, 2, 4, 5, 6, 7, 8, 10, 11]);

  const changed = await store.modseqChangedSince(second.state.id, previous, 0, 100);
  t.same(
    changed.map((m) => [m.uid, m.flags.join(' ')]),
    [[2, '\\Seen'], [5, '\\Flagged Urgent'], [7, '\\Answered'], [11, '']],
    'CHANGEDSINCE the previous HIGHESTMODSEQ: exactly those 4',
  );
  const modseqs = changed.map((m) => m.modseq);
  t.ok(modseqs.every((m, i) => m > previous && (i === 0 || m > modseqs[i - 1]!)), 'new and increasing (in UID order)');
  t.same(await store.modseqVanishedSince(second.state.id, previous), [3, 9], 'VANISHED (EARLIER) 3,9');
  t.equal(second.result.highestModseq, previous + 6, 'one mod-sequence per change and per expunge');
  t.equal(second.result.highestModseq, (await store.modseqState(second.state.id)).highestModseq);

  // Compaction keeps the newest expunge only: a client from before both gets a full answer.
  await store.modseqCompact(second.state.id, 1);
  t.equal(await store.modseqVanishedSince(second.state.id, previous), 'too-old');
  const { vanishedFloor } = await store.modseqState(second.state.id);
  t.same(await store.modseqVanishedSince(second.state.id, vanishedFloor), [9]);

  // And the connection is still fine for more.
  t.equal(conn.busy, false);
  t.equal((await conn.command(['NOOP'])).status, 'OK');
});

t.test('a new UIDVALIDITY starts over; an empty mailbox reconciles to nothing', async (t) => {
  const store = SqliteStore.open(path.join(dir, 'uidvalidity', 'store.sqlite'));
  t.teardown(() => store.close());
  const client = await direct('bob');
  await client.mailboxCreate('Again');
  for (let i = 1; i <= 3; i++) await client.append('Again', message(i));
  const conn = await side('bob');
  const before = await rescan(conn, store, 'bob', 'Again');
  t.equal(before.result.changed, 3);

  await client.mailboxDelete('Again');
  await client.mailboxCreate('Again');
  const conn2 = await side('bob');
  const empty = await rescan(conn2, store, 'bob', 'Again');
  t.not(empty.state.id, before.state.id, 'a new state for the new UIDVALIDITY');
  t.match(empty.result, { count: 0, changed: 0, expunged: 0, highestModseq: empty.state.highestModseq });
  t.equal(empty.result.uids.length, 0);
  t.ok(empty.state.highestModseq > before.result.highestModseq, 'mod-sequences keep rising across the change');
  await t.rejects(store.modseqState(before.state.id), ModseqStateGone, 'the old state is gone');

  for (let i = 1; i <= 2; i++) await client.append('Again', message(i));
  const after = await rescan(conn2, store, 'bob', 'Again');
  t.match(after.result, { count: 2, changed: 2, expunged: 0 });
});

/** A store answering late (timers) and counting its calls; optionally failing one call. */
function slowIndex(inner: ModseqIndex, opts: { failRecordAt?: number; throwRangeSync?: boolean } = {}) {
  let records = 0;
  const calls = { range: 0, record: 0 };
  const later = <T>(value: () => Promise<T>): Promise<T> =>
    new Promise((resolve, reject) => setTimeout(() => value().then(resolve, reject), calls.record % 3));
  const index: ModseqIndex = {
    ...bind(inner),
    modseqRange(id, afterUid, limit) {
      calls.range++;
      if (opts.throwRangeSync && calls.range > 2) throw new Error('range blew up synchronously');
      return later(() => inner.modseqRange(id, afterUid, limit));
    },
    modseqRecord(id, change) {
      calls.record++;
      if (++records === opts.failRecordAt) return Promise.reject(new Error('disk on fire'));
      return later(() => inner.modseqRecord(id, change));
    },
  };
  return { index, calls };
}

function bind(inner: ModseqIndex): ModseqIndex {
  return {
    modseqOpen: inner.modseqOpen.bind(inner),
    modseqRange: inner.modseqRange.bind(inner),
    modseqRecord: inner.modseqRecord.bind(inner),
    modseqChangedSince: inner.modseqChangedSince.bind(inner),
    modseqVanishedSince: inner.modseqVanishedSince.bind(inner),
    modseqGet: inner.modseqGet.bind(inner),
    modseqCompact: inner.modseqCompact.bind(inner),
    modseqState: inner.modseqState.bind(inner),
  };
}

t.test('a slow store gives the same answer in small batches; a failing one rejects', async (t) => {
  const fast = SqliteStore.open(path.join(dir, 'fast', 'store.sqlite'));
  const slowStore = SqliteStore.open(path.join(dir, 'slow', 'store.sqlite'));
  const streamStore = SqliteStore.open(path.join(dir, 'stream', 'store.sqlite'));
  t.teardown(async () => {
    await fast.close();
    await slowStore.close();
    await streamStore.close();
  });
  const client = await direct('carol');
  await client.mailboxCreate('Slow');
  for (let i = 1; i <= 300; i++) await client.append('Slow', message(i));
  const conn = await side('carol');
  const slow = slowIndex(slowStore);
  const stream = slowIndex(streamStore);
  // The upstream socket paused and resumed by the reconciler while the slow store lags.
  const flow = { pauses: 0, resumes: 0 };
  const pause = conn.pause.bind(conn);
  const resume = conn.resume.bind(conn);
  conn.pause = () => {
    flow.pauses++;
    pause();
  };
  conn.resume = () => {
    flow.resumes++;
    resume();
  };

  const compare = async (label: string) => {
    const a = await rescan(conn, fast, 'carol', 'Slow');
    const { uidValidity } = await examine(conn, 'Slow');
    const state = await slow.index.modseqOpen('carol', 'Slow', uidValidity);
    let pauses = 0;
    const reconciler = new MailboxReconciler(slow.index, state, { batch: 7, highWater: 20, pause: () => pauses++ });
    // Pushed all at once, as fast as a socket could: the queue runs ahead of the store.
    const rows = await conn.command(['UID FETCH 1:* (FLAGS)']);
    for (const line of rows.untagged) {
      const attrs = fetchAttributes(line);
      const flags = attrs?.get('FLAGS');
      if (attrs === undefined || flags?.type !== 'list') continue;
      reconciler.push(numberValue(attrs.get('UID'))!, flags.items.map((v) => (v.type === 'atom' ? v.value : '')));
    }
    const b = await reconciler.finish();
    t.same([...b.uids], [...a.result.uids], `${label}: same UIDs`);
    t.same([b.count, b.changed, b.expunged], [a.result.count, a.result.changed, a.result.expunged], `${label}: same counts`);
    t.ok(pauses > 0, `${label}: the source was asked to pause (${pauses} times)`);
    const page = async (index: ModseqIndex, id: number) => (await index.modseqRange(id, 0, 1000)).map((m) => [m.uid, m.flags.join(' ')]);
    t.same(await page(slow.index, state.id), await page(fast, a.state.id), `${label}: same stored flags`);

    // Streamed from the socket into the slow store, small batches: paused and resumed, nothing lost.
    const before = { ...flow };
    const c = await rescan(conn, stream.index, 'carol', 'Slow', { batch: 3 });
    t.same([...c.result.uids], [...a.result.uids], `${label}, streamed: same UIDs`);
    t.same([c.result.count, c.result.changed, c.result.expunged], [a.result.count, a.result.changed, a.result.expunged], `${label}, streamed: same counts`);
    t.same(await page(streamStore, c.state.id), await page(fast, a.state.id), `${label}, streamed: same stored flags`);
    t.ok(flow.pauses > before.pauses && flow.resumes - before.resumes === flow.pauses - before.pauses,
      `${label}, streamed: the upstream was paused ${flow.pauses - before.pauses} times, resumed as often`);
  };
  await compare('first run');
  const lock = await client.getMailboxLock('Slow');
  try {
    await client.messageFlagsAdd('1:300:7', ['\\Seen'], { uid: true });
    await client.messageFlagsAdd('10:40', ['\\Deleted'], { uid: true });
    await client.mailboxClose();
  } finally {
    lock.release();
  }
  await compare('after changes');
  t.ok(slow.calls.range > 40 && slow.calls.record > 40, `read and written in batches of 7 (${slow.calls.range} reads, ${slow.calls.record} writes)`);

  // A store that fails: reconcileMailbox rejects with its error, and the connection stays usable.
  const lock2 = await client.getMailboxLock('Slow');
  try {
    await client.messageFlagsAdd('41:100', ['\\Flagged'], { uid: true });
  } finally {
    lock2.release();
  }
  const failing = slowIndex(slowStore, { failRecordAt: 2 });
  const { uidValidity } = await examine(conn, 'Slow');
  const state = await slowStore.modseqOpen('carol', 'Slow', uidValidity);
  await t.rejects(reconcileMailbox(conn, failing.index, state, { batch: 10 }), /disk on fire/);
  t.equal(conn.busy, false);
  t.equal((await conn.command(['NOOP'])).status, 'OK', 'the side connection is still in step');

  const throwing = slowIndex(slowStore, { throwRangeSync: true });
  await t.rejects(reconcileMailbox(conn, throwing.index, state, { batch: 10 }), /range blew up synchronously/, 'a synchronous throw too');

  // Recovers on the next run: what the failed runs recorded stays true.
  const healed = await reconcileMailbox(conn, slowStore, state);
  const check = await rescan(conn, fast, 'carol', 'Slow');
  t.same([...healed.uids], [...check.result.uids]);
  t.same(
    (await slowStore.modseqRange(state.id, 0, 1000)).map((m) => [m.uid, m.flags.join(' ')]),
    (await fast.modseqRange(check.state.id, 0, 1000)).map((m) => [m.uid, m.flags.join(' ')]),
  );
});

t.test('rows must ascend; a repeated UID (an unsolicited update) is skipped', async (t) => {
  const store = SqliteStore.open(path.join(dir, 'order', 'store.sqlite'));
  t.teardown(() => store.close());
  const state = await store.modseqOpen('alice', 'Order', 1);
  const ok = new MailboxReconciler(store, state, { batch: 2 });
  for (const uid of [1, 2, 5]) ok.push(uid, []);
  ok.push(2, ['\\Seen']);
  ok.push(5, ['\\Seen']);
  ok.push(8, []);
  const done = await ok.finish();
  t.same([...done.uids], [1, 2, 5, 8]);
  t.equal(ok.repeated, 2);

  const bad = new MailboxReconciler(store, state);
  bad.push(4, []);
  bad.push(3, []);
  bad.push(9, []);
  await t.rejects(bad.finish(), ReconcileOrderError);
  t.same((await store.modseqRange(state.id, 0, 10)).map((m) => m.uid), [1, 2, 5, 8], 'nothing recorded from the bad run');

  // A row pushed once finish() was called would be missing from its result: an error.
  const late = new MailboxReconciler(store, state);
  const finished = late.finish();
  late.push(20, []);
  await t.rejects(finished, ReconcileOrderError, 'a push after finish() rejects it');
  t.same((await store.modseqRange(state.id, 0, 10)).map((m) => m.uid), [1, 2, 5, 8], 'and records nothing');
});

t.test('50,000 messages: streamed, heap bounded, timed', async (t) => {
  const n = 50_000;
  const user = 'bob';
  const store = SqliteStore.open(path.join(dir, 'big', 'store.sqlite'));
  t.teardown(() => store.close());
  let t0 = Date.now();
  bulkMaildir(stack, user, 'Bulk', n, message);
  const built = Date.now() - t0;
  const conn = await side(user);
  t0 = Date.now();
  const { uidValidity, exists } = await examine(conn, 'Bulk');
  const indexed = Date.now() - t0;
  t.equal(exists, n);

  // What holding every parsed response would cost: the same command, collected.
  gc();
  const base = process.memoryUsage().heapUsed;
  const holding = await (async () => {
    const held = await conn.command(['UID FETCH 1:* (FLAGS)']);
    gc();
    const cost = process.memoryUsage().heapUsed - base;
    t.equal(held.untagged.length, n);
    return cost;
  })();

  // The reconciliation, with the heap measured (after a full GC) every few store calls.
  const state = await store.modseqOpen(user, 'Bulk', uidValidity);
  let peak = 0;
  let calls = 0;
  const sample = () => {
    if (++calls % 10 !== 0) return;
    gc();
    peak = Math.max(peak, process.memoryUsage().heapUsed - before);
  };
  const measured: ModseqIndex = {
    ...bind(store),
    modseqRange(id, afterUid, limit) {
      sample();
      return store.modseqRange(id, afterUid, limit);
    },
    modseqRecord(id, change) {
      sample();
      return store.modseqRecord(id, change);
    },
  };
  gc();
  const before = process.memoryUsage().heapUsed;
  t0 = Date.now();
  const first = await reconcileMailbox(conn, measured, state, { expectedCount: exists });
  const firstMs = Date.now() - t0;
  t.match(first, { count: n, changed: n, expunged: 0, highestModseq: state.highestModseq + n });
  t.equal(first.uids[0], 1);
  t.equal(first.uids[n - 1], n);
  t.ok(calls >= 100, `${calls} store calls (50,000 rows written in batches)`);

  // Nothing changed: a full compare that records nothing.
  await examine(conn, 'Bulk');
  t0 = Date.now();
  const second = await reconcileMailbox(conn, measured, state, { expectedCount: exists });
  const secondMs = Date.now() - t0;
  t.match(second, { count: n, changed: 0, expunged: 0, highestModseq: first.highestModseq });

  // A few changes somewhere in the middle.
  const client = await direct(user);
  const lock = await client.getMailboxLock('Bulk');
  try {
    await client.messageFlagsAdd('25000:25009', ['\\Answered'], { uid: true });
    await client.messageFlagsAdd('49990', ['\\Deleted'], { uid: true });
    await client.mailboxClose();
  } finally {
    lock.release();
  }
  await examine(conn, 'Bulk');
  t0 = Date.now();
  const third = await reconcileMailbox(conn, measured, state, { expectedCount: n - 1 });
  const thirdMs = Date.now() - t0;
  t.match(third, { count: n - 1, changed: 10, expunged: 1 });
  t.same(
    (await store.modseqChangedSince(state.id, second.highestModseq, 0, 100)).map((m) => m.uid),
    Array.from({ length: 10 }, (_, i) => 25000 + i),
  );
  t.same(await store.modseqVanishedSince(state.id, second.highestModseq), [49990]);

  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MB`;
  t.comment(
    `50,000 messages: maildir written in ${built} ms, first EXAMINE ${indexed} ms; ` +
      `reconcile: first (all new) ${firstMs} ms, unchanged ${secondMs} ms, 11 changes ${thirdMs} ms; ` +
      `heap: ${mb(holding)} to hold the parsed responses, peak growth while reconciling ${mb(peak)}`,
  );
  t.ok(holding > 10 * 1024 * 1024, `holding 50,000 parsed responses costs ${mb(holding)}`);
  t.ok(peak < holding / 5, `the streamed reconciliation grew the heap by ${mb(peak)} at most`);
});
