/**
 * The mod-sequence state of the store (CONDSTORE/QRESYNC emulation, RFC 7162): opening per
 * (user, mailbox, UIDVALIDITY), recording changes and expunges with increasing
 * mod-sequences, CHANGEDSINCE paging over both query plans, VANISHED with compaction and
 * 'too-old', dropping on a UIDVALIDITY change, canonical flags, and processes sharing one
 * file never handing out a mod-sequence twice. Real SQLite files; the race uses real processes.
 */
import t from 'tap';
import { fork } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../src/store/sqlite.js';
import { ModseqStateGone, type MessageModseq } from '../src/store/store.js';
import { canonicalFlags, flagsKey, flagsFromKey } from '../src/lemonade/qresync/flags.js';
import { prng } from './helpers/prng.js';

const thisFile = fileURLToPath(import.meta.url);

// Child mode for the cross-process race: record many small batches of new messages, report the mod-sequences.
if (process.argv[2] === 'race') {
  const [file, firstUid, batches] = [process.argv[3]!, Number(process.argv[4]), Number(process.argv[5])];
  const store = SqliteStore.open(file);
  const state = await store.modseqOpen('racer', 'INBOX', 7);
  await new Promise<void>((resolve) => {
    process.on('message', (m) => (m as { go?: boolean }).go && resolve());
    process.send!({ ready: true });
  });
  const got: number[] = [];
  let uid = firstUid;
  for (let b = 0; b < batches; b++) {
    const changed = Array.from({ length: 5 }, () => ({ uid: uid++, flags: ['\\Seen'] }));
    // A shared message too: whoever records a given flag set first gets the new mod-sequence.
    changed.push({ uid: 1, flags: b % 2 ? ['\\Flagged'] : [] });
    const { modseqs, highestModseq } = await store.modseqRecord(state.id, { changed, expunged: [] });
    got.push(...modseqs.slice(0, 5));
    // The first batches wait (bounded) for another process to write, so the runs interleave
    // however the machine schedules the processes; the rest race freely.
    const until = Date.now() + 2000;
    while (b < 10 && Date.now() < until && (await store.modseqState(state.id)).highestModseq === highestModseq) {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  await store.close();
  process.send!({ raced: got }, () => process.exit(0));
} else {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-modseq-'));
  const file = (name: string) => path.join(dir, name, 'store.sqlite');
  const msgs = (from: number, to: number, flags: string[] = []) =>
    Array.from({ length: to - from + 1 }, (_, i) => ({ uid: from + i, flags }));

  /** Every stored message, through modseqRange pages. */
  async function all(store: SqliteStore, id: number, page = 100): Promise<MessageModseq[]> {
    const out: MessageModseq[] = [];
    for (let after = 0; ; ) {
      const rows = await store.modseqRange(id, after, page);
      out.push(...rows);
      if (rows.length < page) return out;
      after = rows.at(-1)!.uid;
    }
  }

  /** modseqChangedSince paged with afterUid, as a session would. */
  async function changedSince(store: SqliteStore, id: number, since: number, page: number): Promise<MessageModseq[]> {
    const out: MessageModseq[] = [];
    for (let after = 0; ; ) {
      const rows = await store.modseqChangedSince(id, since, after, page);
      out.push(...rows);
      if (rows.length < page) return out;
      after = rows.at(-1)!.uid;
    }
  }

  t.test('canonical flag sets', async (t) => {
    t.same(canonicalFlags(['$Forwarded', '\\seen', '\\Recent', 'Foo', '\\FLAGGED', '\\Seen', '', 'Bar']), [
      '\\Seen',
      '\\Flagged',
      '$Forwarded',
      'Bar',
      'Foo',
    ]);
    t.equal(flagsKey(['\\Recent']), '', '\\Recent alone is no flag at all');
    t.equal(flagsKey(['\\DRAFT', '\\deleted', '\\answered']), '\\Answered \\Deleted \\Draft');
    t.not(flagsKey(['foo']), flagsKey(['Foo']), 'keywords keep the upstream spelling');
    t.same(flagsFromKey(flagsKey(['\\Seen', 'x'])), ['\\Seen', 'x']);
    t.same(flagsFromKey(''), []);
    t.equal(flagsKey(['\\Extension']), '\\Extension', 'an unknown \\-flag is kept as given');
  });

  t.test('open: created once per (user, mailbox, UIDVALIDITY), starting high and positive', async (t) => {
    const f = file('open');
    const store = SqliteStore.open(f);
    const before = Date.now() * 1000;
    const a = await store.modseqOpen('alice', 'inbox', 100);
    t.ok(a.highestModseq >= before && a.highestModseq <= Date.now() * 1000, 'starts at the time in microseconds');
    t.ok(a.highestModseq < Number.MAX_SAFE_INTEGER / 4, 'far below 2^53');
    t.equal(a.vanishedFloor, a.highestModseq, 'nothing before the start is known');
    t.same(await store.modseqOpen('alice', 'INBOX', 100), a, 'INBOX in any case is one mailbox');
    const other = SqliteStore.open(f);
    t.same(await other.modseqOpen('alice', 'INBOX', 100), a, 'the same state through another connection');
    const b = await store.modseqOpen('alice', 'Sent', 100);
    const c = await store.modseqOpen('bob', 'INBOX', 100);
    t.equal(new Set([a.id, b.id, c.id]).size, 3, 'per user and mailbox');
    t.same(await store.modseqRange(a.id, 0, 10), [], 'empty');
    t.same(await store.modseqVanishedSince(a.id, a.highestModseq), []);
    t.equal(await store.modseqVanishedSince(a.id, a.highestModseq - 1), 'too-old');
    t.same(await store.modseqState(a.id), a);
    await other.close();
    await store.close();
  });

  t.test('record: each change a new, increasing mod-sequence; equal flags change nothing', async (t) => {
    const store = SqliteStore.open(file('record'));
    const s = await store.modseqOpen('alice', 'INBOX', 1);
    const h0 = s.highestModseq;
    const first = await store.modseqRecord(s.id, { changed: [...msgs(1, 4), { uid: 9, flags: ['\\seen', '\\Recent'] }], expunged: [] });
    t.same(first.modseqs, [h0 + 1, h0 + 2, h0 + 3, h0 + 4, h0 + 5], 'in the order given');
    t.equal(first.highestModseq, h0 + 5);
    t.same((await store.modseqState(s.id)).highestModseq, h0 + 5);
    t.same(await store.modseqGet(s.id, [9]), new Map([[9, { uid: 9, flags: ['\\Seen'], modseq: h0 + 5 }]]), 'stored canonical');

    // The same flags in another spelling or order, with \Recent: no change at all.
    const again = await store.modseqRecord(s.id, { changed: [{ uid: 9, flags: ['\\Recent', '\\SEEN'] }, { uid: 2, flags: [] }], expunged: [] });
    t.same(again, { highestModseq: h0 + 5, modseqs: [h0 + 5, h0 + 2] }, 'existing mod-sequences back, HIGHESTMODSEQ unchanged');

    const flagged = await store.modseqRecord(s.id, { changed: [{ uid: 3, flags: ['\\Flagged'] }, { uid: 1, flags: ['$Junk'] }], expunged: [2, 77] });
    t.same(flagged.modseqs, [h0 + 6, h0 + 7]);
    t.equal(flagged.highestModseq, h0 + 8, 'UID 2 vanished at the next one; 77 was never stored and costs nothing');
    t.same(await store.modseqVanishedSince(s.id, h0 + 7), [2]);
    t.same(await store.modseqVanishedSince(s.id, h0 + 8), []);
    t.same(
      (await all(store, s.id)).map((m) => [m.uid, m.flags.join(' '), m.modseq - h0]),
      [[1, '$Junk', 7], [3, '\\Flagged', 6], [4, '', 4], [9, '\\Seen', 5]],
    );

    // Repeating the expunge (another process saw it too) and a stale "changed" for it change nothing.
    const stale = await store.modseqRecord(s.id, { changed: [{ uid: 2, flags: ['\\Seen'] }], expunged: [2] });
    t.same(stale, { highestModseq: h0 + 8, modseqs: [0] }, 'a vanished UID is not brought back (RFC 3501 §2.3.1.1)');
    t.same([...(await store.modseqGet(s.id, [1, 2, 3, 100])).keys()], [1, 3]);
    t.same(await store.modseqRecord(s.id, { changed: [], expunged: [] }), { highestModseq: h0 + 8, modseqs: [] });
    await store.close();
  });

  t.test('CHANGEDSINCE pages match a full scan, through either query plan', async (t) => {
    const store = SqliteStore.open(file('changed'));
    const s = await store.modseqOpen('alice', 'Big', 5);
    const h0 = s.highestModseq;
    const n = 6000;
    await store.modseqRecord(s.id, { changed: msgs(1, n), expunged: [] });
    const random = prng(7);
    const checkpoints: number[] = [h0, h0 + 1, h0 + n - 10];
    for (let round = 0; round < 30; round++) {
      const changed = Array.from({ length: 40 }, () => ({ uid: 1 + Math.floor(random() * n), flags: random() < 0.5 ? ['\\Seen'] : ['\\Flagged', `k${round}`] }));
      const expunged = Array.from({ length: 3 }, () => 1 + Math.floor(random() * n));
      const r = await store.modseqRecord(s.id, { changed, expunged });
      checkpoints.push(r.highestModseq - 5);
    }
    const { highestModseq } = await store.modseqState(s.id);
    checkpoints.push(highestModseq);
    const everything = await all(store, s.id, 777);
    t.ok(everything.length < n && everything.length > n - 100, 'some expunged');
    for (const since of checkpoints) {
      const expected = everything.filter((m) => m.modseq > since);
      for (const page of [1, 50, 1000]) {
        if (page === 1 && expected.length > 500) continue;
        const got = await changedSince(store, s.id, since, page);
        t.same(got, expected, `since h0+${since - h0}, pages of ${page} (${highestModseq - since > 4096 ? 'by UID' : 'by modseq'})`);
      }
    }
    t.same(await store.modseqChangedSince(s.id, h0, 5990, 5), everything.filter((m) => m.uid > 5990).slice(0, 5), 'afterUid and limit');
    const modseqs = everything.map((m) => m.modseq);
    t.equal(new Set(modseqs).size, modseqs.length, 'no two messages share a mod-sequence');
    t.ok(Math.max(...modseqs) <= highestModseq);
    await store.close();
  });

  t.test('VANISHED since, compaction and too-old', async (t) => {
    const store = SqliteStore.open(file('vanished'));
    const s = await store.modseqOpen('alice', 'INBOX', 9);
    const h0 = s.highestModseq;
    await store.modseqRecord(s.id, { changed: msgs(1, 100), expunged: [] });
    // Expunge 10, 20, ..., 100 one at a time: UID 10k vanishes at h0 + 100 + k.
    for (let k = 1; k <= 10; k++) await store.modseqRecord(s.id, { changed: [], expunged: [10 * k] });
    t.same(await store.modseqVanishedSince(s.id, h0), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    t.same(await store.modseqVanishedSince(s.id, h0 + 107), [80, 90, 100]);
    await store.modseqCompact(s.id, 4);
    const after = await store.modseqState(s.id);
    t.equal(after.vanishedFloor, h0 + 106, 'the floor is the newest expunge dropped');
    t.equal(after.highestModseq, h0 + 110, 'compaction hands out nothing');
    t.same(await store.modseqVanishedSince(s.id, h0 + 106), [70, 80, 90, 100], 'the 4 newest are kept');
    t.equal(await store.modseqVanishedSince(s.id, h0 + 105), 'too-old', 'older than what is kept: a full answer is needed');
    t.equal(await store.modseqVanishedSince(s.id, h0), 'too-old');
    await store.modseqCompact(s.id, 10);
    t.equal((await store.modseqState(s.id)).vanishedFloor, h0 + 106, 'nothing to drop: the floor stays');
    await store.modseqCompact(s.id, 0);
    t.equal((await store.modseqState(s.id)).vanishedFloor, h0 + 110);
    t.same(await store.modseqVanishedSince(s.id, h0 + 110), []);
    t.equal(await store.modseqVanishedSince(s.id, h0 + 109), 'too-old');
    await t.rejects(store.modseqCompact(s.id, -1), RangeError);
    await store.close();
  });

  t.test('a UIDVALIDITY change drops the state; the old id is gone everywhere', async (t) => {
    const f = file('uidvalidity');
    const store = SqliteStore.open(f);
    const other = SqliteStore.open(f);
    const old = await store.modseqOpen('alice', 'INBOX', 1);
    const recorded = await store.modseqRecord(old.id, { changed: msgs(1, 50), expunged: [] });
    await store.modseqRecord(old.id, { changed: [], expunged: [3] });
    const renewed = await other.modseqOpen('alice', 'INBOX', 2);
    t.not(renewed.id, old.id, 'a new id');
    t.ok(renewed.highestModseq > recorded.highestModseq, 'never below what the old state handed out');
    t.same(await store.modseqRange(renewed.id, 0, 10), [], 'no messages carried over');
    t.same(await store.modseqVanishedSince(renewed.id, renewed.highestModseq), []);
    t.same(await store.modseqRange(old.id, 0, 10), [], 'the old rows are deleted');
    for (const call of [
      (): Promise<unknown> => store.modseqRecord(old.id, { changed: msgs(1, 1), expunged: [] }),
      () => store.modseqState(old.id),
      () => store.modseqChangedSince(old.id, 0, 0, 10),
      () => store.modseqVanishedSince(old.id, 0),
      () => store.modseqCompact(old.id, 1),
    ]) {
      await t.rejects(call(), ModseqStateGone);
    }
    t.equal((await store.modseqOpen('alice', 'inbox', 2)).id, renewed.id, 'reopening with the new UIDVALIDITY keeps it');
    // The id is never given out again, even to a later state.
    const third = await store.modseqOpen('alice', 'INBOX', 3);
    t.ok(third.id > renewed.id);
    await other.close();
    await store.close();
  });

  t.test('processes sharing one file never hand out a mod-sequence twice', async (t) => {
    const f = file('race');
    const store = SqliteStore.open(f);
    const state = await store.modseqOpen('racer', 'INBOX', 7);
    await store.modseqRecord(state.id, { changed: [{ uid: 1, flags: [] }], expunged: [] });
    const racers = 4;
    const batches = 150;
    let ready = 0;
    const children: ReturnType<typeof fork>[] = [];
    const runs = await Promise.all(
      Array.from({ length: racers }, (_, i) =>
        new Promise<number[]>((resolve, reject) => {
          const child = fork(thisFile, ['race', f, String(1000 * (i + 1)), String(batches)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
          children.push(child);
          child.on('message', (m) => {
            const msg = m as { ready?: boolean; raced?: number[] };
            if (msg.ready && ++ready === racers) for (const c of children) c.send({ go: true });
            if (msg.raced !== undefined) resolve(msg.raced);
          });
          child.once('error', reject);
          child.once('exit', (code) => reject(new Error(`racer exited ${code} without an answer`)));
        }),
      ),
    );
    for (const run of runs) {
      t.equal(run.length, 5 * batches);
      t.ok(run.every((m, i) => i === 0 || m > run[i - 1]!), 'increasing within each process');
    }
    const spans = runs.map((run) => [run[0]!, run.at(-1)!] as const);
    t.ok(
      spans.some(([lo, hi], i) => spans.some(([lo2], j) => i !== j && lo2 > lo && lo2 < hi)),
      'the processes really wrote in between each other',
    );
    const given = runs.flat();
    t.equal(new Set(given).size, given.length, 'no mod-sequence handed to two new messages');
    const rows = await all(store, state.id, 1000);
    t.equal(rows.length, 1 + racers * 5 * batches);
    const stored = rows.map((r) => r.modseq);
    t.equal(new Set(stored).size, stored.length, 'no two stored messages share one');
    const { highestModseq } = await store.modseqState(state.id);
    t.equal(highestModseq, Math.max(...stored), 'HIGHESTMODSEQ is the newest message\'s');
    // Every value between the start and HIGHESTMODSEQ went to exactly one change: the new
    // messages, plus each flip of the shared UID 1 that someone saw first.
    const flips = highestModseq - state.highestModseq - 1 - given.length;
    t.ok(flips >= 1 && flips <= racers * batches, `${flips} changes of the shared message, each counted once`);
    await store.close();
  });
}
