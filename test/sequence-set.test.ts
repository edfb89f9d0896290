/** Unit tests of protocol/sequence-set.ts: RFC 3501 §9 sequence sets and the RFC 7162 §3.2.5 helpers. */
import t from 'tap';
import {
  DEFAULT_SEQUENCE_SET_LIMITS,
  MAX_NZ_NUMBER,
  SequenceSet,
  SequenceSetError,
  formatSequenceSet,
  formatSequenceSet as uidSet,
  parseSequenceSet,
  qresyncVanished,
  seqMatchFloor,
  type SeqMatchData,
  type SequenceSetParseOptions,
} from '../src/imap/protocol/sequence-set.js';
import { prng } from './helpers/prng.js';

const parse = (text: string, options?: SequenceSetParseOptions): string => SequenceSet.parse(text, options).toString();

function parseError(text: string, options?: SequenceSetParseOptions): string {
  try {
    SequenceSet.parse(text, options);
  } catch (err) {
    if (err instanceof SequenceSetError) return err.message;
    throw err;
  }
  return 'no error';
}

const uids = (...values: number[]): Uint32Array => Uint32Array.from(values);
/** 1..n, or the given function of 1..n. */
const seqUids = (n: number, f: (i: number) => number = (i) => i): Uint32Array => Uint32Array.from({ length: n }, (_, i) => f(i + 1));

t.test('parse: numbers, ranges, normalization (RFC 3501 §9)', async (t) => {
  t.equal(parse('1'), '1');
  t.equal(parse('4294967295'), '4294967295');
  t.equal(parse('1:5'), '1:5');
  t.equal(parse('5:1'), '1:5', 'n:m is m:n');
  t.equal(parse('7:7'), '7');
  t.equal(parse('1:5,7,9:12'), '1:5,7,9:12');
  t.equal(parse('9:12,7,1:5'), '1:5,7,9:12', 'sorted');
  t.equal(parse('1:5,3:8'), '1:8', 'overlaps merged');
  t.equal(parse('1:3,4:6'), '1:6', 'adjacent ranges merged');
  t.equal(parse('3,2,1'), '1:3');
  t.equal(parse('5,5,5'), '5', 'duplicates');
  t.equal(parse('10:1,2:3,20'), '1:10,20');
  t.equal(parse('1:4294967295'), '1:4294967295');
  t.equal(parseSequenceSet('2,4').toString(), '2,4', 'function form');
});

t.test('parse: "*" resolved against the largest value', async (t) => {
  t.equal(parse('*', { largest: 17 }), '17');
  t.equal(parse('1:*', { largest: 17 }), '1:17');
  t.equal(parse('*:4', { largest: 17 }), '4:17');
  // RFC 3501 §9: "3291:* includes the UID of the last message in the mailbox, even if that value is less than 3291"
  t.equal(parse('3291:*', { largest: 100 }), '100:3291');
  t.equal(parse('*,1', { largest: 3 }), '1,3');
  t.equal(parseError('*'), '"*" is not allowed here (offset 0)');
  t.equal(parseError('1:*'), '"*" is not allowed here (offset 2)');
  t.equal(parseError('1,*', { largest: 0 }), '"*" refers to no message (offset 2)');
});

t.test('parse: every syntax error, with its message', async (t) => {
  const cases: Array<[string, string]> = [
    ['', 'empty sequence set'],
    [',', 'invalid sequence set at offset 0'],
    ['1,', 'invalid sequence set at offset 2'],
    [',1', 'invalid sequence set at offset 0'],
    ['1,,2', 'invalid sequence set at offset 2'],
    ['0', 'invalid sequence set at offset 0'],
    ['01', 'invalid sequence set at offset 0'],
    ['1:0', 'invalid sequence set at offset 2'],
    ['1:', 'invalid sequence set at offset 2'],
    [':1', 'invalid sequence set at offset 0'],
    ['1::2', 'invalid sequence set at offset 2'],
    ['1:2:3', 'invalid sequence set at offset 3'],
    ['a', 'invalid sequence set at offset 0'],
    ['1a', 'invalid sequence set at offset 1'],
    ['1 2', 'invalid sequence set at offset 1'],
    [' 1', 'invalid sequence set at offset 0'],
    ['-1', 'invalid sequence set at offset 0'],
    ['+1', 'invalid sequence set at offset 0'],
    ['1.5', 'invalid sequence set at offset 1'],
    ['$', 'invalid sequence set at offset 0'],
    ['**', 'invalid sequence set at offset 1'],
    ['4294967296', 'number out of range at offset 0'],
    ['1:99999999999', 'number out of range at offset 2'],
    ['1,123456789012345678901234567890', 'number out of range at offset 2'],
  ];
  for (const [text, message] of cases) t.equal(parseError(text, { largest: 10 }), message, JSON.stringify(text));
  t.ok(SequenceSet.parse('1') instanceof SequenceSet);
  t.throws(() => SequenceSet.parse('x'), SequenceSetError);
  t.equal(new SequenceSetError('m').name, 'SequenceSetError');
});

