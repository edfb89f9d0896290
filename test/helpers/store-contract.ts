/**
 * The Store contract (src/store/store.ts), one set of cases that every backend is held to:
 * test/store.test.ts and test/modseq-store.test.ts run it on SQLite files,
 * test/store-postgres.test.ts on a real PostgreSQL. A backend names a fresh, empty place
 * to keep state (a file path, a database URL) and opens stores on it; two stores opened
 * on one place are two processes (or instances) sharing it.
 */
import type { Test } from 'tap';
import type { HeldMessage, MessageModseq, Store } from '../../src/store/store.js';
import { ModseqStateGone, normalizeMailbox } from '../../src/store/store.js';
import { prng } from './prng.js';

export interface StoreBackend {
  /** A new, empty place for a store (named after the case, for debugging). */
  fresh(name: string): Promise<string>;
  /** A store on that place; several may be open on one place at once. */
  open(place: string): Promise<Store>;
}

const msgs = (from: number, to: number, flags: string[] = []) => Array.from({ length: to - from + 1 }, (_, i) => ({ uid: from + i, flags }));

/** Every stored message, through modseqRange pages. */
export async function allModseq(store: Store, id: number, page = 100): Promise<MessageModseq[]> {
  const out: MessageModseq[] = [];
  for (let after = 0; ; ) {
    const rows = await store.modseqRange(id, after, page);
    out.push(...rows);
    if (rows.length < page) return out;
    after = rows.at(-1)!.uid;
  }
}

/** modseqChangedSince paged with afterUid, as a session would. */
async function changedSince(store: Store, id: number, since: number, page: number): Promise<MessageModseq[]> {
  const out: MessageModseq[] = [];
  for (let after = 0; ; ) {
    const rows = await store.modseqChangedSince(id, since, after, page);
    out.push(...rows);
    if (rows.length < page) return out;
    after = rows.at(-1)!.uid;
  }
}

/** Access keys (RFC 4467 §5, RESETKEY §6.2), INBOX normalization (RFC 3501 §5.1) and meta values. */
export function keyContract(t: Test, backend: StoreBackend): void {
  t.test('a key is 128 bits, made once, and the same after reopening', async (t) => {
    const place = await backend.fresh('stable');
    const store = await backend.open(place);
    const k = await store.mailboxAccessKey('alice', 'INBOX');
    t.equal(k.length, 16);
    t.ok((await store.mailboxAccessKey('alice', 'INBOX')).equals(k), 'same key on second use');
    t.ok((await store.existingMailboxAccessKey('alice', 'inbox'))?.equals(k), 'existing key found');
    t.equal(await store.existingMailboxAccessKey('alice', 'Never'), undefined, 'no key made by looking');
    t.equal(await store.existingMailboxAccessKey('alice', 'Never'), undefined, 'still none');
    await store.close();
    await store.close(); // idempotent
    const again = await backend.open(place);
    t.ok((await again.mailboxAccessKey('alice', 'INBOX')).equals(k), 'same key after reopen');
    await again.close();
  });

  t.test('keys differ per user and per mailbox; only INBOX ignores case', async (t) => {
    const store = await backend.open(await backend.fresh('names'));
    const key = (u: string, m: string) => store.mailboxAccessKey(u, m).then((b) => b.toString('hex'));
    const inbox = await key('alice', 'INBOX');
    t.equal(await key('alice', 'inbox'), inbox, 'inbox');
    t.equal(await key('alice', 'InBoX'), inbox, 'InBoX');
    t.not(await key('bob', 'INBOX'), inbox, 'other user');
    t.not(await key('Alice', 'INBOX'), inbox, 'user names are case-sensitive');
    t.not(await key('alice', 'Sent'), await key('alice', 'sent'), 'other names are case-sensitive');
    t.not(await key('alice', 'INBOX/Sub'), await key('alice', 'inbox/Sub'), 'only INBOX itself is special');
    t.equal(new Set([inbox, await key('alice', 'Sent'), await key('alice', 'sent'), await key('bob', 'INBOX')]).size, 4);
    t.equal(normalizeMailbox('iNbOx'), 'INBOX');
    t.equal(normalizeMailbox('Inboxes'), 'Inboxes');
    await store.close();
  });

  t.test('concurrent first use over two stores ends with one key', async (t) => {
    const place = await backend.fresh('race');
    const a = await backend.open(place);
    const b = await backend.open(place);
    const keys = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).mailboxAccessKey('carol', 'Drafts')));
    t.equal(new Set(keys.map((k) => k.toString('hex'))).size, 1, 'many calls over two stores on one place');
    await a.close();
    await b.close();
  });

  t.test('RESETKEY: one mailbox, or every key of one user and no one else', async (t) => {
    const place = await backend.fresh('reset');
    const store = await backend.open(place);
    const other = await backend.open(place);
    const inbox = await store.mailboxAccessKey('alice', 'INBOX');
    const sent = await store.mailboxAccessKey('alice', 'Sent');
    const bob = await store.mailboxAccessKey('bob', 'INBOX');
    await store.resetAccessKeys('alice', 'inbox');
    t.equal(await other.existingMailboxAccessKey('alice', 'INBOX'), undefined, 'the old INBOX key is gone for the other store at once');
    const inbox2 = await other.mailboxAccessKey('alice', 'INBOX');
    t.notOk(inbox2.equals(inbox), 'the INBOX key changed, seen at once by another store on the place');
    t.ok((await store.mailboxAccessKey('alice', 'Sent')).equals(sent), 'Sent kept');
    await store.resetAccessKeys('alice');
    t.notOk((await other.mailboxAccessKey('alice', 'Sent')).equals(sent), "alice's Sent changed");
    t.notOk((await other.mailboxAccessKey('alice', 'INBOX')).equals(inbox2), "alice's INBOX changed");
    t.ok((await store.mailboxAccessKey('bob', 'INBOX')).equals(bob), "bob's kept");
    await store.close();
    await other.close();
  });

  t.test('meta values', async (t) => {
    const place = await backend.fresh('meta');
    const store = await backend.open(place);
    t.equal(await store.getMeta('secret'), undefined);
    t.equal(await store.initMeta('secret', 'first'), 'first');
    t.equal(await store.initMeta('secret', 'second'), 'first', 'initMeta keeps what is stored');
    await store.setMeta('other', 'a');
    await store.setMeta('other', 'b');
    await store.close();
    const again = await backend.open(place);
    t.equal(await again.getMeta('secret'), 'first');
    t.equal(await again.getMeta('other'), 'b');
    const racers = await Promise.all(Array.from({ length: 10 }, (_, i) => again.initMeta('raced', `v${i}`)));
    t.equal(new Set(racers).size, 1, 'concurrent initMeta: everyone gets the first stored value');
    await again.close();
  });
}

