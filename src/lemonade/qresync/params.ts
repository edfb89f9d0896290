/**
 * Typed parsers for the CONDSTORE/QRESYNC (RFC 7162) and ENABLE (RFC 5161) command
 * arguments the gateway emulates. Pure: no I/O, no session state beyond what is passed in.
 *
 * Input: the parsed command (ParsedLine from protocol/parser.ts, which the session hands an
 * intercepted command's handler), sliced past the part each parser does not own:
 *
 *   SELECT/EXAMINE mailbox [params]       parseSelectParams(line.items.slice(2), ...)
 *   [UID] FETCH set items [modifiers]     parseFetchModifiers(line.items.slice(uid ? 3 : 2), ...)
 *   [UID] STORE set [modifiers] item flags parseStoreModifiers(line.items.slice(uid ? 3 : 2))
 *   [UID] SEARCH program                  parseSearchModseq(line.items.slice(uid ? 2 : 1))
 *   ENABLE capabilities                   parseEnable(line.items.slice(1))
 *
 * (the mailbox and the sequence set stay the caller's: their meaning depends on the session).
 * Values rather than raw text because the session already tokenized the command (literals,
 * quoting, brackets) and one tokenizer is the rule (DESIGN.md).
 *
 * Each parser returns { ok: true, value } or { ok: false, error }, where error is the exact
 * tagged response to give: ctx.tagged(tag, error.status, error.text, error.code).
 *
 * Strictness: the RFC 7162 §7 / RFC 4466 §3 grammar, case-insensitive names, plus:
 *   - mod-sequence-value is 1*DIGIT with 1 <= n <= 2^63-1 (leading zeros allowed, as the
 *     ABNF allows them); mod-sequence-valzer also allows 0 (UNCHANGEDSINCE, SEARCH MODSEQ);
 *     CHANGEDSINCE and the QRESYNC mod-sequence take mod-sequence-value, so 0 is BAD there.
 *   - uidvalidity is nz-number (no leading zero, < 2^32).
 *   - known-sequence-set and known-uid-set must be ascending, without "*", and of the same
 *     size, else BAD (§3.2.5 "the server verifies all arguments for syntactic validity").
 *   - An empty parameter or modifier list "()" is BAD (RFC 4466: one or more).
 *   - Unknown SELECT parameters, FETCH and STORE modifiers are BAD (RFC 4466 §2: "Any
 *     [parameter/modifier] not defined by extensions that the server supports must be
 *     rejected with a BAD response"); the gateway supports no others.
 * Mod-sequences are bigint: they go up to 2^63-1.
 */
import type { ImapValue } from '../../imap/protocol/parser.js';
import {
  SequenceSet,
  SequenceSetError,
  MAX_NZ_NUMBER,
  type SeqMatchData,
  type SequenceSetLimits,
} from '../../imap/protocol/sequence-set.js';
import { encodeString, type QuoteOptions } from '../../imap/protocol/writer.js';

/** RFC 7162 §7 mod-sequence-value: 1 <= n <= 9,223,372,036,854,775,807. */
export const MAX_MOD_SEQUENCE = 9_223_372_036_854_775_807n;

/** The tagged response a caller gives for a refused command. */
export interface ParamError {
  status: 'BAD' | 'NO';
  text: string;
  /** A response code (without brackets), e.g. "CANNOT". */
  code?: string;
}

export type ParamResult<T> = { ok: true; value: T } | { ok: false; error: ParamError };

/** Thrown inside the parsers, turned into { ok: false } at their edge. */
class Refusal extends Error {
  constructor(readonly error: ParamError) {
    super(error.text);
  }
}

function bad(text: string): never {
  throw new Refusal({ status: 'BAD', text });
}

function run<T>(parse: () => T): ParamResult<T> {
  try {
    return { ok: true, value: parse() };
  } catch (err) {
    if (err instanceof Refusal) return { ok: false, error: err.error };
    throw err;
  }
}