t.test('parse: bounded (length and item count)', async (t) => {
  const limits = { maxLength: 20, maxRanges: 3 };
  t.equal(parse('1,2,3', { limits }), '1:3');
  t.equal(parseError('1,2,3,4', { limits }), 'more than 3 items in a sequence set');
  t.equal(parseError('1:100000000000000000000', { limits }), 'sequence set longer than 20 characters');
  t.same(DEFAULT_SEQUENCE_SET_LIMITS, { maxLength: 65_536, maxRanges: 32_768 });
  t.ok(Object.isFrozen(DEFAULT_SEQUENCE_SET_LIMITS));
  // With the defaults the length bound comes first: 32768 items fit in 65535 characters, 32769 do not.
  t.equal(SequenceSet.parse(Array.from({ length: 32_768 }, () => '1').join(',')).toString(), '1');
  t.equal(parseError(Array.from({ length: 32_769 }, () => '1').join(',')), 'sequence set longer than 65536 characters');
  t.equal(parseError('1'.repeat(65_537)), 'sequence set longer than 65536 characters');
  const dense = Array.from({ length: 10_000 }, (_, i) => String(3 * i + 1)).join(',');
  t.equal(SequenceSet.parse(dense).rangeCount, 10_000);
  const shuffled = Array.from({ length: 10_000 }, (_, i) => String(((i * 7919) % 10_000) * 3 + 1)).join(',');
  t.ok(SequenceSet.parse(shuffled).equals(SequenceSet.parse(dense)), 'unsorted input sorted');
  // A huge range costs what a small one does.
  const all = SequenceSet.parse('1:4294967295');
  t.equal(all.size, MAX_NZ_NUMBER);
  t.equal(all.rangeCount, 1);
  t.ok(all.has(4_000_000_000));
});

t.test('parse: ascending (RFC 7162 known-sequence-set / known-uid-set)', async (t) => {
  const asc = { ascending: true };
  t.equal(parse('1:5,7,9:12', asc), '1:5,7,9:12');
  t.equal(parse('1:3,4', asc), '1:4', 'adjacent is ascending');
  t.equal(parse('9:5,10', asc), '5:10', '"9:5" is "5:9"');
  t.equal(parseError('5,3', asc), 'sequence set not in ascending order at offset 2');
  t.equal(parseError('1:5,5', asc), 'sequence set not in ascending order at offset 4');
  t.equal(parseError('1:5,4:6', asc), 'sequence set not in ascending order at offset 4');
  t.equal(parseError('2,2', asc), 'sequence set not in ascending order at offset 2');
  t.equal(parse('5,3'), '3,5', 'only when asked');
});

t.test('queries: has, size, min, max, ranges, iteration, equals, clamp', async (t) => {
  const s = SequenceSet.parse('1:5,7,9:12');
  t.same([1, 5, 6, 7, 8, 9, 12, 13, 0].map((n) => s.has(n)), [true, true, false, true, false, true, true, false, false]);
  t.equal(s.size, 10);
  t.equal(s.rangeCount, 3);
  t.equal(s.min, 1);
  t.equal(s.max, 12);
  t.same([...s.ranges()], [[1, 5], [7, 7], [9, 12]]);
  t.same([...s], [1, 2, 3, 4, 5, 7, 9, 10, 11, 12]);
  t.notOk(s.isEmpty);
  t.ok(SequenceSet.EMPTY.isEmpty);
  t.equal(SequenceSet.EMPTY.size, 0);
  t.equal(SequenceSet.EMPTY.min, undefined);
  t.equal(SequenceSet.EMPTY.max, undefined);
  t.equal(SequenceSet.EMPTY.toString(), '');
  t.notOk(SequenceSet.EMPTY.has(1));
  t.ok(s.equals(SequenceSet.parse('12:9,7,5:1')));
  t.notOk(s.equals(SequenceSet.parse('1:5,7,9:11')));
  t.notOk(s.equals(SequenceSet.parse('1:5,7')));
  t.equal(s.clamp(4, 10).toString(), '4:5,7,9:10');
  t.equal(s.clamp(6, 6).toString(), '');
  t.equal(s.clamp(13, 100).toString(), '');
  t.equal(s.clamp(0, MAX_NZ_NUMBER).toString(), '1:5,7,9:12');
});

