/**
 * Unit tests of lemonade/qresync/params.ts and lemonade/qresync/responses.ts: the RFC 7162
 * (CONDSTORE/QRESYNC) and RFC 5161 (ENABLE) arguments and responses, with the RFC examples.
 */
import t from 'tap';
import { parseSegments, type ImapValue } from '../src/imap/protocol/parser.js';
import { SequenceSet } from '../src/imap/protocol/sequence-set.js';
import { tagged } from '../src/imap/protocol/writer.js';
import {
  MAX_MOD_SEQUENCE,
  fetchItemsText,
  formatValues,
  parseEnable,
  parseFetchModifiers,
  parseModSequence,
  parseSearchModseq,
  parseSelectParams,
  parseStoreModifiers,
  resolveEnable,
  type ParamResult,
} from '../src/lemonade/qresync/params.js';
import {
  closedResponse,
  enabledResponse,
  expungeNumber,
  highestModseqCode,
  highestModseqResponse,
  insertFetchModseq,
  modSequenceText,
  modifiedCode,
  noModseqResponse,
  parseFetchHead,
  searchResponse,
  vanishedResponses,
} from '../src/lemonade/qresync/responses.js';

/** The parsed items of a command line (literals given as {n}\r\n + data). */
function items(line: string): ImapValue[] {
  const segments: Buffer[] = [];
  const literals: Buffer[] = [];
  let rest = `${line}\r\n`;
  for (let m = /\{(\d+)\}\r\n/.exec(rest); m !== null; m = /\{(\d+)\}\r\n/.exec(rest)) {
    const end = m.index + m[0].length;
    segments.push(Buffer.from(rest.slice(0, end), 'latin1'));
    literals.push(Buffer.from(rest.slice(end, end + Number(m[1])), 'latin1'));
    rest = rest.slice(end + Number(m[1]));
  }
  segments.push(Buffer.from(rest, 'latin1'));
  return parseSegments(segments, literals).items;
}

/** The tagged response a refusal asks for, or "accepted". */
function response<T>(r: ParamResult<T>, tag: string): string {
  if (r.ok) return 'accepted';
  return tagged(tag, r.error.status, r.error.text, r.error.code).toString('latin1');
}

function value<T>(r: ParamResult<T>): T {
  if (!r.ok) throw new Error(`refused: ${r.error.text}`);
  return r.value;
}

const QR = { qresyncEnabled: true };
const NO_QR = { qresyncEnabled: false };
const select = (line: string, context = QR) => parseSelectParams(items(line).slice(2), context);

// ---- mod-sequences ----------------------------------------------------------------------

t.test('parseModSequence: mod-sequence-value and mod-sequence-valzer (RFC 7162 §7)', async (t) => {
  const atom = (v: string): ImapValue => ({ type: 'atom', value: v });
  t.equal(parseModSequence(atom('1')), 1n);
  t.equal(parseModSequence(atom('715194045007')), 715194045007n);
  t.equal(parseModSequence(atom('9223372036854775807')), MAX_MOD_SEQUENCE);
  t.equal(MAX_MOD_SEQUENCE, 2n ** 63n - 1n);
  t.equal(parseModSequence(atom('9223372036854775808')), undefined, '2^63');
  t.equal(parseModSequence(atom('18446744073709551615')), undefined, '2^64-1');
  t.equal(parseModSequence(atom('00012')), 12n, '1*DIGIT: leading zeros');
  t.equal(parseModSequence(atom('0000000000000000000000009223372036854775807')), MAX_MOD_SEQUENCE);
  t.equal(parseModSequence(atom('0')), undefined, 'value: 0 is not allowed');
  t.equal(parseModSequence(atom('000')), undefined);
  t.equal(parseModSequence(atom('0'), true), 0n, 'valzer: 0 is allowed');
  t.equal(parseModSequence(atom('00'), true), 0n);
  t.equal(parseModSequence(atom('-1'), true), undefined);
  t.equal(parseModSequence(atom('1e3')), undefined);
  t.equal(parseModSequence(atom('')), undefined);
  t.equal(parseModSequence({ type: 'string', value: Buffer.from('5'), literal: false }), undefined, 'a quoted number is not 1*DIGIT');
  t.equal(parseModSequence(undefined), undefined);
  t.equal(parseModSequence(atom('9'.repeat(5000))), undefined, 'long: refused without BigInt work');
});

// ---- SELECT / EXAMINE ---------------------------------------------------------------------

t.test('SELECT/EXAMINE parameters: none, CONDSTORE, QRESYNC, both', async (t) => {
  t.same(value(select('a SELECT INBOX')), { condstore: false, enablesCondstore: false });
  t.same(value(select('a EXAMINE "Sent Items"')), { condstore: false, enablesCondstore: false });
  // §3.1.8 Example 18: C: A142 SELECT INBOX (CONDSTORE)
  t.same(value(select('A142 SELECT INBOX (CONDSTORE)', NO_QR)), { condstore: true, enablesCondstore: true });
  t.same(value(select('A142 SELECT INBOX (condstore)', NO_QR)), { condstore: true, enablesCondstore: true }, 'case-insensitive');

  // §3.2.5 example: C: A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))
  const a02 = value(select('A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))'));
  t.equal(a02.condstore, false);
  t.equal(a02.enablesCondstore, true);
  t.equal(a02.qresync?.uidValidity, 67890007);
  t.equal(a02.qresync?.modSequence, 20050715194045000n);
  t.equal(a02.qresync?.knownUids?.toString(), '41,43:211,214:541');
  t.equal(a02.qresync?.seqMatch, undefined);

  // §6 example: C: A142 SELECT INBOX (QRESYNC (3857529045 20010715194032001 1:198))
  const a142 = value(select('A142 SELECT INBOX (QRESYNC (3857529045 20010715194032001 1:198))'));
  t.equal(a142.qresync?.uidValidity, 3857529045);
  t.equal(a142.qresync?.knownUids?.toString(), '1:198');

  // §3.2.5.2 example B04, with seq-match-data
  const b04 = value(
    select(
      'B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))',
    ),
  );
  t.equal(b04.qresync?.knownUids?.toString(), '1:29997');
  t.equal(b04.qresync?.seqMatch?.sequences.toString(), '5000,7500,9000,9990:9999');
  t.equal(b04.qresync?.seqMatch?.uids.toString(), '15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997');

  // Minimal, and seq-match-data without known-uids (the ABNF allows it).
  const min = value(select('a SELECT INBOX (QRESYNC (1 1))'));
  t.same({ uv: min.qresync?.uidValidity, ms: min.qresync?.modSequence, k: min.qresync?.knownUids, m: min.qresync?.seqMatch }, {
    uv: 1,
    ms: 1n,
    k: undefined,
    m: undefined,
  });
  const noKnown = value(select('a SELECT INBOX (QRESYNC (1 5 (1:3 10:12)))'));
  t.equal(noKnown.qresync?.knownUids, undefined);
  t.equal(noKnown.qresync?.seqMatch?.uids.toString(), '10:12');

  // Both, in either order.
  const both = value(select('a SELECT INBOX (CONDSTORE QRESYNC (4294967295 9223372036854775807))'));
  t.equal(both.condstore, true);
  t.equal(both.qresync?.uidValidity, 4294967295);
  t.equal(both.qresync?.modSequence, MAX_MOD_SEQUENCE);
  t.equal(value(select('a EXAMINE INBOX (QRESYNC (1 2 3) CONDSTORE)')).condstore, true);
});