/** How much of a client's word goes into a response text. */
function shown(s: string): string {
  return s.length > 32 ? `${s.slice(0, 32)}...` : s;
}

function atomText(v: ImapValue | undefined): string | undefined {
  return v?.type === 'atom' ? v.value : undefined;
}

/**
 * mod-sequence-value (RFC 7162 §7: 1*DIGIT, 1 <= n <= 2^63-1) from an atom, or
 * mod-sequence-valzer ("0" / mod-sequence-value) with zero = true; undefined if neither.
 */
export function parseModSequence(v: ImapValue | undefined, zero = false): bigint | undefined {
  const text = atomText(v);
  if (text === undefined || !/^[0-9]+$/.test(text)) return undefined;
  const digits = text.replace(/^0+(?=.)/, '');
  if (digits.length > 19) return undefined;
  const n = BigInt(digits);
  if (n > MAX_MOD_SEQUENCE || (n === 0n && !zero)) return undefined;
  return n;
}

/** nz-number (RFC 3501 §9): no leading zero, 0 < n < 2^32. */
function parseNzNumber(v: ImapValue | undefined): number | undefined {
  const text = atomText(v);
  if (text === undefined || !/^[1-9][0-9]{0,9}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_NZ_NUMBER ? n : undefined;
}

function parseSet(v: ImapValue | undefined, what: string, limits: SequenceSetLimits | undefined, ascending: boolean): SequenceSet {
  const text = atomText(v);
  if (text === undefined) bad(`Invalid QRESYNC ${what}`);
  try {
    // No "largest": "*" is not allowed in any RFC 7162 §7 set.
    return SequenceSet.parse(text, { ascending, ...(limits === undefined ? {} : { limits }) });
  } catch (err) {
    if (err instanceof SequenceSetError) bad(`Invalid QRESYNC ${what}: ${err.message}`);
    throw err;
  }
}

// ---- SELECT / EXAMINE (RFC 7162 §3.1.8, §3.2.5; RFC 4466 §2.1) ------------------------

export interface QresyncParam {
  uidValidity: number;
  /** The client's last known HIGHESTMODSEQ. */
  modSequence: bigint;
  /** known-uids; absent means "1:<UIDNEXT-1>" (§3.2.5.1, see qresyncVanished). */
  knownUids?: SequenceSet;
  seqMatch?: SeqMatchData;
}

export interface SelectParams {
  /** The CONDSTORE parameter was given (§3.1.8). */
  condstore: boolean;
  qresync?: QresyncParam;
  /** condstore or qresync: this SELECT is a CONDSTORE enabling command (§3.1, §3.2.3). */
  enablesCondstore: boolean;
}

export interface SelectParamsContext {
  /** The session has answered ENABLE QRESYNC with ENABLED QRESYNC (§3.2.3, §3.2.5). */
  qresyncEnabled: boolean;
  limits?: SequenceSetLimits;
}

/**
 * The optional parameter list of SELECT/EXAMINE (args: the items after the mailbox):
 * `(CONDSTORE)`, `(QRESYNC (uidvalidity mod-sequence-value [known-uids] [(known-sequence-set
 * known-uid-set)]))`, both, or none.
 *
 * Errors, all BAD: see the texts in the tests. QRESYNC before ENABLE QRESYNC is BAD
 * "QRESYNC is not enabled" (§3.2.5), checked before the value's syntax.
 */
export function parseSelectParams(args: readonly ImapValue[], context: SelectParamsContext): ParamResult<SelectParams> {
  return run(() => {
    const out: SelectParams = { condstore: false, enablesCondstore: false };
    if (args.length === 0) return out;
    if (args.length > 1) bad('Too many arguments');
    const list = args[0]!;
    if (list.type !== 'list') bad('Parameters must be a parenthesized list');
    if (list.items.length === 0) bad('Empty parameter list');
    const items = list.items;
    for (let i = 0; i < items.length; i++) {
      const name = atomText(items[i]);
      if (name === undefined) bad('Invalid parameter');
      switch (name.toUpperCase()) {
        case 'CONDSTORE': // §3.1.8 condstore-param = "CONDSTORE"
          if (out.condstore) bad('CONDSTORE given twice');
          out.condstore = true;
          break;
        case 'QRESYNC': {
          if (out.qresync !== undefined) bad('QRESYNC given twice');
          // §3.2.3, §3.2.5: "A server MUST respond with a tagged BAD response if the Quick
          // Resynchronization parameter ... is specified and the client hasn't issued ENABLE QRESYNC".
          if (!context.qresyncEnabled) bad('QRESYNC is not enabled');
          out.qresync = parseQresync(items[++i], context.limits);
          break;
        }
        default:
          bad(`Unknown parameter ${shown(name)}`);
      }
    }
    out.enablesCondstore = out.condstore || out.qresync !== undefined;
    return out;
  });
}

/**
 * RFC 7162 §7: "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids]
 * [SP seq-match-data] ")"; seq-match-data = "(" known-sequence-set SP known-uid-set ")".
 */
function parseQresync(value: ImapValue | undefined, limits: SequenceSetLimits | undefined): QresyncParam {
  if (value?.type !== 'list' || value.items.length < 2) {
    bad('QRESYNC expects (uidvalidity mod-sequence [known-uids] [(known-sequence-set known-uid-set)])');
  }
  const [uv, ms, ...rest] = value.items;
  const uidValidity = parseNzNumber(uv);
  if (uidValidity === undefined) bad('Invalid QRESYNC uidvalidity');
  const modSequence = parseModSequence(ms);
  if (modSequence === undefined) bad('Invalid QRESYNC mod-sequence');
  const out: QresyncParam = { uidValidity, modSequence };
  let i = 0;
  if (rest[i]?.type === 'atom') out.knownUids = parseSet(rest[i++], 'known-uids', limits, false);
  const match = rest[i];
  if (match?.type === 'list') {
    i++;
    if (match.items.length !== 2) bad('Invalid QRESYNC seq-match-data');
    const sequences = parseSet(match.items[0], 'known-sequence-set', limits, true);
    const uids = parseSet(match.items[1], 'known-uid-set', limits, true);
    // §3.2.5.2: the two sets pair up element by element.
    if (sequences.size !== uids.size) bad('QRESYNC seq-match-data sets differ in size');
    out.seqMatch = { sequences, uids };
  }
  if (i < rest.length) bad('Too many QRESYNC parameters');
  return out;
}

// ---- FETCH / UID FETCH (RFC 7162 §3.1.4, §3.2.6; RFC 4466 §2.4) ----------------------

export interface FetchParams {
  /** The message data items as written (raw atom text: "BODY.PEEK[HEADER.FIELDS (FROM)]"), or the macro. */
  items: string[];
  /** MODSEQ is among the items (§3.1.4.2), or implied by CHANGEDSINCE (§3.1.4.1). */
  modseq: boolean;
  /** UID is among the items. */
  uid: boolean;
  /** items without MODSEQ: what a legacy upstream can be asked for (may be empty). */
  upstreamItems: string[];
  changedSince?: bigint;
  /** The VANISHED modifier (§3.2.6): report expunged UIDs of the set as VANISHED (EARLIER). */
  vanished: boolean;
}

export interface FetchContext {
  /** UID FETCH (VANISHED is allowed only there, §3.2.6). */
  uid: boolean;
  /** ENABLE QRESYNC succeeded in this session (§3.2.3, §3.2.6). */
  qresyncEnabled: boolean;
}

/**
 * The data items and the optional modifiers of FETCH/UID FETCH (args: the items after the
 * sequence set): `(CHANGEDSINCE n)`, `(CHANGEDSINCE n VANISHED)`, in any order.
 * §3.2.6: VANISHED with FETCH, without ENABLE QRESYNC, or without CHANGEDSINCE is BAD.
 */
export function parseFetchModifiers(args: readonly ImapValue[], context: FetchContext): ParamResult<FetchParams> {
  return run(() => {
    const what = args[0];
    if (what === undefined) bad('FETCH expects message data items');
    // RFC 3501 §9 fetch: macro / fetch-att / "(" fetch-att *(SP fetch-att) ")". The parser
    // keeps "[...]" sections inside their atom, so each item is one atom.
    const values = what.type === 'list' ? what.items : [what];
    if (values.length === 0) bad('Empty list of message data items');
    const items: string[] = [];
    for (const v of values) {
      if (v.type !== 'atom') bad('Invalid message data item');
      items.push(v.value);
    }
    if (args.length > 2) bad('Too many arguments');
    const upper = items.map((s) => s.toUpperCase());
    const out: FetchParams = {
      items,
      modseq: upper.includes('MODSEQ'),
      uid: upper.includes('UID'),
      upstreamItems: items.filter((_, i) => upper[i] !== 'MODSEQ'),
      vanished: false,
    };
    const mods = args[1];
    if (mods === undefined) return out;
    if (mods.type !== 'list') bad('FETCH modifiers must be a parenthesized list');
    if (mods.items.length === 0) bad('Empty FETCH modifier list');
    for (let i = 0; i < mods.items.length; i++) {
      const name = atomText(mods.items[i]);
      if (name === undefined) bad('Invalid FETCH modifier');
      switch (name.toUpperCase()) {
        case 'CHANGEDSINCE': {
          // §7 chgsince-fetch-mod = "CHANGEDSINCE" SP mod-sequence-value (not valzer: 0 is BAD).
          if (out.changedSince !== undefined) bad('CHANGEDSINCE given twice');
          const n = parseModSequence(mods.items[++i]);
          if (n === undefined) bad('Invalid CHANGEDSINCE mod-sequence');
          out.changedSince = n;
          out.modseq = true; // §3.1.4.1: "it implicitly adds the MODSEQ FETCH message data item"
          break;
        }
        case 'VANISHED':
          if (out.vanished) bad('VANISHED given twice');
          out.vanished = true;
          break;
        default:
          bad(`Unknown FETCH modifier ${shown(name)}`);
      }
    }
    if (out.vanished) {
      // §3.2.6, in this order: not with FETCH; not before ENABLE QRESYNC; not without CHANGEDSINCE.
      if (!context.uid) bad('VANISHED is only allowed with UID FETCH');
      if (!context.qresyncEnabled) bad('VANISHED needs ENABLE QRESYNC');
      if (out.changedSince === undefined) bad('VANISHED needs CHANGEDSINCE');
    }
    return out;
  });
}

/** FETCH items as command text: one item bare (a macro must be), several in parentheses; undefined for none. */
export function fetchItemsText(items: readonly string[]): string | undefined {
  if (items.length === 0) return undefined;
  return items.length === 1 ? items[0] : `(${items.join(' ')})`;
}

// ---- STORE / UID STORE (RFC 7162 §3.1.3; RFC 4466 §2.5) -------------------------------

export interface StoreParams {
  /** UNCHANGEDSINCE (mod-sequence-valzer: 0 allowed, §3.1.3 Example 8). */
  unchangedSince?: bigint;
  /** FLAGS / +FLAGS / -FLAGS. */
  operation: 'replace' | 'add' | 'remove';
  silent: boolean;
  /** The data item name as written ("+FLAGS.SILENT"). */
  item: string;
  /** The flags, as written (atoms: \Seen, $Label). */
  flags: string[];
}

/**
 * STORE's optional modifiers and the rest (args: the items after the sequence set):
 * `[(UNCHANGEDSINCE n)] ["+"/"-"]FLAGS[.SILENT] (flag-list / flag *(SP flag))`.
 * §7: "Only a single UNCHANGEDSINCE may be specified".
 */
export function parseStoreModifiers(args: readonly ImapValue[]): ParamResult<StoreParams> {
  return run(() => {
    let i = 0;
    let unchangedSince: bigint | undefined;
    const mods = args[0];
    if (mods?.type === 'list') {
      i = 1;
      if (mods.items.length === 0) bad('Empty STORE modifier list');
      for (let k = 0; k < mods.items.length; k++) {
        const name = atomText(mods.items[k]);
        if (name === undefined) bad('Invalid STORE modifier');
        if (name.toUpperCase() !== 'UNCHANGEDSINCE') bad(`Unknown STORE modifier ${shown(name)}`);
        if (unchangedSince !== undefined) bad('UNCHANGEDSINCE given twice');
        const n = parseModSequence(mods.items[++k], true);
        if (n === undefined) bad('Invalid UNCHANGEDSINCE mod-sequence');
        unchangedSince = n;
      }
    }
    // RFC 3501 §9 store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
    const item = atomText(args[i]);
    const m = item === undefined ? null : /^([+-]?)FLAGS(\.SILENT)?$/i.exec(item);
    if (item === undefined || m === null) bad('STORE expects FLAGS, +FLAGS or -FLAGS');
    const values = args.slice(i + 1);
    if (values.length === 0) bad('STORE expects flags');
    let flagValues: readonly ImapValue[] = values;
    if (values[0]!.type === 'list') {
      if (values.length > 1) bad('Too many arguments');
      flagValues = values[0]!.items;
    }
    const flags: string[] = [];
    for (const v of flagValues) {
      if (v.type !== 'atom') bad('Invalid flag');
      flags.push(v.value);
    }
    const out: StoreParams = {
      operation: m[1] === '+' ? 'add' : m[1] === '-' ? 'remove' : 'replace',
      silent: m[2] !== undefined,
      item,
      flags,
    };
    if (unchangedSince !== undefined) out.unchangedSince = unchangedSince;
    return out;
  });
}

// ---- SEARCH MODSEQ (RFC 7162 §3.1.5) --------------------------------------------------

export interface ModseqCriterion {
  /** mod-sequence-valzer: messages with a mod-sequence >= value. */
  value: bigint;
  /** entry-name ("/flags/\\seen" as sent, unescaped) and entry-type-req, when given. */
  entryName?: string;
  entryType?: 'priv' | 'shared' | 'all';
}

export interface SearchParams {
  /**
   * The MODSEQ criteria ANDed into the program (top level, or in parenthesized lists that
   * are not under OR/NOT/FUZZY), in order. The gateway keeps one mod-sequence a message,
   * so §3.1.5 says entry names and types are ignored: use `modseq`.
   */
  criteria: ModseqCriterion[];
  /** The largest criterion value (all must hold), or undefined when there is no MODSEQ. */
  modseq?: bigint;
  /**
   * The program without the MODSEQ keys (lists left empty are dropped; ALL when no key is
   * left), for the upstream: RETURN and CHARSET prefixes and every other value unchanged.
   */
  program: ImapValue[];
}

/** Search keys and how many non-key arguments follow (RFC 3501 §6.4.4, RFC 9051 §6.4.4, extensions). */
const SEARCH_KEY_ARGS = new Map<string, number>([
  // RFC 3501 / RFC 9051
  ['ALL', 0], ['ANSWERED', 0], ['DELETED', 0], ['DRAFT', 0], ['FLAGGED', 0], ['NEW', 0], ['OLD', 0],
  ['RECENT', 0], ['SEEN', 0], ['UNANSWERED', 0], ['UNDELETED', 0], ['UNDRAFT', 0], ['UNFLAGGED', 0],
  ['UNSEEN', 0],
  ['BCC', 1], ['BEFORE', 1], ['BODY', 1], ['CC', 1], ['FROM', 1], ['KEYWORD', 1], ['LARGER', 1],
  ['ON', 1], ['SENTBEFORE', 1], ['SENTON', 1], ['SENTSINCE', 1], ['SINCE', 1], ['SMALLER', 1],
  ['SUBJECT', 1], ['TEXT', 1], ['TO', 1], ['UID', 1], ['UNKEYWORD', 1],
  ['HEADER', 2],
  ['OLDER', 1], ['YOUNGER', 1], // RFC 5032 WITHIN
  ['EMAILID', 1], ['THREADID', 1], // RFC 8474
  ['SAVEDBEFORE', 1], ['SAVEDON', 1], ['SAVEDSINCE', 1], ['SAVEDATESUPPORTED', 0], // RFC 8514
  ['FILTER', 1], // RFC 5466
  ['ANNOTATION', 3], // RFC 5257
]);
/** Keys whose arguments are search keys (RFC 3501 NOT, OR; RFC 6203 FUZZY). */
const SEARCH_KEY_KEYS = new Map<string, number>([['NOT', 1], ['OR', 2], ['FUZZY', 1]]);
/** A sequence-set used as a search key (RFC 3501), or "$" (RFC 5182). */
const SEQUENCE_SET_KEY = /^[0-9*:,$]+$/;
/** Nesting (lists, NOT, OR, FUZZY) followed before refusing: bounds recursion. */
const MAX_SEARCH_DEPTH = 64;

/**
 * Finds the MODSEQ search key (§3.1.5: MODSEQ [entry-name entry-type-req]
 * mod-sequence-valzer) in a SEARCH program (args: the items after SEARCH / UID SEARCH) and
 * returns the rest for the upstream.
 *
 * A program without the atom MODSEQ anywhere is returned as it is, unexamined (the upstream
 * judges it). Otherwise it is walked key by key, which needs every key's arity:
 *   - MODSEQ under OR, NOT or FUZZY (§3.1.5 Example 16: "OR NOT MODSEQ 720162338 LARGER
 *     50000") cannot be split off: NO [CANNOT] "MODSEQ inside OR, NOT or FUZZY is not
 *     supported" (RFC 3501 §6.4.4 "NO - can't search that criteria"; RFC 5530 CANNOT). The
 *     caller could instead replace such a key by a UID set computed from the store.
 *   - A key this module does not know (so its arguments cannot be told from keys): BAD.
 *   - Bad MODSEQ arguments, a missing argument, nesting over 64: BAD.
 */
export function parseSearchModseq(args: readonly ImapValue[]): ParamResult<SearchParams> {
  return run(() => {
    if (!mentionsModseq(args)) return { criteria: [], program: [...args] };
    const program: ImapValue[] = [];
    let i = 0;
    // RFC 4466 §3 search = "SEARCH" [search-return-opts] SP search-program;
    // search-program = ["CHARSET" SP charset SP] search-key *(SP search-key).
    if (atomText(args[i])?.toUpperCase() === 'RETURN' && args[i + 1]?.type === 'list') {
      program.push(args[i]!, args[i + 1]!);
      i += 2;
    }
    if (atomText(args[i])?.toUpperCase() === 'CHARSET') {
      const charset = args[i + 1];
      if (charset === undefined || charset.type === 'list') bad('Missing argument to CHARSET');
      program.push(args[i]!, charset);
      i += 2;
    }
    if (i === args.length) bad('SEARCH expects search keys');
    const criteria: ModseqCriterion[] = [];
    const keys = andKeys(args, i, criteria, 0);
    program.push(...(keys.length === 0 ? [{ type: 'atom', value: 'ALL' } as const] : keys));
    let modseq: bigint | undefined;
    for (const c of criteria) if (modseq === undefined || c.value > modseq) modseq = c.value;
    return modseq === undefined ? { criteria, program } : { criteria, modseq, program };
  });
}

/** True when the atom MODSEQ occurs anywhere in the values (iterative: lists can be deep). */
function mentionsModseq(values: readonly ImapValue[]): boolean {
  const stack: (readonly ImapValue[])[] = [values];
  while (stack.length > 0) {
    for (const v of stack.pop()!) {
      if (v.type === 'list') stack.push(v.items);
      else if (v.type === 'atom' && v.value.toUpperCase() === 'MODSEQ') return true;
    }
  }
  return false;
}

/** Keys from `start` to the end of `items`, ANDed: MODSEQ keys go to criteria, the rest is returned. */
function andKeys(items: readonly ImapValue[], start: number, criteria: ModseqCriterion[], depth: number): ImapValue[] {
  if (depth > MAX_SEARCH_DEPTH) bad('Search program nested too deeply');
  const out: ImapValue[] = [];
  let i = start;
  while (i < items.length) {
    const v = items[i]!;
    if (v.type === 'list') {
      // "(" search-key *(SP search-key) ")": still an AND.
      if (v.items.length === 0) bad('Empty search key list');
      const inner = andKeys(v.items, 0, criteria, depth + 1);
      if (inner.length > 0) out.push({ type: 'list', items: inner });
      i++;
      continue;
    }
    if (atomText(v)?.toUpperCase() === 'MODSEQ') {
      const [criterion, next] = modseqKey(items, i);
      criteria.push(criterion);
      i = next;
      continue;
    }
    const next = skipKey(items, i, depth);
    out.push(...items.slice(i, next));
    i = next;
  }
  return out;
}

/**
 * The index after the search key at i. andKeys hands over every key but MODSEQ and lists,
 * so a MODSEQ (or list) met here is under OR, NOT or FUZZY: MODSEQ is refused.
 */
function skipKey(items: readonly ImapValue[], i: number, depth: number): number {
  if (depth > MAX_SEARCH_DEPTH) bad('Search program nested too deeply');
  const v = items[i];
  if (v === undefined) bad('Missing search key');
  if (v.type === 'list') {
    if (v.items.length === 0) bad('Empty search key list');
    for (let k = 0; k < v.items.length; ) k = skipKey(v.items, k, depth + 1);
    return i + 1;
  }
  const name = atomText(v);
  if (name === undefined) bad('Invalid search key');
  const key = name.toUpperCase();
  if (key === 'MODSEQ') {
    throw new Refusal({ status: 'NO', code: 'CANNOT', text: 'MODSEQ inside OR, NOT or FUZZY is not supported' });
  }
  const subkeys = SEARCH_KEY_KEYS.get(key);
  if (subkeys !== undefined) {
    let next = i + 1;
    for (let k = 0; k < subkeys; k++) {
      if (next >= items.length) bad(`Missing argument to ${key}`);
      next = skipKey(items, next, depth + 1);
    }
    return next;
  }
  const argc = SEARCH_KEY_ARGS.get(key);
  if (argc !== undefined) {
    for (let k = 1; k <= argc; k++) {
      const a = items[i + k];
      if (a === undefined || a.type === 'list') bad(`Missing argument to ${key}`);
    }
    return i + 1 + argc;
  }
  if (SEQUENCE_SET_KEY.test(name)) return i + 1;
  bad(`Unsupported search key ${shown(name)}`);
}

/** MODSEQ [entry-name entry-type-req] mod-sequence-valzer at i; returns it and the index after it. */
function modseqKey(items: readonly ImapValue[], i: number): [ModseqCriterion, number] {
  const first = items[i + 1];
  if (first?.type === 'string') {
    // §7 search-modseq-ext = SP entry-name SP entry-type-req; entry-flag-name = DQUOTE "/flags/" attr-flag DQUOTE
    const entryName = first.value.toString('utf8');
    const type = atomText(items[i + 2])?.toLowerCase();
    const value = parseModSequence(items[i + 3], true);
    if (!/^\/flags\/./i.test(entryName) || (type !== 'priv' && type !== 'shared' && type !== 'all') || value === undefined) {
      bad('Invalid MODSEQ search key');
    }
    return [{ value, entryName, entryType: type }, i + 4];
  }
  const value = parseModSequence(first, true);
  if (value === undefined) bad('Invalid MODSEQ search key');
  return [{ value }, i + 2];
}

// ---- ENABLE (RFC 5161) ----------------------------------------------------------------

export interface EnableParams {
  /** Capability names, upper-cased, each once, in the client's order. */
  capabilities: string[];
}

/** RFC 5161 §4: "ENABLE" 1*(SP capability), capability = atom. No argument, or a non-atom: BAD. */
export function parseEnable(args: readonly ImapValue[]): ParamResult<EnableParams> {
  return run(() => {
    if (args.length === 0) bad('ENABLE expects capability names');
    const capabilities: string[] = [];
    for (const v of args) {
      if (v.type !== 'atom') bad('Invalid capability name');
      const name = v.value.toUpperCase();
      if (!capabilities.includes(name)) capabilities.push(name);
    }
    return { capabilities };
  });
}

export interface EnableOutcome {
  /** For `* ENABLED ...`: asked for, supported, and not enabled before (RFC 5161 §3.1, §3.2). */
  enabled: string[];
  /** Asked for but not the gateway's to enable: ignored (RFC 5161 §3.1), or the upstream's if it has ENABLE. */
  others: string[];
  /** Everything enabled in the session after this command (QRESYNC brings CONDSTORE, RFC 7162 §3.2.3). */
  state: Set<string>;
}

/**
 * What ENABLE does to the session: `supported` are the capabilities the gateway enables
 * itself (e.g. CONDSTORE, QRESYNC), `already` what earlier ENABLEs (or CONDSTORE enabling
 * commands) turned on. "ENABLE QRESYNC" and "ENABLE QRESYNC CONDSTORE" have the same result
 * (RFC 7162 §3.2.3: both enable CONDSTORE; the ENABLED response names what the client named);
 * a later ENABLE lists only what it newly enabled (RFC 5161 §3.1).
 */
export function resolveEnable(requested: readonly string[], supported: readonly string[], already: ReadonlySet<string>): EnableOutcome {
  const canEnable = new Set(supported.map((s) => s.toUpperCase()));
  const state = new Set(already);
  const enabled: string[] = [];
  const others: string[] = [];
  for (const raw of requested) {
    const name = raw.toUpperCase();
    const list = canEnable.has(name) ? enabled : others;
    // Listed when this command enables it, though QRESYNC named first already implied CONDSTORE.
    if (!list.includes(name) && !already.has(name)) list.push(name);
    if (list === enabled) {
      state.add(name);
      if (name === 'QRESYNC') state.add('CONDSTORE');
    }
  }
  return { enabled, others, state };
}

// ---- values back to command text ------------------------------------------------------

/**
 * Parsed values as command text for the upstream (the inverse of parseSegments, for values
 * the gateway passes on, e.g. SearchParams.program): atoms as they were, NIL, lists,
 * strings through encodeString (quoted, or a literal `{n}` / `{n+}` with options.nonSync),
 * literal8 as `~{n}`. A literal needs the upstream's "+" (or LITERAL+) before its bytes: the
 * caller sends accordingly. Iterative, so any nesting the parser produced is fine.
 */
export function formatValues(values: readonly ImapValue[], options: QuoteOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const stack: Array<{ items: readonly ImapValue[]; next: number }> = [{ items: values, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.next === top.items.length) {
      stack.pop();
      if (stack.length > 0) parts.push(Buffer.from(')'));
      continue;
    }
    if (top.next > 0) parts.push(Buffer.from(' '));
    const v = top.items[top.next++]!;
    switch (v.type) {
      case 'atom':
        parts.push(Buffer.from(v.value, 'utf8'));
        break;
      case 'nil':
        parts.push(Buffer.from('NIL'));
        break;
      case 'string':
        if (v.binary) parts.push(Buffer.from(`~{${v.value.length}${options.nonSync ? '+' : ''}}\r\n`, 'latin1'), v.value);
        else parts.push(encodeString(v.value, options));
        break;
      case 'list':
        parts.push(Buffer.from('('));
        stack.push({ items: v.items, next: 0 });
        break;
    }
  }
  return Buffer.concat(parts);
}
