/**
 * CONDSTORE/QRESYNC (RFC 7162) and ENABLE (RFC 5161) responses, as the gateway writes them,
 * and the two upstream responses it rewrites for them: `* n FETCH (...)` gains
 * `MODSEQ (m)`, and `* n EXPUNGE` becomes `* VANISHED uid` once QRESYNC is enabled.
 *
 * Whole lines come back as Buffers ending in CRLF, built with protocol/writer.ts; response
 * codes for a tagged completion come back as their text (without brackets), for
 * ctx.tagged(tag, 'OK', text, code). Mod-sequences are bigint (or a safe integer number).
 */
import { quotedStringEnd } from '../../imap/protocol/lexer.js';
import { parseResponseHead } from '../../imap/protocol/parser.js';
import { SequenceSet } from '../../imap/protocol/sequence-set.js';
import { untagged, untaggedStatus } from '../../imap/protocol/writer.js';
import { MAX_MOD_SEQUENCE } from './params.js';

/** A mod-sequence as wire text; RangeError unless 1 <= n <= 2^63-1 (0 too with zero = true). */
export function modSequenceText(n: bigint | number, zero = false): string {
  if (typeof n === 'number' && !Number.isSafeInteger(n)) throw new RangeError(`not a mod-sequence: ${n}`);
  const v = BigInt(n);
  if (v > MAX_MOD_SEQUENCE || v < (zero ? 0n : 1n)) throw new RangeError(`not a mod-sequence: ${v}`);
  return v.toString();
}

// ---- status responses and codes (§3.1.2, §3.1.3, §3.2.7, §3.2.11) ---------------------

/** `* OK [HIGHESTMODSEQ n] text` (RFC 7162 §3.1.2.1), for SELECT/EXAMINE and the first CONDSTORE enabling command. */
export function highestModseqResponse(modseq: bigint | number, text = 'Highest'): Buffer {
  return untaggedStatus('OK', text, highestModseqCode(modseq));
}

/** `* OK [NOMODSEQ] text` (RFC 7162 §3.1.2.2). */
export function noModseqResponse(text = 'No permanent modsequences'): Buffer {
  return untaggedStatus('OK', text, 'NOMODSEQ');
}

/**
 * `* OK [CLOSED] text` (RFC 7162 §3.2.11): sent when a SELECT/EXAMINE closes the mailbox
 * selected before, between its responses and the new mailbox's; not for CLOSE/UNSELECT.
 */
export function closedResponse(text = 'Previous mailbox closed'): Buffer {
  return untaggedStatus('OK', text, 'CLOSED');
}

/**
 * "HIGHESTMODSEQ n", the code of a tagged OK (RFC 7162 §3.2.7 EXPUNGE, §3.2.9 UID EXPUNGE
 * once QRESYNC is enabled; never for CLOSE, §3.2.8).
 */
export function highestModseqCode(modseq: bigint | number): string {
  return `HIGHESTMODSEQ ${modSequenceText(modseq)}`;
}

/**
 * "MODIFIED set" (RFC 7162 §3.1.3, §7 "MODIFIED" SP sequence-set): the messages (numbers
 * for STORE, UIDs for UID STORE) that failed UNCHANGEDSINCE, in any order; RangeError when
 * empty (no code is due then).
 */
export function modifiedCode(failed: SequenceSet | readonly number[]): string {
  const set = failed instanceof SequenceSet ? failed : SequenceSet.fromNumbers([...failed].sort((a, b) => a - b));
  if (set.isEmpty) throw new RangeError('MODIFIED needs at least one message');
  return `MODIFIED ${set.toString()}`;
}

// ---- untagged data ---------------------------------------------------------------------

/** Default longest VANISHED line: RFC 7162 §4's 8192-octet advice, applied to our responses too. */
export const VANISHED_LINE_LENGTH = 8192;

/**
 * `* VANISHED uid-set` (RFC 7162 §3.2.10.2, in place of EXPUNGE once QRESYNC is enabled)
 * or, with earlier, `* VANISHED (EARLIER) uid-set` (§3.2.10.1, for SELECT/EXAMINE (QRESYNC)
 * and UID FETCH (VANISHED), before any FETCH). The two forms are never combined (§3.2.10).
 * A large set is split over several responses of at most maxLineLength octets (with CRLF);
 * an empty set gives none (expunged-resp needs a non-empty known-uids).
 */