t.test('SELECT/EXAMINE parameters: every refusal, with its exact response', async (t) => {
  const cases: Array<[string, string, { qresyncEnabled: boolean }?]> = [
    // §3.2.5: "A server MUST respond with a tagged BAD response if the Quick Resynchronization
    // parameter to the SELECT/EXAMINE command is specified and the client hasn't issued ENABLE QRESYNC"
    ['a1 SELECT INBOX (QRESYNC (67890007 20050715194045000 41:211))', 'a1 BAD QRESYNC is not enabled\r\n', NO_QR],
    ['a1 SELECT INBOX (QRESYNC)', 'a1 BAD QRESYNC is not enabled\r\n', NO_QR],
    ['a1 SELECT INBOX (CONDSTORE) extra', 'a1 BAD Too many arguments\r\n'],
    ['a1 SELECT INBOX CONDSTORE', 'a1 BAD Parameters must be a parenthesized list\r\n'],
    ['a1 SELECT INBOX ()', 'a1 BAD Empty parameter list\r\n'],
    ['a1 SELECT INBOX ("CONDSTORE")', 'a1 BAD Invalid parameter\r\n'],
    ['a1 SELECT INBOX ((CONDSTORE))', 'a1 BAD Invalid parameter\r\n'],
    ['a1 SELECT INBOX (UTF8)', 'a1 BAD Unknown parameter UTF8\r\n'],
    ['a1 SELECT INBOX (X-A-VERY-LONG-PARAMETER-NAME-FROM-A-CLIENT)', 'a1 BAD Unknown parameter X-A-VERY-LONG-PARAMETER-NAME-FRO...\r\n'],
    ['a1 SELECT INBOX (CONDSTORE CONDSTORE)', 'a1 BAD CONDSTORE given twice\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1) QRESYNC (1 1))', 'a1 BAD QRESYNC given twice\r\n'],
    ['a1 SELECT INBOX (QRESYNC)', 'a1 BAD QRESYNC expects (uidvalidity mod-sequence [known-uids] [(known-sequence-set known-uid-set)])\r\n'],
    ['a1 SELECT INBOX (QRESYNC 1)', 'a1 BAD QRESYNC expects (uidvalidity mod-sequence [known-uids] [(known-sequence-set known-uid-set)])\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1))', 'a1 BAD QRESYNC expects (uidvalidity mod-sequence [known-uids] [(known-sequence-set known-uid-set)])\r\n'],
    ['a1 SELECT INBOX (QRESYNC ())', 'a1 BAD QRESYNC expects (uidvalidity mod-sequence [known-uids] [(known-sequence-set known-uid-set)])\r\n'],
    // uidvalidity = nz-number
    ['a1 SELECT INBOX (QRESYNC (0 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    ['a1 SELECT INBOX (QRESYNC (01 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    ['a1 SELECT INBOX (QRESYNC (4294967296 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    ['a1 SELECT INBOX (QRESYNC (-1 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    ['a1 SELECT INBOX (QRESYNC ("1" 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    ['a1 SELECT INBOX (QRESYNC ((1) 1))', 'a1 BAD Invalid QRESYNC uidvalidity\r\n'],
    // mod-sequence-value: 1 <= n <= 2^63-1
    ['a1 SELECT INBOX (QRESYNC (1 0))', 'a1 BAD Invalid QRESYNC mod-sequence\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 9223372036854775808))', 'a1 BAD Invalid QRESYNC mod-sequence\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 x))', 'a1 BAD Invalid QRESYNC mod-sequence\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 NIL))', 'a1 BAD Invalid QRESYNC mod-sequence\r\n'],
    // known-uids: sequence-set without "*"
    ['a1 SELECT INBOX (QRESYNC (1 1 1:*))', 'a1 BAD Invalid QRESYNC known-uids: "*" is not allowed here (offset 2)\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 0:5))', 'a1 BAD Invalid QRESYNC known-uids: invalid sequence set at offset 0\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1,,2))', 'a1 BAD Invalid QRESYNC known-uids: invalid sequence set at offset 2\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 $))', 'a1 BAD Invalid QRESYNC known-uids: invalid sequence set at offset 0\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 "1:5"))', 'a1 BAD Too many QRESYNC parameters\r\n'],
    // seq-match-data
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 ()))', 'a1 BAD Invalid QRESYNC seq-match-data\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1:3)))', 'a1 BAD Invalid QRESYNC seq-match-data\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1 2 3)))', 'a1 BAD Invalid QRESYNC seq-match-data\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 ("1" 2)))', 'a1 BAD Invalid QRESYNC known-sequence-set\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1 (2))))', 'a1 BAD Invalid QRESYNC known-uid-set\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1:* 2)))', 'a1 BAD Invalid QRESYNC known-sequence-set: "*" is not allowed here (offset 2)\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1 *)))', 'a1 BAD Invalid QRESYNC known-uid-set: "*" is not allowed here (offset 0)\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (3,1 2,4)))', 'a1 BAD Invalid QRESYNC known-sequence-set: sequence set not in ascending order at offset 2\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1,3 4,2)))', 'a1 BAD Invalid QRESYNC known-uid-set: sequence set not in ascending order at offset 2\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1:3 2,4)))', 'a1 BAD QRESYNC seq-match-data sets differ in size\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1:3 2:4) 5))', 'a1 BAD Too many QRESYNC parameters\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 (1 2) (3 4)))', 'a1 BAD Too many QRESYNC parameters\r\n'],
    ['a1 SELECT INBOX (QRESYNC (1 1 1:9 2:3))', 'a1 BAD Too many QRESYNC parameters\r\n'],
  ];
  for (const [line, expected, context] of cases) t.equal(response(select(line, context ?? QR), 'a1'), expected, line);
  // Bounds apply to every set.
  const limits = { maxLength: 10, maxRanges: 2 };
  t.equal(
    response(parseSelectParams(items('a1 SELECT INBOX (QRESYNC (1 1 1,3,5))').slice(2), { qresyncEnabled: true, limits }), 'a1'),
    'a1 BAD Invalid QRESYNC known-uids: more than 2 items in a sequence set\r\n',
  );
  t.equal(
    response(parseSelectParams(items('a1 SELECT INBOX (QRESYNC (1 1 (1:100000000 1:100000000)))').slice(2), { qresyncEnabled: true, limits }), 'a1'),
    'a1 BAD Invalid QRESYNC known-sequence-set: sequence set longer than 10 characters\r\n',
  );
});

