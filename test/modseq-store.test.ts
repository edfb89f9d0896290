/**
 * The mod-sequence state of the SQLite store (CONDSTORE/QRESYNC emulation, RFC 7162): the
 * contract shared with the PostgreSQL store (test/helpers/store-contract.ts: opening per
 * (user, mailbox, UIDVALIDITY), increasing mod-sequences, CHANGEDSINCE paging over both of
 * SQLite's query plans, VANISHED with compaction and 'too-old', UIDVALIDITY changes), plus
 * canonical flags and processes sharing one file never handing out a mod-sequence twice.
 * Real SQLite files; the race uses real processes.
 */
import t from 'tap';
import { fork } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SqliteStore } from '../src/store/sqlite.js';
import { canonicalFlags, flagsKey, flagsFromKey } from '../src/lemonade/qresync/flags.js';
import { allModseq, modseqContract } from './helpers/store-contract.js';

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

  // The contract every backend meets (test/helpers/store-contract.ts), on SQLite files.
  modseqContract(t, { fresh: async (name) => file(name), open: async (f) => SqliteStore.open(f) });

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
    const rows = await allModseq(store, state.id, 1000);
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