t.test('intersect and missingFrom a sorted UID list', async (t) => {
  const s = SequenceSet.parse('1:5,7,9:12');
  t.same([...s.intersect(uids(2, 3, 6, 7, 8, 12, 13))], [2, 3, 7, 12]);
  t.same([...s.intersect(uids())], []);
  t.same([...SequenceSet.EMPTY.intersect(uids(1, 2))], []);
  t.ok(s.intersect(uids(1)) instanceof Uint32Array);
  t.equal(s.missingFrom(uids(2, 3, 6, 7, 8, 12, 13)).toString(), '1,4:5,9:11');
  t.equal(s.missingFrom(uids()).toString(), '1:5,7,9:12');
  t.equal(s.missingFrom(seqUids(20)).toString(), '');
  t.equal(SequenceSet.parse('1:4294967295').missingFrom(uids(1, 4294967295)).toString(), '2:4294967294');
  t.equal(SequenceSet.parse('4294967295').missingFrom(uids(4294967295)).toString(), '');
  // Huge set against a large UID list: ranges, not members.
  const big = seqUids(100_000, (i) => i * 2);
  const missing = SequenceSet.parse('1:4294967295').missingFrom(big);
  t.equal(missing.rangeCount, 100_001);
  t.equal(missing.size, MAX_NZ_NUMBER - 100_000);
});

t.test('fromNumbers and fromRanges', async (t) => {
  t.equal(SequenceSet.fromNumbers([1, 2, 3, 5, 6, 9]).toString(), '1:3,5:6,9');
  t.equal(SequenceSet.fromNumbers([1, 1, 2, 2, 4]).toString(), '1:2,4');
  t.equal(SequenceSet.fromNumbers(uids(3, 4, 5)).toString(), '3:5');
  t.equal(SequenceSet.fromNumbers([]).toString(), '');
  t.throws(() => SequenceSet.fromNumbers([2, 1]), new RangeError('numbers must be ascending'));
  t.throws(() => SequenceSet.fromNumbers([0]), new RangeError('not an nz-number: 0'));
  t.throws(() => SequenceSet.fromNumbers([1.5]), new RangeError('not an nz-number: 1.5'));
  t.throws(() => SequenceSet.fromNumbers([4294967296]), new RangeError('not an nz-number: 4294967296'));
  t.equal(SequenceSet.fromRanges([[9, 12], [1, 5], [7, 7], [5, 3]]).toString(), '1:5,7,9:12');
  t.equal(SequenceSet.fromRanges([]).toString(), '');
  t.throws(() => SequenceSet.fromRanges([[0, 3]]), RangeError);
});

t.test('formatSequenceSet (and appenduid.ts uidSet, the same function)', async (t) => {
  t.equal(uidSet, formatSequenceSet);
  t.equal(formatSequenceSet([]), '');
  t.equal(formatSequenceSet([7]), '7');
  t.equal(formatSequenceSet([1, 2, 3, 4, 5, 7, 9, 10, 11, 12]), '1:5,7,9:12');
  t.equal(formatSequenceSet([3, 4, 5, 9]), '3:5,9');
  t.equal(formatSequenceSet([1, 3, 5]), '1,3,5');
  t.equal(formatSequenceSet([2, 2, 3, 3, 7]), '2:3,7', 'duplicates skipped');
  t.equal(formatSequenceSet(uids(4294967294, 4294967295)), '4294967294:4294967295');
});