export function vanishedResponses(uids: SequenceSet, earlier: boolean, maxLineLength = VANISHED_LINE_LENGTH): Buffer[] {
  const head = earlier ? 'VANISHED (EARLIER) ' : 'VANISHED ';
  // "* " + head + at least one range ("4294967294:4294967295") + CRLF.
  if (maxLineLength < head.length + 2 + 21 + 2) throw new RangeError(`maxLineLength ${maxLineLength} is too small`);
  const room = maxLineLength - head.length - 4;
  const lines: Buffer[] = [];
  let body = '';
  for (const [lo, hi] of uids.ranges()) {
    const item = lo === hi ? String(lo) : `${lo}:${hi}`;
    if (body.length > 0 && body.length + 1 + item.length > room) {
      lines.push(untagged(head + body));
      body = '';
    }
    body = body.length === 0 ? item : `${body},${item}`;
  }
  if (body.length > 0) lines.push(untagged(head + body));
  return lines;
}

/** `* ENABLED cap ...` (RFC 5161 §3.2); no capability is allowed (`* ENABLED`). */
export function enabledResponse(capabilities: readonly string[]): Buffer {
  return untagged(['ENABLED', ...capabilities].join(' '));
}

/**
 * `* SEARCH n ... (MODSEQ m)` (RFC 7162 §3.1.6, §7 mailbox-data): the highest mod-sequence
 * of the messages found is appended when the search had a MODSEQ key and found something;
 * `* SEARCH` alone when nothing was found (the mod-sequence is "omitted if no match").
 */
export function searchResponse(numbers: readonly number[], modseq?: bigint | number): Buffer {
  if (numbers.length === 0) return untagged('SEARCH');
  const suffix = modseq === undefined ? '' : ` (MODSEQ ${modSequenceText(modseq)})`;
  return untagged(`SEARCH ${numbers.join(' ')}${suffix}`);
}

// ---- upstream responses rewritten ------------------------------------------------------

export interface FetchHead {
  /** The message number of `* n FETCH`. */
  number: number;
  /** The UID attribute, when the first segment has it at the top level of the list. */
  uid?: number;
  /** Byte offset just after the "(" that opens the attribute list. */
  listStart: number;
}