// ---- FETCH ----------------------------------------------------------------------------------

const fetch = (line: string, context = { uid: true, qresyncEnabled: true }) =>
  parseFetchModifiers(items(line).slice(context.uid ? 3 : 2), context);

t.test('FETCH modifiers: the RFC 7162 examples', async (t) => {
  // §3.1.4.1 Example 12: C: s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)
  t.same(value(fetch('s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)', { uid: true, qresyncEnabled: false })), {
    items: ['FLAGS'],
    modseq: true, // implied by CHANGEDSINCE
    uid: false,
    upstreamItems: ['FLAGS'],
    changedSince: 12345n,
    vanished: false,
  });
  // §3.1.4.2 Example 13: C: a FETCH 1:3 (MODSEQ)
  t.same(value(fetch('a FETCH 1:3 (MODSEQ)', { uid: false, qresyncEnabled: false })), {
    items: ['MODSEQ'],
    modseq: true,
    uid: false,
    upstreamItems: [],
    vanished: false,
  });
  // §3.2.6: C: s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)
  t.same(value(fetch('s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)')), {
    items: ['FLAGS'],
    modseq: true,
    uid: false,
    upstreamItems: ['FLAGS'],
    changedSince: 12345n,
    vanished: true,
  });
  // §3.2.5.1: "semantically equivalent to ... UID FETCH known-uids (FLAGS) (CHANGEDSINCE mod-sequence-value VANISHED)"
  t.equal(value(fetch('x UID FETCH 1:9 (FLAGS) (VANISHED CHANGEDSINCE 7)')).vanished, true, 'any order');
});

t.test('FETCH modifiers: items, macros and the upstream items', async (t) => {
  const f = value(fetch('a UID FETCH 1:* (UID modseq FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>)'));
  t.same(f.items, ['UID', 'modseq', 'FLAGS', 'BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>']);
  t.same(f.upstreamItems, ['UID', 'FLAGS', 'BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>']);
  t.equal(f.modseq, true);
  t.equal(f.uid, true);
  t.equal(f.changedSince, undefined);
  t.equal(f.vanished, false);
  const macro = value(fetch('a FETCH 1:5 FAST', { uid: false, qresyncEnabled: false }));
  t.same(macro.items, ['FAST']);
  t.equal(macro.modseq, false);
  t.equal(fetchItemsText(macro.upstreamItems), 'FAST');
  t.equal(fetchItemsText(f.upstreamItems), '(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>)');
  t.equal(fetchItemsText([]), undefined);
  t.same(value(fetch('a FETCH 1 MODSEQ (CHANGEDSINCE 1)', { uid: false, qresyncEnabled: false })).upstreamItems, []);
});

t.test('FETCH modifiers: every refusal, with its exact response', async (t) => {
  const cases: Array<[string, string, { uid: boolean; qresyncEnabled: boolean }?]> = [
    ['a1 UID FETCH 1:*', 'a1 BAD FETCH expects message data items\r\n'],
    ['a1 UID FETCH 1:* ()', 'a1 BAD Empty list of message data items\r\n'],
    ['a1 UID FETCH 1:* "FLAGS"', 'a1 BAD Invalid message data item\r\n'],
    ['a1 UID FETCH 1:* (FLAGS (UID))', 'a1 BAD Invalid message data item\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1) (VANISHED)', 'a1 BAD Too many arguments\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) CHANGEDSINCE', 'a1 BAD FETCH modifiers must be a parenthesized list\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) ()', 'a1 BAD Empty FETCH modifier list\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) ((CHANGEDSINCE 1))', 'a1 BAD Invalid FETCH modifier\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (PARTIAL 1:10)', 'a1 BAD Unknown FETCH modifier PARTIAL\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE)', 'a1 BAD Invalid CHANGEDSINCE mod-sequence\r\n'],
    // §7 chgsince-fetch-mod = "CHANGEDSINCE" SP mod-sequence-value: not 0
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0)', 'a1 BAD Invalid CHANGEDSINCE mod-sequence\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 9223372036854775808)', 'a1 BAD Invalid CHANGEDSINCE mod-sequence\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE "5")', 'a1 BAD Invalid CHANGEDSINCE mod-sequence\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)', 'a1 BAD CHANGEDSINCE given twice\r\n'],
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED VANISHED)', 'a1 BAD VANISHED given twice\r\n'],
    // §3.2.6: "the VANISHED UID FETCH modifier is NOT allowed with a FETCH command"
    ['a1 FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)', 'a1 BAD VANISHED is only allowed with UID FETCH\r\n', { uid: false, qresyncEnabled: true }],
    // "... if the VANISHED UID FETCH modifier is specified and the client hasn't issued ENABLE QRESYNC"
    ['a1 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)', 'a1 BAD VANISHED needs ENABLE QRESYNC\r\n', { uid: true, qresyncEnabled: false }],
    // "If the VANISHED UID FETCH modifier is used without the CHANGEDSINCE UID FETCH modifier, ... BAD"
    ['a1 UID FETCH 1:* (FLAGS) (VANISHED)', 'a1 BAD VANISHED needs CHANGEDSINCE\r\n'],
  ];
  for (const [line, expected, context] of cases) t.equal(response(fetch(line, context), 'a1'), expected, line);
});