/** A held message row for store tests, with `over` applied. */
export function held(id: string, over: Partial<HeldMessage> = {}): HeldMessage {
  return {
    id,
    user: 'alice',
    sender: 'alice@example.org',
    mailParams: [['BODY', '8BITMIME'], ['RET', 'HDRS']],
    recipients: [{ address: 'bob@example.org', params: [['NOTIFY', 'FAILURE']], status: 'pending' }],
    size: 1000,
    createdAt: 1_700_000_000_000,
    releaseAt: 1_700_000_100_000,
    holdRequest: 'for;100',
    nextAttemptAt: 1_700_000_100_000,
    attempts: 0,
    state: 'held',
    ...over,
  };
}

/** The FUTURERELEASE spool index (RFC 4865): rows, due order, claims, recovery. */
export function spoolContract(t: Test, backend: StoreBackend): void {
  t.test('spool index: insert, read back, due order, list, stats', async (t) => {
    const store = await backend.open(await backend.fresh('spool'));
    t.same(await store.spoolStats(), { count: 0, bytes: 0, oldestRelease: undefined }, 'empty');
    t.equal(await store.spoolNextDue(), undefined);
    const a = held('a', { nextAttemptAt: 3000, releaseAt: 3000, size: 10 });
    const b = held('b', { nextAttemptAt: 1000, releaseAt: 1000, size: 20, lastError: '451 4.3.0 later', user: '', sender: '' });
    const c = held('c', { nextAttemptAt: 2000, releaseAt: 500, size: 30 });
    await store.spoolInsert(a, b, c);
    await store.spoolInsert();
    t.same(await store.spoolGet('b'), b, 'a row comes back as written (parameters, recipients, lastError)');
    t.same(await store.spoolGet('a'), a, 'no lastError: the key is absent');
    t.equal(await store.spoolGet('nope'), undefined);
    t.same((await store.spoolDue(2500, 10)).map((m) => m.id), ['b', 'c'], 'due at 2500, most overdue first');
    t.same((await store.spoolDue(5000, 1)).map((m) => m.id), ['b'], 'limit');
    t.same((await store.spoolList(2, 1)).map((m) => m.id), ['c', 'a'], 'list pages in due order');
    t.equal(await store.spoolNextDue(), 1000);
    t.same(await store.spoolStats(), { count: 3, bytes: 60, oldestRelease: 500 });
    await t.rejects(store.spoolInsert(held('a')), 'an id is held once');
    await store.close();
  });

  t.test('spool claims: held -> sending once, committing, reschedule, delete, cancel, release now', async (t) => {
    const place = await backend.fresh('claims');
    const store = await backend.open(place);
    const other = await backend.open(place);
    await store.spoolInsert(held('m1', { nextAttemptAt: 100 }), held('m2', { nextAttemptAt: 200, user: 'bob' }), held('m3', { nextAttemptAt: 300 }));
    const claims = await Promise.all([store.spoolClaim('m1'), other.spoolClaim('m1'), store.spoolClaim('m1')]);
    t.same(claims.filter(Boolean).length, 1, 'one claim of three wins');
    t.equal(await store.spoolClaim('gone'), false);
    const claimed = (await store.spoolGet('m1'))!;
    t.equal(claimed.state, 'sending');
    t.equal(claimed.attempts, 1, 'the attempt is counted');
    t.same((await store.spoolDue(1000, 10)).map((m) => m.id), ['m2', 'm3'], 'a message being sent is not due');
    t.equal(await store.spoolNextDue(), 200);
    t.equal(await store.spoolCancel('m1'), undefined, 'a message being sent cannot be cancelled');

    // The claimant (whichever store won) reschedules it: held again with the new recipients.
    const winner = claims[1] ? other : store;
    const recipients = [{ address: 'bob@example.org', params: [] as Array<[string, string | true]>, status: 'pending' as const, reply: '451 4.2.0 busy' }];
    await winner.spoolReschedule('m1', recipients, 5000, '451 4.2.0 busy');
    const again = (await store.spoolGet('m1'))!;
    t.same([again.state, again.nextAttemptAt, again.lastError, again.recipients], ['held', 5000, '451 4.2.0 busy', recipients]);
    t.ok(await store.spoolReleaseNow('m1', 50), 'released now');
    t.equal((await store.spoolDue(60, 10))[0]?.id, 'm1', 'and first due');

    t.ok(await store.spoolClaim('m1'));
    t.equal(await store.spoolReleaseNow('m1', 50), false, 'not while being sent');
    await store.spoolCommitting('m1');
    t.equal((await store.spoolGet('m1'))!.state, 'committing');
    t.ok(await store.spoolDelete('m1'));
    t.equal(await store.spoolDelete('m1'), false, 'deleted once');

    t.equal(await store.spoolCancel('m2', 'alice'), undefined, "not alice's to cancel");
    t.equal((await store.spoolCancel('m2', 'bob'))?.id, 'm2', "bob's own");
    t.equal((await other.spoolCancel('m3'))?.id, 'm3', 'an operator cancels any');
    t.equal(await store.spoolGet('m3'), undefined);
    t.same(await store.spoolStats(), { count: 0, bytes: 0, oldestRelease: undefined });
    await store.close();
    await other.close();
  });

  t.test("spool recovery: this store's unfinished releases are held again; the committing ones are named", async (t) => {
    const store = await backend.open(await backend.fresh('recover'));
    await store.spoolInsert(held('s', { nextAttemptAt: 10 }), held('c', { nextAttemptAt: 20 }), held('h', { nextAttemptAt: 30 }));
    t.ok(await store.spoolClaim('s'));
    t.ok(await store.spoolClaim('c'));
    await store.spoolCommitting('c');
    const recovered = await store.spoolRecover();
    t.same(recovered.map((m) => [m.id, m.state]), [['c', 'committing']], 'the committing one, whose MTA may have accepted it');
    t.equal((await store.spoolGet('s'))!.state, 'held', 'the sending one is held again');
    t.equal((await store.spoolGet('c'))!.state, 'held', 'and so is the committing one');
    t.equal((await store.spoolGet('s'))!.attempts, 1, 'with its attempt counted');
    t.same((await store.spoolDue(100, 10)).map((m) => m.id), ['s', 'c', 'h']);
    t.same(await store.spoolRecover(), [], 'nothing the second time');
    await store.close();
  });

  t.test('spool delete with a DSN: the message goes and its DSN comes in one step', async (t) => {
    const store = await backend.open(await backend.fresh('dsn'));
    await store.spoolInsert(held('orig', { nextAttemptAt: 10 }));
    const dsn = held('dsn-1', { user: '', sender: '', holdRequest: '', nextAttemptAt: 50, mailParams: [] });
    t.equal(await store.spoolDelete('orig', dsn), true);
    t.equal(await store.spoolGet('orig'), undefined);
    t.same(await store.spoolGet('dsn-1'), dsn, 'the DSN is indexed');
    await store.spoolInsert(held('taken', { nextAttemptAt: 60 }));
    await t.rejects(store.spoolDelete('dsn-1', held('taken')), 'a DSN whose id is taken: the whole step fails');
    t.ok(await store.spoolGet('dsn-1'), 'and the row it would have deleted is still there');
    await store.close();
  });
}