/** A random set over a small universe as text (shuffled, reversed ranges, overlaps) and as a model. */
function randomSet(rand: () => number, universe: number): { text: string; model: Set<number> } {
  const model = new Set<number>();
  const items: string[] = [];
  const count = 1 + Math.floor(rand() * 8);
  for (let k = 0; k < count; k++) {
    const a = 1 + Math.floor(rand() * universe);
    const b = rand() < 0.4 ? a : 1 + Math.floor(rand() * universe);
    for (let v = Math.min(a, b); v <= Math.max(a, b); v++) model.add(v);
    items.push(a === b && rand() < 0.5 ? String(a) : `${a}:${b}`);
  }
  return { text: items.join(','), model };
}

t.test('generated: parse agrees with a model; text round trips; queries agree', async (t) => {
  const rand = prng(7162);
  let checked = 0;
  for (let round = 0; round < 2000; round++) {
    const universe = 1 + Math.floor(rand() * 60);
    const { text, model } = randomSet(rand, universe);
    const set = SequenceSet.parse(text);
    const members = [...model].sort((a, b) => a - b);
    if (JSON.stringify([...set]) !== JSON.stringify(members)) {
      t.fail(`members of ${text}`);
      continue;
    }
    const canonical = set.toString();
    if (canonical !== formatSequenceSet(members)) t.fail(`format of ${text}`);
    if (!SequenceSet.parse(canonical).equals(set)) t.fail(`round trip of ${text}`);
    if (SequenceSet.parse(canonical).toString() !== canonical) t.fail(`canonical of ${text}`);
    if (set.size !== members.length) t.fail(`size of ${text}`);
    // Canonical text: ranges ascending, disjoint and non-adjacent.
    const ranges = [...set.ranges()];
    for (let i = 1; i < ranges.length; i++) if (ranges[i]![0] <= ranges[i - 1]![1] + 1) t.fail(`not canonical: ${canonical}`);
    for (let v = 0; v <= universe + 1; v++) if (set.has(v) !== model.has(v)) t.fail(`has(${v}) of ${text}`);
    // Against a random UID list.
    const present = [...Array(universe + 5).keys()].map((i) => i + 1).filter(() => rand() < 0.5);
    const sorted = Uint32Array.from(present);
    const inter = present.filter((v) => model.has(v));
    if (JSON.stringify([...set.intersect(sorted)]) !== JSON.stringify(inter)) t.fail(`intersect of ${text}`);
    const missing = members.filter((v) => !present.includes(v));
    if (set.missingFrom(sorted).toString() !== formatSequenceSet(missing)) t.fail(`missingFrom of ${text}`);
    const lo = 1 + Math.floor(rand() * universe);
    const hi = lo + Math.floor(rand() * universe);
    if (set.clamp(lo, hi).toString() !== formatSequenceSet(members.filter((v) => v >= lo && v <= hi))) t.fail(`clamp of ${text}`);
    // fromNumbers / fromRanges rebuild the same set.
    if (!SequenceSet.fromNumbers(members).equals(set)) t.fail(`fromNumbers of ${text}`);
    if (!SequenceSet.fromRanges(ranges.slice().reverse()).equals(set)) t.fail(`fromRanges of ${text}`);
    checked++;
  }
  t.equal(checked, 2000);
});

// ---- RFC 7162 §3.2.5.2 seq-match-data ---------------------------------------------------

const match = (sequences: string, uidsText: string): SeqMatchData => ({
  sequences: SequenceSet.parse(sequences, { ascending: true }),
  uids: SequenceSet.parse(uidsText, { ascending: true }),
});

/** The per-pair algorithm, written plainly: walk pairs ascending, stop at the first mismatch. */
function floorModel(m: SeqMatchData, current: Uint32Array): number {
  const s = [...m.sequences];
  const u = [...m.uids];
  let floor = 0;
  for (let i = 0; i < Math.min(s.length, u.length); i++) {
    if (s[i]! > current.length || current[s[i]! - 1] !== u[i]) break;
    floor = u[i]!;
  }
  return floor;
}