// ---- STORE ----------------------------------------------------------------------------------

const store = (line: string, uid = false) => parseStoreModifiers(items(line).slice(uid ? 3 : 2));

t.test('STORE modifiers: the RFC 7162 examples', async (t) => {
  // §3.1.3 Example 3: C: a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\Deleted)
  t.same(value(store('a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)', true)), {
    operation: 'add',
    silent: true,
    item: '+FLAGS.SILENT',
    flags: ['\\Deleted'],
    unchangedSince: 12121230045n,
  });
  // Example 4: C: a104 STORE * (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\Deleted $Processed)
  t.same(value(store('a104 STORE * (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted $Processed)')).flags, ['\\Deleted', '$Processed']);
  // Example 5: C: c101 STORE 50 (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT (\Deleted)
  t.equal(value(store('c101 STORE 50 (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT (\\Deleted)')).operation, 'remove');
  // Example 8: C: a102 STORE 12 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent): mod-sequence-valzer
  t.equal(value(store('a102 STORE 12 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)')).unchangedSince, 0n);
  // Example 11: C: B001 STORE 1:7 (UNCHANGEDSINCE 320172338) +FLAGS (\SEEN)
  t.same(value(store('B001 STORE 1:7 (UNCHANGEDSINCE 320172338) +FLAGS (\\SEEN)')), {
    operation: 'add',
    silent: false,
    item: '+FLAGS',
    flags: ['\\SEEN'],
    unchangedSince: 320172338n,
  });
  // §6: C: A150 STORE 1:2 (UNCHANGEDSINCE 96) +FLAGS.SILENT \Seen   (flags without parentheses)
  t.same(value(store('A150 STORE 1:2 (UNCHANGEDSINCE 96) +FLAGS.SILENT \\Seen')).flags, ['\\Seen']);
  // Plain STORE, no modifier.
  t.same(value(store('a STORE 1 flags.silent \\Seen \\Answered')), { operation: 'replace', silent: true, item: 'flags.silent', flags: ['\\Seen', '\\Answered'] });
  t.same(value(store('a STORE 1 FLAGS ()')).flags, [], 'an empty flag list clears');
  t.equal(value(store('a STORE 1 (UNCHANGEDSINCE 9223372036854775807) FLAGS ()')).unchangedSince, MAX_MOD_SEQUENCE);
});

t.test('STORE modifiers: every refusal, with its exact response', async (t) => {
  const cases: Array<[string, string]> = [
    ['a1 STORE 1', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE 5)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 () +FLAGS (\\Seen)', 'a1 BAD Empty STORE modifier list\r\n'],
    ['a1 STORE 1 ("UNCHANGEDSINCE" 5) +FLAGS (\\Seen)', 'a1 BAD Invalid STORE modifier\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE 5 UNCHANGEDSINCE 6) +FLAGS (\\Seen)', 'a1 BAD UNCHANGEDSINCE given twice\r\n'],
    ['a1 STORE 1 (CHANGEDSINCE 5) +FLAGS (\\Seen)', 'a1 BAD Unknown STORE modifier CHANGEDSINCE\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)', 'a1 BAD Invalid UNCHANGEDSINCE mod-sequence\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)', 'a1 BAD Invalid UNCHANGEDSINCE mod-sequence\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE 9223372036854775808) +FLAGS (\\Seen)', 'a1 BAD Invalid UNCHANGEDSINCE mod-sequence\r\n'],
    ['a1 STORE 1 +FLAG (\\Seen)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 *FLAGS (\\Seen)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 +FLAGS.LOUD (\\Seen)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 "FLAGS" (\\Seen)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 (UNCHANGEDSINCE 5) (UNCHANGEDSINCE 6) FLAGS (\\Seen)', 'a1 BAD STORE expects FLAGS, +FLAGS or -FLAGS\r\n'],
    ['a1 STORE 1 +FLAGS', 'a1 BAD STORE expects flags\r\n'],
    ['a1 STORE 1 +FLAGS (\\Seen) \\Answered', 'a1 BAD Too many arguments\r\n'],
    ['a1 STORE 1 +FLAGS ("\\\\Seen")', 'a1 BAD Invalid flag\r\n'],
    ['a1 STORE 1 +FLAGS \\Seen ()', 'a1 BAD Invalid flag\r\n'],
    ['a1 STORE 1 +FLAGS NIL', 'a1 BAD Invalid flag\r\n'],
  ];
  for (const [line, expected] of cases) t.equal(response(store(line), 'a1'), expected, line);
});

// ---- SEARCH MODSEQ ----------------------------------------------------------------------------

const search = (line: string, uid = false) => parseSearchModseq(items(line).slice(uid ? 2 : 1));
const programText = (program: ImapValue[]): string => formatValues(program).toString('latin1');

t.test('SEARCH MODSEQ: the RFC 7162 examples', async (t) => {
  // §3.1.5 Example 15: C: a SEARCH MODSEQ "/flags/\\draft" all 620162338
  const e15 = value(search('a SEARCH MODSEQ "/flags/\\\\draft" all 620162338'));
  t.same(e15.criteria, [{ value: 620162338n, entryName: '/flags/\\draft', entryType: 'all' }]);
  t.equal(e15.modseq, 620162338n);
  t.equal(programText(e15.program), 'ALL', 'nothing left: ALL');
  // Example 16: C: t SEARCH OR NOT MODSEQ 720162338 LARGER 50000: under OR/NOT, not supported.
  t.equal(response(search('t SEARCH OR NOT MODSEQ 720162338 LARGER 50000'), 't'), 't NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n');
  // §3.1.10 Example 19: C: a SEARCH RETURN (ALL) MODSEQ 1234
  const e19 = value(search('a SEARCH RETURN (ALL) MODSEQ 1234'));
  t.equal(e19.modseq, 1234n);
  t.equal(programText(e19.program), 'RETURN (ALL) ALL');
});