/** Mod-sequence state (CONDSTORE/QRESYNC emulation, RFC 7162). */
export function modseqContract(t: Test, backend: StoreBackend): void {
  t.test('open: created once per (user, mailbox, UIDVALIDITY), starting high and positive', async (t) => {
    const place = await backend.fresh('open');
    const store = await backend.open(place);
    const before = Date.now() * 1000;
    const a = await store.modseqOpen('alice', 'inbox', 100);
    t.ok(a.highestModseq >= before && a.highestModseq <= Date.now() * 1000, 'starts at the time in microseconds');
    t.ok(a.highestModseq < Number.MAX_SAFE_INTEGER / 4, 'far below 2^53');
    t.equal(a.vanishedFloor, a.highestModseq, 'nothing before the start is known');
    t.same(await store.modseqOpen('alice', 'INBOX', 100), a, 'INBOX in any case is one mailbox');
    const other = await backend.open(place);
    t.same(await other.modseqOpen('alice', 'INBOX', 100), a, 'the same state through another connection');
    const b = await store.modseqOpen('alice', 'Sent', 100);
    const c = await store.modseqOpen('bob', 'INBOX', 100);
    t.equal(new Set([a.id, b.id, c.id]).size, 3, 'per user and mailbox');
    t.same(await store.modseqRange(a.id, 0, 10), [], 'empty');
    t.same(await store.modseqVanishedSince(a.id, a.highestModseq), []);
    t.equal(await store.modseqVanishedSince(a.id, a.highestModseq - 1), 'too-old');
    t.same(await store.modseqState(a.id), a);
    const many = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? store : other).modseqOpen('dave', 'Racy', 5)));
    t.equal(new Set(many.map((s) => s.id)).size, 1, 'concurrent first opens over two stores: one state');
    await other.close();
    await store.close();
  });

  t.test('record: each change a new, increasing mod-sequence; equal flags change nothing', async (t) => {
    const store = await backend.open(await backend.fresh('record'));
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
      (await allModseq(store, s.id)).map((m) => [m.uid, m.flags.join(' '), m.modseq - h0]),
      [[1, '$Junk', 7], [3, '\\Flagged', 6], [4, '', 4], [9, '\\Seen', 5]],
    );

    // Repeating the expunge (another process saw it too) and a stale "changed" for it change nothing.
    const stale = await store.modseqRecord(s.id, { changed: [{ uid: 2, flags: ['\\Seen'] }], expunged: [2] });
    t.same(stale, { highestModseq: h0 + 8, modseqs: [0] }, 'a vanished UID is not brought back (RFC 3501 §2.3.1.1)');
    t.same([...(await store.modseqGet(s.id, [1, 2, 3, 100])).keys()], [1, 3]);
    t.same(await store.modseqRecord(s.id, { changed: [], expunged: [] }), { highestModseq: h0 + 8, modseqs: [] });

    // One call naming a UID twice, and one new message expunged in the same call: as if one at a time.
    const twice = await store.modseqRecord(s.id, { changed: [{ uid: 4, flags: ['a'] }, { uid: 4, flags: ['b'] }, { uid: 50, flags: [] }], expunged: [50, 50] });
    t.same(twice, { highestModseq: h0 + 12, modseqs: [h0 + 9, h0 + 10, h0 + 11] }, 'the second expunge of 50 costs nothing');
    t.same(await store.modseqGet(s.id, [4, 50]), new Map([[4, { uid: 4, flags: ['b'], modseq: h0 + 10 }]]), 'the last flags stand; 50 is gone');
    t.same(await store.modseqVanishedSince(s.id, h0 + 11), [50], 'a UID added and expunged in one call vanished after it was added');
    t.same((await store.modseqState(s.id)).highestModseq, h0 + 12);
    await store.close();
  });

  t.test('CHANGEDSINCE pages match a full scan', async (t) => {
    const store = await backend.open(await backend.fresh('changed'));
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
    const everything = await allModseq(store, s.id, 777);
    t.ok(everything.length < n && everything.length > n - 100, 'some expunged');
    for (const since of checkpoints) {
      const expected = everything.filter((m) => m.modseq > since);
      for (const page of [1, 50, 1000]) {
        if (page === 1 && expected.length > 500) continue;
        const got = await changedSince(store, s.id, since, page);
        t.same(got, expected, `since h0+${since - h0}, pages of ${page} (${highestModseq - since > 4096 ? 'many changes' : 'few changes'})`);
      }
    }
    t.same(await store.modseqChangedSince(s.id, h0, 5990, 5), everything.filter((m) => m.uid > 5990).slice(0, 5), 'afterUid and limit');
    const modseqs = everything.map((m) => m.modseq);
    t.equal(new Set(modseqs).size, modseqs.length, 'no two messages share a mod-sequence');
    t.ok(Math.max(...modseqs) <= highestModseq);
    await store.close();
  });

  t.test('VANISHED since, compaction and too-old', async (t) => {
    const store = await backend.open(await backend.fresh('vanished'));
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
    const place = await backend.fresh('uidvalidity');
    const store = await backend.open(place);
    const other = await backend.open(place);
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
}