t.test('seqMatchFloor: the RFC 7162 §3.2.5.2 text example', async (t) => {
  // "if the Nth message number in the first set in the list is 4, and the Nth UID in the second set
  // in the list is 8, and the mailbox's fourth message has UID 8, then no UIDs equal to or less
  // than 8 are present in the VANISHED response. If the (N+1)th message number is 12, and the
  // (N+1)th UID is 24, and the [12th] message in the mailbox has UID 25, then the lowest UID
  // included in the VANISHED response would be 9."
  const current = uids(2, 3, 5, 8, 10, 12, 14, 16, 18, 20, 22, 25, 30);
  t.equal(seqMatchFloor(match('4,12', '8,24'), current), 8);
  t.equal(
    qresyncVanished({ knownUids: SequenceSet.parse('1:30'), currentUids: current, uidNext: 31, seqMatch: match('4,12', '8,24') }).min,
    9,
  );
});

t.test('seqMatchFloor: stops at the first mismatch, and past the last message', async (t) => {
  const current = seqUids(10, (i) => i * 10); // message i has UID 10i
  t.equal(seqMatchFloor(match('1:10', '10,20,30,40,50,60,70,80,90,100'), current), 100, 'all match');
  t.equal(seqMatchFloor(match('1:3', '10,20,31'), current), 20);
  t.equal(seqMatchFloor(match('1', '11'), current), 0, 'first pair mismatches');
  t.equal(seqMatchFloor(match('2,5,9', '20,51,90'), current), 20, 'a later match does not count after a mismatch');
  t.equal(seqMatchFloor(match('10,11', '100,110'), current), 100, 'message 11 does not exist');
  t.equal(seqMatchFloor(match('11', '110'), current), 0);
  t.equal(seqMatchFloor(match('1', '10'), uids()), 0, 'empty mailbox');
  t.equal(seqMatchFloor({ sequences: SequenceSet.EMPTY, uids: SequenceSet.EMPTY }, current), 0);
  // Runs: consecutive numbers against consecutive UIDs, matched by binary search.
  const dense = seqUids(1000, (i) => (i <= 500 ? i : i + 7)); // UIDs 501..507 expunged
  t.equal(seqMatchFloor(match('1:1000', '1:1000'), dense), 500);
  t.equal(seqMatchFloor(match('1:400,600:700', '1:400,607:707'), dense), 707);
  t.equal(seqMatchFloor(match('100:1000', '100:500,508:1007'), dense), 1007);
  t.equal(seqMatchFloor(match('1:5', '1:5'), seqUids(3)), 3, 'numbers beyond EXISTS');
  // Big sets cost ranges, not members.
  const huge = seqUids(200_000);
  t.equal(seqMatchFloor(match('1:4294967295', '1:4294967295'), huge), 200_000);
});

t.test('seqMatchFloor: generated, against the per-pair model', async (t) => {
  const rand = prng(3252);
  for (let round = 0; round < 1500; round++) {
    // A mailbox, a client snapshot of it from before some expunges, and a sample of pairs.
    const snapshot: number[] = [];
    let uid = 0;
    const n = 1 + Math.floor(rand() * 40);
    for (let i = 0; i < n; i++) snapshot.push((uid += 1 + Math.floor(rand() * 3)));
    const current = Uint32Array.from(snapshot.filter(() => rand() < 0.85).concat([uid + 5, uid + 9]));
    const picks = [...Array(n).keys()].filter(() => rand() < 0.4);
    if (picks.length === 0) continue;
    // Sometimes the client is wrong about a UID.
    const pairedUids = picks.map((i) => snapshot[i]! + (rand() < 0.05 ? 1 : 0));
    if (pairedUids.some((u, k) => k > 0 && u <= pairedUids[k - 1]!)) continue;
    const m: SeqMatchData = {
      sequences: SequenceSet.fromNumbers(picks.map((i) => i + 1)),
      uids: SequenceSet.fromNumbers(pairedUids),
    };
    const expected = floorModel(m, current);
    if (seqMatchFloor(m, current) !== expected) t.fail(`seq ${m.sequences} uids ${m.uids} current ${[...current]}`);
    // The floor is safe: no UID at or below it that the client had is missing now, unless the client was wrong.
    if (pairedUids.every((u, k) => u === snapshot[picks[k]!]!)) {
      for (const u of snapshot) if (u <= expected && !current.includes(u)) t.fail(`unsafe floor ${expected}`);
    }
  }
  t.pass('done');
});

// ---- RFC 7162 §3.2.5 VANISHED (EARLIER) for a server remembering no expunges -------------