t.test('SEARCH MODSEQ: extraction keeps the rest of the program', async (t) => {
  const cases: Array<[string, string, bigint | undefined]> = [
    ['a SEARCH MODSEQ 0', 'ALL', 0n],
    ['a SEARCH modseq 00012 UNSEEN', 'UNSEEN', 12n],
    ['a UID SEARCH 1:* MODSEQ 5 FROM "a b"', '1:* FROM "a b"', 5n],
    ['a SEARCH CHARSET UTF-8 MODSEQ 5 SUBJECT caf', 'CHARSET UTF-8 SUBJECT caf', 5n],
    ['a SEARCH MODSEQ 5 MODSEQ 9 MODSEQ 7', 'ALL', 9n],
    ['a SEARCH (MODSEQ 5 SEEN) DELETED', '(SEEN) DELETED', 5n],
    ['a SEARCH (MODSEQ 5) DELETED', 'DELETED', 5n],
    ['a SEARCH ((MODSEQ 5))', 'ALL', 5n],
    ['a SEARCH SUBJECT MODSEQ', 'SUBJECT MODSEQ', undefined],
    ['a SEARCH HEADER MODSEQ MODSEQ MODSEQ 3', 'HEADER MODSEQ MODSEQ', 3n],
    ['a SEARCH OR SEEN DRAFT MODSEQ 4', 'OR SEEN DRAFT', 4n],
    ['a SEARCH NOT SEEN MODSEQ 4 UID 1:5,7', 'NOT SEEN UID 1:5,7', 4n],
    ['a SEARCH MODSEQ 4 $', '$', 4n],
    ['a SEARCH MODSEQ "/flags/$mdnsent" priv 4 ANNOTATION /comment value "x"', 'ANNOTATION /comment value "x"', 4n],
    ['a SEARCH MODSEQ 9223372036854775807 YOUNGER 60', 'YOUNGER 60', MAX_MOD_SEQUENCE],
    ['a SEARCH OR (MODSEQ-X 1) SEEN', 'OR (MODSEQ-X 1) SEEN', undefined],
  ];
  for (const [line, rest, modseq] of cases) {
    const r = value(search(line, line.includes('UID SEARCH')));
    t.equal(programText(r.program), rest, line);
    t.equal(r.modseq, modseq, `${line}: modseq`);
  }
  // Without the atom MODSEQ anywhere, the program is returned as it is, not examined.
  const odd = value(search('a SEARCH X-UNKNOWN-KEY (((whatever)))'));
  t.same(odd, { criteria: [], program: items('a SEARCH X-UNKNOWN-KEY (((whatever)))').slice(1) });
  t.same(value(search('a SEARCH')), { criteria: [], program: [] });
  const entry = value(search('a SEARCH MODSEQ "/flags/\\\\Seen" SHARED 1 MODSEQ "/flags/x" Priv 2'));
  t.same(entry.criteria, [
    { value: 1n, entryName: '/flags/\\Seen', entryType: 'shared' },
    { value: 2n, entryName: '/flags/x', entryType: 'priv' },
  ]);
  // A literal entry name and literal arguments pass through.
  const lit = value(search('a SEARCH MODSEQ {8}\r\n/flags/x all 3 SUBJECT {5}\r\nhi\r\nx'));
  t.equal(lit.criteria[0]?.entryName, '/flags/x');
  t.equal(programText(lit.program), 'SUBJECT {5}\r\nhi\r\nx');
});