const FETCH_HEAD = /^\* ([1-9][0-9]{0,9}) FETCH \(/i;

/**
 * Reads `* n FETCH (` and, if present before any literal, the top-level `UID u` of an
 * upstream FETCH response's first segment (the lexer's first 'text'); undefined for any
 * other response.
 */
export function parseFetchHead(head: Buffer): FetchHead | undefined {
  const info = parseResponseHead(head);
  if (info.tag !== '*' || info.kind !== 'FETCH' || info.number === undefined) return undefined;
  const m = FETCH_HEAD.exec(head.toString('latin1', 0, Math.min(head.length, 24)));
  if (m === null || Number(m[1]) !== info.number) return undefined;
  const out: FetchHead = { number: info.number, listStart: m[0].length };
  const uid = scanUid(head, out.listStart);
  if (uid !== undefined) out.uid = uid;
  return out;
}

/**
 * Puts `MODSEQ (modseq)` first in the attribute list of an upstream `* n FETCH (...)`
 * response's first segment (RFC 7162 §3.1.4.2 fetch-mod-resp), so it never lands after a
 * literal; the rest of the segment is unchanged. Returns the new segment bytes and the
 * message number (and the UID, when the segment shows it) for the caller's seq -> UID map,
 * or undefined when head is not a FETCH response.
 */
export function insertFetchModseq(
  head: Buffer,
  modseq: bigint | number,
  info: FetchHead | undefined = parseFetchHead(head),
): { number: number; uid?: number; head: Buffer } | undefined {
  if (info === undefined) return undefined;
  const empty = head[info.listStart] === B.RPAREN;
  const item = Buffer.from(`MODSEQ (${modSequenceText(modseq)})${empty ? '' : ' '}`, 'latin1');
  const out = Buffer.concat([head.subarray(0, info.listStart), item, head.subarray(info.listStart)]);
  return info.uid === undefined ? { number: info.number, head: out } : { number: info.number, uid: info.uid, head: out };
}

/** `* n EXPUNGE` (RFC 3501 §7.4.1): n, for the caller to turn into `* VANISHED uid`; undefined for anything else. */
export function expungeNumber(line: Buffer): number | undefined {
  const info = parseResponseHead(line);
  return info.tag === '*' && info.kind === 'EXPUNGE' && info.number !== undefined && info.number > 0 ? info.number : undefined;
}

/** Bytes the FETCH head scanner looks at. */
const B = { SP: 0x20, QUOTE: 0x22, LPAREN: 0x28, RPAREN: 0x29, LBRACKET: 0x5b, RBRACKET: 0x5d, LBRACE: 0x7b, TILDE: 0x7e } as const;

/**
 * The value of a top-level `UID n` pair in a FETCH attribute list starting at pos (see
 * scanAttribute).
 */
function scanUid(b: Buffer, pos: number): number | undefined {
  const at = scanAttribute(b, pos, 'UID');
  if (at === undefined) return undefined;
  const text = b.toString('latin1', at[0], at[1]);
  return /^[1-9][0-9]{0,9}$/.test(text) && Number(text) <= 4_294_967_295 ? Number(text) : undefined;
}

/**
 * The flags of a top-level `FLAGS (...)` pair in an upstream `* n FETCH (...)` response's
 * first segment, when it comes before any literal; undefined otherwise.
 */
export function fetchHeadFlags(head: Buffer, info: FetchHead | undefined = parseFetchHead(head)): string[] | undefined {
  if (info === undefined) return undefined;
  const at = scanAttribute(head, info.listStart, 'FLAGS');
  if (at === undefined || head[at[0]] !== B.LPAREN) return undefined;
  // flag-list = "(" [flag *(SP flag)] ")": atoms and "\"-atoms only (RFC 3501 §9).
  const inner = head.toString('latin1', at[0] + 1, at[1] - 1).trim();
  return inner === '' ? [] : inner.split(/ +/);
}

/**
 * [start, end) of the value of the top-level attribute `name` in a FETCH attribute list
 * starting at pos, reading name/value pairs (RFC 3501 §7.4.2 msg-att) until ")", the end
 * of the segment, or a literal (whose data is not in this segment). Section names
 * ("BODY[HEADER.FIELDS (A B)]") and quoted strings are skipped whole.
 */
function scanAttribute(b: Buffer, pos: number, wanted: string): [number, number] | undefined {
  let end = b.length;
  if (b[end - 1] === 0x0a) end--;
  if (b[end - 1] === 0x0d) end--;
  let i = pos;
  while (i < end) {
    while (b[i] === B.SP) i++;
    if (i >= end || b[i] === B.RPAREN) return undefined;
    // Attribute name: an atom, with "[...]" sections and "<...>" partials inside it.
    const nameStart = i;
    while (i < end && isNameByte(b[i]!)) {
      i = b[i] === B.LBRACKET ? skipBracket(b, i + 1, end) : i + 1;
      if (i < 0) return undefined;
    }
    if (i === nameStart || b[i] !== B.SP) return undefined;
    const name = b.toString('latin1', nameStart, i).toUpperCase();
    i++;
    // Value: a list, a quoted string, a literal (stop), or an atom/number/NIL.
    const valueStart = i;
    const c = b[i];
    if (c === B.LPAREN) i = skipList(b, i + 1, end);
    else if (c === B.QUOTE) i = skipQuoted(b, i, end);
    else if (c === B.LBRACE || c === B.TILDE) return undefined;
    else while (i < end && b[i] !== B.SP && b[i] !== B.RPAREN) i++;
    if (i < 0) return undefined;
    if (name === wanted) return [valueStart, i];
  }
  return undefined;
}

function isNameByte(c: number): boolean {
  return c > B.SP && c !== 0x7f && c !== B.LPAREN && c !== B.RPAREN && c !== B.QUOTE && c !== B.LBRACE;
}

/** From a '"', the index after its closing quote; -1 if the segment ends first. */
function skipQuoted(b: Buffer, open: number, end: number): number {
  const close = quotedStringEnd(b, open, end);
  return close < 0 ? -1 : close + 1;
}

/** From after a "[", the index after its "]"; -1 if the segment ends first. */
function skipBracket(b: Buffer, i: number, end: number): number {
  while (i < end) {
    if (b[i] === B.RBRACKET) return i + 1;
    i = b[i] === B.QUOTE ? skipQuoted(b, i, end) : i + 1;
    if (i < 0) return -1;
  }
  return -1;
}

/** From after a "(", the index after its ")"; -1 at a literal or the end of the segment. */
function skipList(b: Buffer, i: number, end: number): number {
  let depth = 1;
  while (i < end) {
    const c = b[i];
    if (c === B.RPAREN && --depth === 0) return i + 1;
    if (c === B.LPAREN) depth++;
    if (c === B.LBRACE) return -1;
    i = c === B.QUOTE ? skipQuoted(b, i, end) : i + 1;
    if (i < 0) return -1;
  }
  return -1;
}