t.test('qresyncVanished: RFC 7162 §3.2.5.1 example (A03)', async (t) => {
  // C: A03 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))
  // S: * 100 EXISTS ... [UIDNEXT 600] ... * VANISHED (EARLIER) 41,43:116,118,120:211,214:540
  // with UIDs 42, 117, 119 and 541 still there (they get FETCH responses or none).
  const current = Uint32Array.from([
    ...Array.from({ length: 38 }, (_, i) => i + 1),
    42,
    117,
    119,
    541,
    ...Array.from({ length: 58 }, (_, i) => 542 + i),
  ]);
  t.equal(current.length, 100);
  const vanished = qresyncVanished({ knownUids: SequenceSet.parse('41:211,214:541'), currentUids: current, uidNext: 600 });
  t.equal(vanished.toString(), '41,43:116,118,120:211,214:540');
});

t.test('qresyncVanished: RFC 7162 §3.2.5.2 examples (A04 without, B04 with seq-match-data)', async (t) => {
  // "only UIDs with messages divisible by three are present in the mailbox": message i has UID 3i.
  const current = seqUids(10003, (i) => 3 * i);
  const knownUids = SequenceSet.parse('1:29997');
  const a04 = qresyncVanished({ knownUids, currentUids: current, uidNext: 30013 });
  // S: * VANISHED (EARLIER) 1:2,4:5,7:8,10:11,13:14,[...],29668:29669,...
  t.equal(a04.toString().slice(0, 'x1:2,4:5,7:8,10:11,13:14,'.length - 1), '1:2,4:5,7:8,10:11,13:14,');
  t.ok(a04.toString().includes(',29668:29669,29671:29672,'));
  t.equal(a04.size, 29997 - 9999, 'every UID of 1:29997 that is not a multiple of 3');
  t.equal(a04.max, 29996);
  // (The RFC's elided line ends "29671:29996", which contradicts its own premise: 29673 ... 29994
  // are multiples of three, present, and get FETCH responses in the same example.)
  // C: B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999
  //    15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))
  // S: (no VANISHED)
  const seqMatch = match('5000,7500,9000,9990:9999', '15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997');
  t.equal(seqMatchFloor(seqMatch, current), 29997);
  t.equal(qresyncVanished({ knownUids, currentUids: current, uidNext: 30013, seqMatch }).toString(), '');
});

t.test('qresyncVanished: defaults and bounds', async (t) => {
  const current = uids(2, 4, 6);
  // §3.2.5.1: no known-uids is "1:<maxuid>", maxuid = UIDNEXT - 1.
  t.equal(qresyncVanished({ currentUids: current, uidNext: 9 }).toString(), '1,3,5,7:8');
  // "If the mailbox is empty and never had any messages in it, then lack of the list of UIDs is interpreted as an empty set".
  t.equal(qresyncVanished({ currentUids: uids(), uidNext: 1 }).toString(), '');
  t.equal(qresyncVanished({ knownUids: SequenceSet.parse('1:100'), currentUids: uids(), uidNext: 1 }).toString(), '');
  // UIDs not yet assigned have not vanished.
  t.equal(qresyncVanished({ knownUids: SequenceSet.parse('1:4294967295'), currentUids: current, uidNext: 7 }).toString(), '1,3,5');
  t.equal(qresyncVanished({ knownUids: SequenceSet.parse('5:10'), currentUids: current, uidNext: 7 }).toString(), '5');
  // seq-match floor at or above maxuid: nothing.
  t.equal(qresyncVanished({ currentUids: current, uidNext: 7, seqMatch: match('3', '6') }).toString(), '');
  t.equal(qresyncVanished({ currentUids: current, uidNext: 9, seqMatch: match('2', '4') }).toString(), '5,7:8');
  t.equal(qresyncVanished({ currentUids: uids(1), uidNext: 2 ** 33 }).toString(), '2:4294967295', 'maxuid capped at 2^32-1');
});

t.test('isSequenceSet: the RFC 3501 §9 grammar, "*" allowed, 0 not', async (t) => {
  const { isSequenceSet } = await import('../src/imap/protocol/sequence-set.js');
  for (const ok of ['1', '*', '1:*', '2,4:7,9,12:*', '4294967295']) t.ok(isSequenceSet(ok), ok);
  for (const bad of ['', '0', '1:0', '1,,2', 'a', '1:2:3', '4294967296', '-1', ' 1']) t.notOk(isSequenceSet(bad), JSON.stringify(bad));
});