t.test('SEARCH MODSEQ: every refusal, with its exact response', async (t) => {
  const cases: Array<[string, string]> = [
    ['a1 SEARCH NOT MODSEQ 5', 'a1 NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n'],
    ['a1 SEARCH OR SEEN MODSEQ 5', 'a1 NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n'],
    ['a1 SEARCH OR (SEEN MODSEQ 5) DRAFT', 'a1 NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n'],
    ['a1 SEARCH NOT (NOT (MODSEQ 5))', 'a1 NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n'],
    ['a1 SEARCH FUZZY MODSEQ 5', 'a1 NO [CANNOT] MODSEQ inside OR, NOT or FUZZY is not supported\r\n'],
    ['a1 SEARCH MODSEQ', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ x', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ -1', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ 9223372036854775808', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ "/flags/\\\\seen" 5', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ "/flags/\\\\seen" every 5', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ "/flag/seen" all 5', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ "/flags/" all 5', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ (5)', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH MODSEQ 5 X-GM-RAW foo', 'a1 BAD Unsupported search key X-GM-RAW\r\n'],
    ['a1 SEARCH MODSEQ 5 "SEEN"', 'a1 BAD Invalid search key\r\n'],
    ['a1 SEARCH MODSEQ 5 NOT "SEEN"', 'a1 BAD Invalid search key\r\n'],
    ['a1 SEARCH MODSEQ 5 SUBJECT', 'a1 BAD Missing argument to SUBJECT\r\n'],
    ['a1 SEARCH MODSEQ 5 HEADER X-A', 'a1 BAD Missing argument to HEADER\r\n'],
    ['a1 SEARCH MODSEQ 5 SUBJECT (x)', 'a1 BAD Missing argument to SUBJECT\r\n'],
    ['a1 SEARCH MODSEQ 5 OR SEEN', 'a1 BAD Missing argument to OR\r\n'],
    ['a1 SEARCH MODSEQ 5 NOT', 'a1 BAD Missing argument to NOT\r\n'],
    ['a1 SEARCH MODSEQ 5 ()', 'a1 BAD Empty search key list\r\n'],
    ['a1 SEARCH MODSEQ 5 NOT ()', 'a1 BAD Empty search key list\r\n'],
    ['a1 SEARCH CHARSET', 'accepted'], // no MODSEQ: not examined, the upstream judges it
    ['a1 SEARCH CHARSET MODSEQ', 'a1 BAD SEARCH expects search keys\r\n'],
    ['a1 SEARCH MODSEQ 1 CHARSET UTF-8', 'a1 BAD Unsupported search key CHARSET\r\n'],
    ['a1 SEARCH CHARSET (UTF-8) MODSEQ 1', 'a1 BAD Missing argument to CHARSET\r\n'],
    ['a1 SEARCH CHARSET UTF-8', 'accepted'],
    ['a1 SEARCH RETURN (ALL) CHARSET UTF-8 (MODSEQ)', 'a1 BAD Invalid MODSEQ search key\r\n'],
    ['a1 SEARCH RETURN (MODSEQ)', 'a1 BAD SEARCH expects search keys\r\n'],
  ];
  for (const [line, expected] of cases) t.equal(response(search(line), 'a1'), expected, line);
  // Nesting is bounded (the parser itself allows any depth a line can hold).
  const deepList = `a1 SEARCH ${'('.repeat(70)}MODSEQ 5${')'.repeat(70)}`;
  t.equal(response(search(deepList), 'a1'), 'a1 BAD Search program nested too deeply\r\n');
  const deepNot = `a1 SEARCH MODSEQ 5 ${'NOT '.repeat(5000)}SEEN`;
  t.equal(response(search(deepNot), 'a1'), 'a1 BAD Search program nested too deeply\r\n');
  const shallow = `a1 SEARCH MODSEQ 5 ${'NOT '.repeat(60)}SEEN`;
  t.equal(response(search(shallow), 'a1'), 'accepted');
});

t.test('formatValues: values back to text', async (t) => {
  const line = 'a SEARCH CHARSET UTF-8 OR (FROM "x \\"y\\"" NIL) (HEADER X-A {3}\r\nabc) X[Y';
  const values = items(line).slice(1);
  const text = formatValues(values).toString('latin1');
  // "[" is an ATOM-CHAR (RFC 3501 §9): X[Y is one atom outside a FETCH section.
  t.equal(text, 'CHARSET UTF-8 OR (FROM "x \\"y\\"" NIL) (HEADER X-A "abc") X[Y');
  // A FETCH section (with spaces inside its brackets) comes back as it was.
  t.equal(formatValues(items('a FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.10>)').slice(2)).toString('latin1'), '(FLAGS BODY.PEEK[HEADER.FIELDS (A B)]<0.10>)');
  // Round trip: the same values, but the literal came back quoted.
  const literalAsQuoted = JSON.stringify(values).replace('"literal":true', '"literal":false');
  t.equal(JSON.stringify(items(`a SEARCH ${text}`).slice(1)), literalAsQuoted);
  t.equal(formatValues(items('a X {2}\r\n\r\n').slice(1), { nonSync: true }).toString('latin1'), '{2+}\r\n\r\n');
  t.equal(formatValues([{ type: 'string', value: Buffer.from([0, 1]), literal: true, binary: true }]).toString('latin1'), '~{2}\r\n\x00\x01');
  t.equal(formatValues([{ type: 'string', value: Buffer.from([0]), literal: true, binary: true }], { nonSync: true }).toString('latin1'), '~{1+}\r\n\x00');
  t.equal(formatValues([{ type: 'string', value: Buffer.from('caf\u00e9'), literal: false }]).toString('utf8'), '{5}\r\ncaf\u00e9');
  t.equal(formatValues([]).toString(), '');
  t.equal(formatValues([{ type: 'list', items: [] }, { type: 'atom', value: 'x' }]).toString(), '() x');
  // Any nesting the parser produced: iterative.
  let deep: ImapValue = { type: 'atom', value: 'x' };
  for (let i = 0; i < 50_000; i++) deep = { type: 'list', items: [deep] };
  t.equal(formatValues([deep]).length, 100_001);
});

// ---- ENABLE ---------------------------------------------------------------------------------

t.test('ENABLE: parse and resolve (RFC 5161, RFC 7162 §3.2.3)', async (t) => {
  // RFC 5161 §3.1: C: t2 ENABLE CONDSTORE X-GOOD-IDEA
  t.same(value(parseEnable(items('t2 ENABLE CONDSTORE X-GOOD-IDEA').slice(1))), { capabilities: ['CONDSTORE', 'X-GOOD-IDEA'] });
  t.same(value(parseEnable(items('t2 ENABLE qresync condstore QRESYNC').slice(1))), { capabilities: ['QRESYNC', 'CONDSTORE'] });
  t.same(value(parseEnable(items('t2 ENABLE UTF8=ACCEPT').slice(1))), { capabilities: ['UTF8=ACCEPT'] });
  t.equal(response(parseEnable(items('a1 ENABLE').slice(1)), 'a1'), 'a1 BAD ENABLE expects capability names\r\n');
  t.equal(response(parseEnable(items('a1 ENABLE "QRESYNC"').slice(1)), 'a1'), 'a1 BAD Invalid capability name\r\n');
  t.equal(response(parseEnable(items('a1 ENABLE (QRESYNC)').slice(1)), 'a1'), 'a1 BAD Invalid capability name\r\n');
  t.equal(response(parseEnable(items('a1 ENABLE QRESYNC NIL').slice(1)), 'a1'), 'a1 BAD Invalid capability name\r\n');

  const supported = ['CONDSTORE', 'QRESYNC'];
  // RFC 5161: "S: * ENABLED X-GOOD-IDEA" when CONDSTORE is not the server's; here the other way round.
  const first = resolveEnable(['CONDSTORE', 'X-GOOD-IDEA'], supported, new Set());
  t.same(first.enabled, ['CONDSTORE']);
  t.same(first.others, ['X-GOOD-IDEA']);
  t.same([...first.state], ['CONDSTORE']);
  // "ENABLE QRESYNC" and "ENABLE QRESYNC CONDSTORE" have identical results.
  const qr = resolveEnable(['QRESYNC'], supported, new Set());
  t.same(qr.enabled, ['QRESYNC']);
  t.same([...qr.state].sort(), ['CONDSTORE', 'QRESYNC']);
  const both = resolveEnable(['qresync', 'condstore'], supported, new Set());
  t.same(both.enabled, ['QRESYNC', 'CONDSTORE']);
  t.same([...both.state].sort(), ['CONDSTORE', 'QRESYNC']);
  // Additive; each ENABLED lists only what that command newly enabled.
  const again = resolveEnable(['CONDSTORE', 'QRESYNC'], supported, qr.state);
  t.same(again.enabled, []);
  t.same(again.others, []);
  const viaQresync = resolveEnable(['CONDSTORE'], supported, qr.state);
  t.same(viaQresync.enabled, [], 'CONDSTORE came with QRESYNC');
  const later = resolveEnable(['QRESYNC', 'X-A', 'X-A'], supported, first.state);
  t.same(later.enabled, ['QRESYNC']);
  t.same(later.others, ['X-A']);
  t.not(later.state, first.state, 'the state passed in is not modified');
  t.same([...first.state], ['CONDSTORE']);
});

// ---- responses --------------------------------------------------------------------------------

const text = (b: Buffer | Buffer[]): string => (Array.isArray(b) ? b.map((x) => x.toString('latin1')).join('') : b.toString('latin1'));

t.test('responses: status responses and codes', async (t) => {
  // §3.1.2.1 Example 1: S: * OK [HIGHESTMODSEQ 715194045007]
  t.equal(text(highestModseqResponse(715194045007n)), '* OK [HIGHESTMODSEQ 715194045007] Highest\r\n');
  t.equal(text(highestModseqResponse(90060115205545359n, 'Highest mailbox mod-sequence')), '* OK [HIGHESTMODSEQ 90060115205545359] Highest mailbox mod-sequence\r\n');
  t.equal(text(highestModseqResponse(5)), '* OK [HIGHESTMODSEQ 5] Highest\r\n');
  t.equal(text(highestModseqResponse(MAX_MOD_SEQUENCE)), '* OK [HIGHESTMODSEQ 9223372036854775807] Highest\r\n');
  // §3.1.2.2 Example 2
  t.equal(
    text(noModseqResponse("Sorry, this mailbox format doesn't support modsequences")),
    "* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences\r\n",
  );
  t.equal(text(noModseqResponse()), '* OK [NOMODSEQ] No permanent modsequences\r\n');
  // §3.2.11 / §3.2.5.1 example: S: * OK [CLOSED]
  t.equal(text(closedResponse()), '* OK [CLOSED] Previous mailbox closed\r\n');
  t.equal(text(closedResponse('')), '* OK [CLOSED] done\r\n', 'resp-text needs text');
  // §3.2.7: S: A202 OK [HIGHESTMODSEQ 20010715194045319] expunged
  t.equal(text(tagged('A202', 'OK', 'expunged', highestModseqCode(20010715194045319n))), 'A202 OK [HIGHESTMODSEQ 20010715194045319] expunged\r\n');
  // §3.1.3 Example 6: S: d105 OK [MODIFIED 7,9] Conditional STORE failed
  t.equal(text(tagged('d105', 'OK', 'Conditional STORE failed', modifiedCode([9, 7]))), 'd105 OK [MODIFIED 7,9] Conditional STORE failed\r\n');
  t.equal(modifiedCode([101]), 'MODIFIED 101');
  t.equal(modifiedCode([5, 3, 4, 4, 9]), 'MODIFIED 3:5,9');
  t.equal(modifiedCode(SequenceSet.parse('2,4:6')), 'MODIFIED 2,4:6');
  t.throws(() => modifiedCode([]), new RangeError('MODIFIED needs at least one message'));
  t.throws(() => modifiedCode(SequenceSet.EMPTY), RangeError);
});

t.test('responses: mod-sequence text is checked', async (t) => {
  t.equal(modSequenceText(1n), '1');
  t.equal(modSequenceText(0, true), '0');
  t.equal(modSequenceText(Number.MAX_SAFE_INTEGER), '9007199254740991');
  t.throws(() => modSequenceText(0), new RangeError('not a mod-sequence: 0'));
  t.throws(() => modSequenceText(-1n, true), new RangeError('not a mod-sequence: -1'));
  t.throws(() => modSequenceText(MAX_MOD_SEQUENCE + 1n), new RangeError('not a mod-sequence: 9223372036854775808'));
  t.throws(() => modSequenceText(1.5), new RangeError('not a mod-sequence: 1.5'));
  t.throws(() => modSequenceText(2 ** 60), RangeError, 'unsafe numbers: use bigint');
  t.throws(() => highestModseqResponse(0n), RangeError);
  t.throws(() => highestModseqCode(0), RangeError);
});

t.test('responses: VANISHED, ENABLED, SEARCH', async (t) => {
  // §3.2.7: S: * VANISHED 405,407,410,425
  t.equal(text(vanishedResponses(SequenceSet.fromNumbers([405, 407, 410, 425]), false)), '* VANISHED 405,407,410,425\r\n');
  // §3.2.10: S: * VANISHED 505,507,510,625
  t.equal(text(vanishedResponses(SequenceSet.parse('625,510,507,505'), false)), '* VANISHED 505,507,510,625\r\n');
  // §3.2.6: S: * VANISHED (EARLIER) 300:310,405,411
  t.equal(text(vanishedResponses(SequenceSet.parse('300:310,405,411'), true)), '* VANISHED (EARLIER) 300:310,405,411\r\n');
  // §3.2.5.1: S: * VANISHED (EARLIER) 41,43:116,118,120:211,214:540
  t.equal(text(vanishedResponses(SequenceSet.parse('41,43:116,118,120:211,214:540'), true)), '* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n');
  t.same(vanishedResponses(SequenceSet.EMPTY, true), [], 'nothing to report: no response');
  // Split over lines of at most maxLineLength octets, every UID kept, in order.
  const many = SequenceSet.fromNumbers(Array.from({ length: 5000 }, (_, i) => 2 * i + 1));
  const lines = vanishedResponses(many, true);
  t.ok(lines.length > 1);
  for (const l of lines) {
    t.ok(l.length <= 8192, `line of ${l.length}`);
    t.match(l.toString('latin1'), /^\* VANISHED \(EARLIER\) [0-9:,]+\r\n$/);
  }
  const back = lines.map((l) => l.toString('latin1').slice('* VANISHED (EARLIER) '.length, -2)).join(',');
  t.ok(SequenceSet.parse(back).equals(many));
  const small = vanishedResponses(SequenceSet.parse('1,3,5,7'), false, 35);
  t.same(small.map((l) => l.toString('latin1')), ['* VANISHED 1,3,5,7\r\n']);
  const tight = vanishedResponses(SequenceSet.parse('1000000001,1000000003,1000000005'), false, 34);
  t.same(tight.map((l) => l.toString('latin1')), ['* VANISHED 1000000001,1000000003\r\n', '* VANISHED 1000000005\r\n']);
  t.equal(tight[0]!.length, 34);
  const one = vanishedResponses(SequenceSet.parse('4294967291:4294967292,4294967294:4294967295'), true, 44);
  t.same(one.map((l) => l.toString('latin1')), ['* VANISHED (EARLIER) 4294967291:4294967292\r\n', '* VANISHED (EARLIER) 4294967294:4294967295\r\n']);
  t.equal(one[0]!.length, 44, 'the longest range fits the smallest line allowed');
  t.throws(() => vanishedResponses(many, true, 43), new RangeError('maxLineLength 43 is too small'));
  t.throws(() => vanishedResponses(many, false, 33), new RangeError('maxLineLength 33 is too small'));

  t.equal(text(enabledResponse(['CONDSTORE', 'QRESYNC'])), '* ENABLED CONDSTORE QRESYNC\r\n');
  t.equal(text(enabledResponse([])), '* ENABLED\r\n');

  // §3.1.5 Example 15: S: * SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)
  t.equal(text(searchResponse([2, 5, 6, 7, 11, 12, 18, 19, 20, 23], 917162500n)), '* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)\r\n');
  // Example 16: S: * SEARCH   (nothing found: no MODSEQ)
  t.equal(text(searchResponse([], 720162338n)), '* SEARCH\r\n');
  t.equal(text(searchResponse([4, 1])), '* SEARCH 4 1\r\n');
  t.throws(() => searchResponse([1], 0n), RangeError);
});

t.test('responses: MODSEQ into an upstream FETCH head', async (t) => {
  const fetchHead = (line: string) => insertFetchModseq(Buffer.from(line, 'latin1'), 65402n);
  const r = fetchHead('* 1 FETCH (UID 4 FLAGS (\\Seen))\r\n');
  t.same(r && { number: r.number, uid: r.uid, head: text(r.head) }, { number: 1, uid: 4, head: '* 1 FETCH (MODSEQ (65402) UID 4 FLAGS (\\Seen))\r\n' });
  const flagsFirst = fetchHead('* 12 FETCH (FLAGS (\\Seen $Forwarded) UID 541)\r\n');
  t.same(flagsFirst && { n: flagsFirst.number, uid: flagsFirst.uid, head: text(flagsFirst.head) }, {
    n: 12,
    uid: 541,
    head: '* 12 FETCH (MODSEQ (65402) FLAGS (\\Seen $Forwarded) UID 541)\r\n',
  });
  // A head that ends in a literal: MODSEQ goes first, the announcement stays last.
  const lit = fetchHead('* 3 FETCH (UID 9 BODY[HEADER.FIELDS (FROM "TO")] {20}\r\n');
  t.same(lit && { n: lit.number, uid: lit.uid, head: text(lit.head) }, {
    n: 3,
    uid: 9,
    head: '* 3 FETCH (MODSEQ (65402) UID 9 BODY[HEADER.FIELDS (FROM "TO")] {20}\r\n',
  });
  // UID after the literal is in a later segment: unknown here.
  const later = fetchHead('* 3 FETCH (BODY[] {20}\r\n');
  t.same(later && { n: later.number, uid: later.uid, head: text(later.head) }, { n: 3, uid: undefined, head: '* 3 FETCH (MODSEQ (65402) BODY[] {20}\r\n' });
  // Empty list; lower-case; values of every shape skipped on the way to UID.
  t.equal(text(fetchHead('* 7 FETCH ()\r\n')!.head), '* 7 FETCH (MODSEQ (65402))\r\n');
  t.equal(text(fetchHead('* 7 fetch (UID 70)\r\n')!.head), '* 7 fetch (MODSEQ (65402) UID 70)\r\n');
  const shapes = '* 2 FETCH (INTERNALDATE "17-Jul-1996 02:44:25 -0700" ENVELOPE (NIL "a ) (" ((NIL NIL "x" "y"))) X-NIL NIL BODY[1]<0> "q\\"uote" UID 44)\r\n';
  t.equal(parseFetchHead(Buffer.from(shapes))?.uid, 44);
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (ENVELOPE ("a" {3}\r\n'))?.uid, undefined, 'literal inside a list');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (BODY[HEADER.FIELDS ("]")] "x" UID 8)\r\n'))?.uid, 8, '"]" quoted inside a section');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (UID 0)\r\n'))?.uid, undefined);
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (UID 4294967296)\r\n'))?.uid, undefined);
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (UID "5")\r\n'))?.uid, undefined);
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (RFC822 ~{2}\r\n'))?.uid, undefined, 'literal8');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (FLAGS (\\Seen)'))?.uid, undefined, 'no CRLF');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (FLAGS (\\Seen\r\n'))?.uid, undefined, 'unclosed list');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (X "abc\r\n'))?.uid, undefined, 'unclosed quote');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (BODY[1 UID 5)\r\n'))?.uid, undefined, 'unclosed section');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (UID)\r\n'))?.uid, undefined, 'name without value');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (UID 5'))?.uid, 5);
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (BODY[HEADER.FIELDS ("a\r\n'))?.uid, undefined);
  // Segments cut short (no CRLF) inside a quoted string, a section or a list.
  for (const cut of ['* 2 FETCH (X "abc', '* 2 FETCH (X "a\\', '* 2 FETCH (BODY[1', '* 2 FETCH (BODY[1 "x', '* 2 FETCH (X (a', '* 2 FETCH (X (a "b']) {
    t.equal(parseFetchHead(Buffer.from(cut))?.uid, undefined, cut);
  }
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH ( UID 6 )\r\n'))?.uid, 6, 'extra spaces');
  t.equal(parseFetchHead(Buffer.from('* 2 FETCH (FLAGS (\\Seen) X (a "b\r\n'))?.uid, undefined);
  t.same(parseFetchHead(Buffer.from('* 2 FETCH (FLAGS ())\r\n')), { number: 2, listStart: 11 });
  // Not FETCH responses.
  for (const other of ['* 2 EXPUNGE\r\n', 'a1 OK FETCH done\r\n', '* OK [HIGHESTMODSEQ 5] x\r\n', '* FETCH (UID 1)\r\n', '* 2 FETCH UID 1\r\n', '* 02 FETCH (UID 1)\r\n', '+ FETCH (\r\n']) {
    t.equal(insertFetchModseq(Buffer.from(other), 1n), undefined, other);
  }
  t.throws(() => fetchHead('* 1 FETCH (UID 4)\r\n') && insertFetchModseq(Buffer.from('* 1 FETCH (UID 4)\r\n'), 0n), RangeError);
});

t.test('responses: EXPUNGE recognized for VANISHED', async (t) => {
  t.equal(expungeNumber(Buffer.from('* 3 EXPUNGE\r\n')), 3);
  t.equal(expungeNumber(Buffer.from('* 4294967295 expunge\r\n')), 4294967295);
  t.equal(expungeNumber(Buffer.from('* 3 EXPUNGE')), 3);
  for (const other of ['* 0 EXPUNGE\r\n', '* EXPUNGE\r\n', 'a1 EXPUNGE\r\n', '* 3 EXISTS\r\n', '* 3 FETCH (UID 1)\r\n', '* OK EXPUNGE\r\n', 'a1 OK EXPUNGE completed\r\n']) {
    t.equal(expungeNumber(Buffer.from(other)), undefined, other);
  }
});
