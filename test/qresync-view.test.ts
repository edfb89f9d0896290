/**
 * MailboxView (lemonade/qresync/view.ts) and the session's untagged rewriting
 * (session-state.ts) without a server: message numbers kept in step with EXISTS and
 * EXPUNGE, UIDs learnt from FETCH, changes recorded with new mod-sequences, the rewritten
 * responses byte for byte.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../src/store/sqlite.js';
import { MailboxView } from '../src/lemonade/qresync/view.js';
import { CondstoreSession } from '../src/lemonade/qresync/session-state.js';
import { parseResponseHead } from '../src/imap/protocol/parser.js';

async function fixture(uids: number[]): Promise<{ store: SqliteStore; view: MailboxView }> {
  const store = SqliteStore.open(path.join(mkdtempSync(path.join(os.tmpdir(), 'lemonade-view-')), 'store.sqlite'));
  const state = await store.modseqOpen('alice', 'INBOX', 7);
  const flags = uids.map((uid) => (uid % 2 === 0 ? ['\\Seen'] : []));
  const r = await store.modseqRecord(state.id, { changed: uids.map((uid, i) => ({ uid, flags: flags[i]! })), expunged: [] });
  const view = MailboxView.create(store, state, 'INBOX', 7, {
    uids: Uint32Array.from(uids),
    modseqs: Float64Array.from(r.modseqs),
    flags: flags.map((f) => f.join(' ')),
    highestModseq: r.highestModseq,
  });
  return { store, view };
}

t.test('load, seqOf, EXISTS, EXPUNGE', async (t) => {
  const { store, view } = await fixture([3, 5, 8, 13]);
  t.teardown(() => store.close());
  t.equal(view.count, 4);
  t.same([3, 5, 8, 13].map((u) => view.seqOf(u)), [1, 2, 3, 4]);
  t.equal(view.seqOf(4), undefined);
  t.ok(view.modseqs[0]! < view.modseqs[3]!, 'mod-sequences from the store, in recording order');
  t.same(view.flagsOf(3), ['\\Seen'], 'message 3 (UID 8, even) is seen');

  view.exists(6);
  t.equal(view.firstUnknown(), 5, 'new messages are unknown until a FETCH names them');
  view.place(6, 21);
  t.equal(view.firstUnknown(), 5);
  t.equal(view.seqOf(21), 6, 'found in the tail');
  view.place(5, 20);
  t.equal(view.firstUnknown(), undefined);
  view.place(5, 99);
  t.equal(view.seqOf(20), 5, 'a known UID is never overwritten');

  t.equal(view.expunge(2), 5, 'EXPUNGE 2 is UID 5');
  t.same([3, 8, 13, 20, 21].map((u) => view.seqOf(u)), [1, 2, 3, 4, 5], 'later messages renumbered');
  await view.settled();
  const vanished = await store.modseqVanishedSince(view.state.id, view.state.vanishedFloor);
  t.same(vanished, [5], 'recorded as vanished');
  t.ok(view.highestModseq >= view.modseqs[2]!, 'HIGHESTMODSEQ moved');
});

t.test('observe: unchanged flags answer at once, a change gets a new mod-sequence', async (t) => {
  const { store, view } = await fixture([1, 2, 3]);
  t.teardown(() => store.close());
  const before = view.modseqs[1]!;
  t.equal(view.observe(2, 2, ['\\Seen']), before, 'same flags: the stored mod-sequence, synchronously');
  t.equal(view.observe(2, undefined, undefined), before, 'no flags in the response: the known one');
  const changed = view.observe(2, 2, ['\\Seen', '\\Flagged']);
  t.type(changed, Promise, 'a change is recorded first');
  const m = await changed;
  t.ok(m > before && m === view.highestModseq, 'with a new, highest mod-sequence');
  t.equal(view.observe(2, 2, ['\\Flagged', '\\seen', '\\Recent']), m, 'canonical comparison: order, case and \\Recent do not count');
  view.exists(4);
  const unknown = view.observe(4, undefined, ['\\Seen']);
  t.equal(unknown, view.highestModseq, 'a message not identified yet gets the highest as a bound');
  const learnt = await view.observe(4, 9, ['\\Seen']);
  t.ok(learnt > m, 'a new message named by a FETCH is recorded');
  t.equal(view.seqOf(9), 4);
  t.equal(view.observe(3, 7, ['x']), view.highestModseq, 'a UID that contradicts the view is not believed');
  t.equal(view.seqOf(3), 3);
});

t.test('session rewriting: MODSEQ into FETCH, VANISHED for EXPUNGE once QRESYNC is on', async (t) => {
  const { store, view } = await fixture([10, 11, 12]);
  t.teardown(() => store.close());
  const cs = new CondstoreSession();
  const rewrite = async (line: string) => {
    const b = Buffer.from(line);
    return (await cs.rewriteUntagged(b, parseResponseHead(b))).toString();
  };
  t.equal(await rewrite('* 1 FETCH (FLAGS ())\r\n'), '* 1 FETCH (FLAGS ())\r\n', 'no view: untouched');
  cs.enabled.add('CONDSTORE');
  cs.view = view;
  const m2 = view.modseqs[1]!;
  t.equal(await rewrite('* 2 FETCH (UID 11 FLAGS ())\r\n'), `* 2 FETCH (MODSEQ (${m2}) UID 11 FLAGS ())\r\n`);
  t.equal(await rewrite('* 2 FETCH (UID 11 BODY[] {5}\r\n'), `* 2 FETCH (MODSEQ (${m2}) UID 11 BODY[] {5}\r\n`, 'before a literal');
  const changed = await rewrite('* 2 FETCH (FLAGS (\\Answered))\r\n');
  t.match(changed, /^\* 2 FETCH \(MODSEQ \(([0-9]+)\) FLAGS \(\\Answered\)\)\r\n$/);
  t.ok(Number(/MODSEQ \(([0-9]+)\)/.exec(changed)![1]) > m2, 'a new mod-sequence for the change');
  t.equal(await rewrite('* 1 EXPUNGE\r\n'), '* 1 EXPUNGE\r\n', 'CONDSTORE only: EXPUNGE stays');
  t.equal(view.seqOf(11), 1, 'but the view moved');
  cs.enabled.add('QRESYNC');
  t.equal(await rewrite('* 1 EXPUNGE\r\n'), '* VANISHED 11\r\n', 'QRESYNC: VANISHED uid');
  t.equal(await rewrite('* 5 EXISTS\r\n'), '* 5 EXISTS\r\n');
  t.equal(view.count, 5);
  t.equal(await rewrite('* 3 EXPUNGE\r\n'), '* 3 EXPUNGE\r\n', 'a message whose UID is unknown keeps its EXPUNGE');
  await view.settled();
});
