/**
 * IMAP sequence sets (RFC 3501 §9 / RFC 9051 §9 `sequence-set`), as sorted, merged ranges,
 * plus the RFC 7162 §3.2.5 helpers built on them (known-uids, seq-match-data, the UIDs a
 * SELECT/EXAMINE (QRESYNC) reports in VANISHED (EARLIER)).
 *
 *   seq-number   = nz-number / "*"
 *   seq-range    = seq-number ":" seq-number    ; "2:4" and "4:2" are the same set
 *   sequence-set = (seq-number / seq-range) *("," sequence-set)
 *   nz-number    = digit-nz *DIGIT              ; 0 < n < 4,294,967,296
 *
 * "*" is the largest number in use (the message count, or the last UID; RFC 9051 §9: the
 * mailbox's UIDNEXT when it is empty for UIDs): the caller says what it stands for, or that
 * it is not allowed (RFC 7162 §7 known-uids, known-sequence-set and known-uid-set).
 * "$" (RFC 5182 SEARCHRES) is not a set this module can resolve, and is an error.
 *
 * Bounded: a set is a list of ranges, never expanded, so "1:4294967295" costs what "1"
 * costs; a text longer than limits.maxLength or with more than limits.maxRanges items is
 * refused before anything is allocated for it. Parsing is O(n log n) in the items, the
 * membership test O(log n), and intersections with a UID list O(ranges × log uids + output).
 */

/** Largest nz-number (RFC 3501 §9): 2^32 - 1. */
export const MAX_NZ_NUMBER = 4_294_967_295;

export interface SequenceSetLimits {
  /** Longest set text accepted, in characters. */
  maxLength: number;
  /** Most comma-separated items accepted. */
  maxRanges: number;
}

/**
 * Defaults: the gateway's default command line bound (config maxLineLength, 65536) and the
 * most items a text that long can hold ("1,3,5,..." is 2 characters an item).
 */
export const DEFAULT_SEQUENCE_SET_LIMITS: Readonly<SequenceSetLimits> = Object.freeze({ maxLength: 65_536, maxRanges: 32_768 });

export class SequenceSetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SequenceSetError';
  }
}

export interface SequenceSetParseOptions {
  /**
   * What "*" stands for (>= 1). Undefined: "*" is an error (RFC 7162 §7 sets, where "*" is
   * not allowed). 0 (an empty mailbox's message count): "*" is an error too (RFC 3501 §9,
   * a message number greater than the number of messages).
   */
  largest?: number;
  /**
   * Require the items to be strictly ascending as written, each one above the previous one
   * (after "n:m" is read as "m:n" when n > m): RFC 7162 §3.2.5.2 and §7, where
   * known-sequence-set and known-uid-set pair up element by element "in ascending order".
   */
  ascending?: boolean;
  limits?: SequenceSetLimits;
}

const COMMA = 0x2c;
const COLON = 0x3a;
const STAR = 0x2a;
const DIGIT_0 = 0x30;
const DIGIT_1 = 0x31;
const DIGIT_9 = 0x39;
/** Digits of MAX_NZ_NUMBER: a longer number is out of range without being computed. */
const MAX_DIGITS = 10;

/**
 * A set of positive 32-bit numbers, kept as ascending, disjoint, non-adjacent ranges.
 * Immutable.
 */
export class SequenceSet {
  static readonly EMPTY = new SequenceSet(new Uint32Array(0));

  /** [lo0, hi0, lo1, hi1, ...]: lo <= hi, hi(i) + 1 < lo(i+1). */
  private readonly bounds: Uint32Array;

  private constructor(bounds: Uint32Array) {
    this.bounds = bounds;
  }

  /** Parses RFC 3501 §9 sequence-set text; throws SequenceSetError. */
  static parse(text: string, options: SequenceSetParseOptions = {}): SequenceSet {
    const limits = options.limits ?? DEFAULT_SEQUENCE_SET_LIMITS;
    if (text.length === 0) throw new SequenceSetError('empty sequence set');
    if (text.length > limits.maxLength) throw new SequenceSetError(`sequence set longer than ${limits.maxLength} characters`);
    // Items: at most one per two characters, and at most maxRanges.
    const capacity = Math.min(limits.maxRanges, (text.length + 1) >> 1);
    const raw = new Uint32Array(capacity * 2);
    let count = 0;
    let sorted = true;
    let pos = 0;
    const n = text.length;
    while (true) {
      if (count === limits.maxRanges) throw new SequenceSetError(`more than ${limits.maxRanges} items in a sequence set`);
      let [lo, next] = readSeqNumber(text, pos, options.largest);
      let hi = lo;
      if (next < n && text.charCodeAt(next) === COLON) {
        [hi, next] = readSeqNumber(text, next + 1, options.largest);
        // RFC 3501 §9 seq-range: "two seq-number values and all values between these two regardless of order".
        if (hi < lo) [lo, hi] = [hi, lo];
      }
      if (count > 0) {
        const prevHi = raw[count * 2 - 1]!;
        if (options.ascending && lo <= prevHi) throw new SequenceSetError(`sequence set not in ascending order at offset ${pos}`);
        if (lo < raw[count * 2 - 2]!) sorted = false;
      }
      raw[count * 2] = lo;
      raw[count * 2 + 1] = hi;
      count++;
      if (next === n) break;
      if (text.charCodeAt(next) !== COMMA) throw new SequenceSetError(`invalid sequence set at offset ${next}`);
      pos = next + 1;
    }
    return new SequenceSet(normalize(raw, count, sorted));
  }

  /**
   * The set of the given numbers, which must be ascending (duplicates are allowed), each an
   * nz-number: a session's UID list, a SEARCH result. Throws RangeError otherwise.
   */
  static fromNumbers(sorted: ArrayLike<number>): SequenceSet {
    const out: number[] = [];
    let prev = 0;
    for (let i = 0; i < sorted.length; i++) {
      const v = sorted[i]!;
      checkNumber(v);
      if (v < prev) throw new RangeError('numbers must be ascending');
      if (out.length > 0 && v <= out[out.length - 1]! + 1) {
        out[out.length - 1] = Math.max(out[out.length - 1]!, v);
      } else {
        out.push(v, v);
      }
      prev = v;
    }
    return out.length === 0 ? SequenceSet.EMPTY : new SequenceSet(Uint32Array.from(out));
  }

  /** The union of the given inclusive ranges, in any order ([hi, lo] is read as [lo, hi]). Throws RangeError on a bad number. */
  static fromRanges(ranges: Iterable<readonly [number, number]>): SequenceSet {
    const flat: number[] = [];
    let sorted = true;
    for (const [a, b] of ranges) {
      checkNumber(a);
      checkNumber(b);
      const lo = Math.min(a, b);
      if (flat.length > 0 && lo < flat[flat.length - 2]!) sorted = false;
      flat.push(lo, Math.max(a, b));
    }
    return new SequenceSet(normalize(Uint32Array.from(flat), flat.length / 2, sorted));
  }

  /** Number of disjoint ranges. */
  get rangeCount(): number {
    return this.bounds.length / 2;
  }

  /** Number of members (at most 2^32 - 1, exact as a JS number). */
  get size(): number {
    let total = 0;
    for (let i = 0; i < this.bounds.length; i += 2) total += this.bounds[i + 1]! - this.bounds[i]! + 1;
    return total;
  }

  get isEmpty(): boolean {
    return this.bounds.length === 0;
  }

  get min(): number | undefined {
    return this.bounds.length === 0 ? undefined : this.bounds[0];
  }

  get max(): number | undefined {
    return this.bounds.length === 0 ? undefined : this.bounds[this.bounds.length - 1];
  }

  /** Membership, by binary search over the ranges. */
  has(n: number): boolean {
    let lo = 0;
    let hi = this.bounds.length / 2 - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (n < this.bounds[mid * 2]!) hi = mid - 1;
      else if (n > this.bounds[mid * 2 + 1]!) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** The ranges [lo, hi], ascending. */
  *ranges(): IterableIterator<[number, number]> {
    for (let i = 0; i < this.bounds.length; i += 2) yield [this.bounds[i]!, this.bounds[i + 1]!];
  }

  /** The members, ascending. Mind the size: "1:*" may have four billion. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let i = 0; i < this.bounds.length; i += 2) {
      for (let v = this.bounds[i]!; v <= this.bounds[i + 1]!; v++) yield v;
    }
  }

  /** The members of `sorted` (strictly ascending, e.g. a session's UIDs) that are in this set. */
  intersect(sorted: Uint32Array): Uint32Array {
    const out: number[] = [];
    let idx = 0;
    for (let i = 0; i < this.bounds.length && idx < sorted.length; i += 2) {
      const hi = this.bounds[i + 1]!;
      idx = lowerBound(sorted, this.bounds[i]!, idx);
      while (idx < sorted.length && sorted[idx]! <= hi) out.push(sorted[idx++]!);
    }
    return Uint32Array.from(out);
  }

  /** The members of this set that are not in `sorted` (strictly ascending), as a set: the "missing UIDs". */
  missingFrom(sorted: Uint32Array): SequenceSet {
    const out: number[] = [];
    let idx = 0;
    for (let i = 0; i < this.bounds.length; i += 2) {
      const hi = this.bounds[i + 1]!;
      let cur = this.bounds[i]!;
      idx = lowerBound(sorted, cur, idx);
      while (idx < sorted.length && sorted[idx]! <= hi) {
        const present = sorted[idx++]!;
        if (present > cur) out.push(cur, present - 1);
        cur = present + 1;
      }
      if (cur <= hi) out.push(cur, hi);
    }
    // Gaps of disjoint, non-adjacent ranges are themselves disjoint and non-adjacent.
    return out.length === 0 ? SequenceSet.EMPTY : new SequenceSet(Uint32Array.from(out));
  }

  /** The members within [lo, hi]. */
  clamp(lo: number, hi: number): SequenceSet {
    const out: number[] = [];
    for (let i = 0; i < this.bounds.length; i += 2) {
      const a = Math.max(lo, this.bounds[i]!);
      const b = Math.min(hi, this.bounds[i + 1]!);
      if (a <= b) out.push(a, b);
    }
    return out.length === 0 ? SequenceSet.EMPTY : new SequenceSet(Uint32Array.from(out));
  }

  equals(other: SequenceSet): boolean {
    if (other.bounds.length !== this.bounds.length) return false;
    for (let i = 0; i < this.bounds.length; i++) if (other.bounds[i] !== this.bounds[i]) return false;
    return true;
  }

  /** Compact RFC 3501 §9 text ("1:5,7,9:12"); "" for the empty set, which is not a valid sequence-set. */
  toString(): string {
    const out: string[] = [];
    for (let i = 0; i < this.bounds.length; i += 2) {
      const lo = this.bounds[i]!;
      const hi = this.bounds[i + 1]!;
      out.push(lo === hi ? String(lo) : `${lo}:${hi}`);
    }
    return out.join(',');
  }
}

/** SequenceSet.parse as a function. */
export function parseSequenceSet(text: string, options?: SequenceSetParseOptions): SequenceSet {
  return SequenceSet.parse(text, options);
}

/**
 * Ascending numbers as a compact RFC 3501 §9 sequence-set ("3:5,9"); duplicates are
 * skipped; "" for none.
 */
/** Whether text is an RFC 3501 §9 sequence-set ("*" allowed), within the default bounds. */
export function isSequenceSet(text: string): boolean {
  try {
    SequenceSet.parse(text, { largest: MAX_NZ_NUMBER });
    return true;
  } catch (err) {
    if (err instanceof SequenceSetError) return false;
    throw err;
  }
}

export function formatSequenceSet(sorted: ArrayLike<number>): string {
  const out: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    const lo = sorted[i]!;
    let hi = lo;
    i++;
    while (i < sorted.length && (sorted[i] === hi + 1 || sorted[i] === hi)) hi = sorted[i++]!;
    out.push(lo === hi ? String(lo) : `${lo}:${hi}`);
  }
  return out.join(',');
}

/** One seq-number at pos: its value and the index after it. */
function readSeqNumber(text: string, pos: number, largest: number | undefined): [number, number] {
  const c = text.charCodeAt(pos);
  if (c === STAR) {
    if (largest === undefined) throw new SequenceSetError(`"*" is not allowed here (offset ${pos})`);
    if (largest < 1) throw new SequenceSetError(`"*" refers to no message (offset ${pos})`);
    return [largest, pos + 1];
  }
  // nz-number = digit-nz *DIGIT: no leading zero, no zero.
  if (!(c >= DIGIT_1 && c <= DIGIT_9)) throw new SequenceSetError(`invalid sequence set at offset ${pos}`);
  let end = pos + 1;
  while (end < text.length) {
    const d = text.charCodeAt(end);
    if (d < DIGIT_0 || d > DIGIT_9) break;
    end++;
    if (end - pos > MAX_DIGITS) throw new SequenceSetError(`number out of range at offset ${pos}`);
  }
  const value = Number(text.slice(pos, end));
  if (value > MAX_NZ_NUMBER) throw new SequenceSetError(`number out of range at offset ${pos}`);
  return [value, end];
}

function checkNumber(v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > MAX_NZ_NUMBER) throw new RangeError(`not an nz-number: ${v}`);
}

/** Sorts (unless already sorted by lo) and merges overlapping or adjacent ranges. */
function normalize(raw: Uint32Array, count: number, sorted: boolean): Uint32Array {
  if (count === 0) return new Uint32Array(0);
  let order: number[] | undefined;
  if (!sorted) {
    order = Array.from({ length: count }, (_, i) => i);
    order.sort((a, b) => raw[a * 2]! - raw[b * 2]! || raw[a * 2 + 1]! - raw[b * 2 + 1]!);
  }
  const out: number[] = [];
  for (let k = 0; k < count; k++) {
    const i = order === undefined ? k : order[k]!;
    const lo = raw[i * 2]!;
    const hi = raw[i * 2 + 1]!;
    // hi + 1 never overflows here: these are JS numbers, not the Uint32Array's.
    if (out.length > 0 && lo <= out[out.length - 1]! + 1) {
      if (hi > out[out.length - 1]!) out[out.length - 1] = hi;
    } else {
      out.push(lo, hi);
    }
  }
  return Uint32Array.from(out);
}

/** The first index >= from whose value is >= v (sorted ascending). */
function lowerBound(sorted: Uint32Array, v: number, from: number): number {
  let lo = from;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---- RFC 7162 §3.2.5: known-uids and seq-match-data ------------------------------------

/**
 * seq-match-data (RFC 7162 §3.2.5.2, §7): message numbers the client had and the UIDs they
 * had, paired element by element in ascending order. Parse both with `ascending: true` and
 * check `sequences.size === uids.size` (params.ts does).
 */
export interface SeqMatchData {
  sequences: SequenceSet;
  uids: SequenceSet;
}

/**
 * RFC 7162 §3.2.5.2: the highest UID up to which the client provably knows every expunge
 * (0 when nothing is proven). "The server then compares each sequence number and UID pair
 * the client provides with the current state of the mailbox. If a pair matches, then the
 * client knows of any expunges up to, and including, the message". The RFC's own example
 * (pair 4/8 matches, the next pair 12/24 finds message 12 with UID 25: VANISHED starts at
 * 9) reads "the (N+1)th message in the mailbox" where it means message number 12.
 *
 * Pairs are compared in ascending order and the walk stops at the first pair that does not
 * match, or whose message number is beyond the mailbox (as Dovecot does). A matching pair
 * after a mismatching one cannot happen with a consistent client cache, so trusting it
 * would only trust bad data; reporting more VANISHED (EARLIER) UIDs than needed is harmless
 * (§3.2.10: VANISHED (EARLIER) may name UIDs the client does not have).
 *
 * currentUids: the mailbox's UIDs now, strictly ascending (message number i + 1 has
 * currentUids[i]). Runs of consecutive pairs are checked with a binary search each, so the
 * cost is O(ranges × log messages) however large the client's sets are.
 */
export function seqMatchFloor(match: SeqMatchData, currentUids: Uint32Array): number {
  const seqs = [...match.sequences.ranges()];
  const uids = [...match.uids.ranges()];
  let floor = 0;
  let si = 0;
  let ui = 0;
  let seq = seqs[0]?.[0] ?? 0;
  let uid = uids[0]?.[0] ?? 0;
  while (si < seqs.length && ui < uids.length) {
    // A run where both the message numbers and the UIDs are consecutive: seq + j <-> uid + j.
    const len = Math.min(seqs[si]![1] - seq + 1, uids[ui]![1] - uid + 1);
    // current[seq + j - 1] - (uid + j) is non-decreasing in j (UIDs strictly ascend), so
    // the matching pairs of the run are a prefix, found by binary search.
    const usable = Math.min(len, currentUids.length - seq + 1);
    if (usable <= 0 || currentUids[seq - 1] !== uid) return floor;
    let lo = 0;
    let hi = usable - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (currentUids[seq + mid - 1] === uid + mid) lo = mid;
      else hi = mid - 1;
    }
    floor = uid + lo;
    if (lo < len - 1) return floor;
    seq += len;
    uid += len;
    if (seq > seqs[si]![1]) {
      si++;
      seq = seqs[si]?.[0] ?? 0;
    }
    if (uid > uids[ui]![1]) {
      ui++;
      uid = uids[ui]?.[0] ?? 0;
    }
  }
  return floor;
}

export interface QresyncVanishedQuery {
  /** The client's known-uids; absent: "1:<maxuid>", maxuid = UIDNEXT - 1 (RFC 7162 §3.2.5.1). */
  knownUids?: SequenceSet;
  /** The mailbox's UIDs now, strictly ascending. */
  currentUids: Uint32Array;
  /** The mailbox's UIDNEXT now. */
  uidNext: number;
  seqMatch?: SeqMatchData;
}

/**
 * The UIDs a SELECT/EXAMINE (QRESYNC) (or UID FETCH (CHANGEDSINCE n VANISHED) over
 * knownUids) reports in VANISHED (EARLIER) when the server remembers no expunges (RFC 7162
 * §5.1): the known UIDs that are not in the mailbox, above the seq-match floor
 * (§3.2.5.2), and below UIDNEXT (a UID not yet assigned has not vanished). A store that
 * remembers expunges with their mod-sequences can intersect this with what it knows.
 */
export function qresyncVanished(query: QresyncVanishedQuery): SequenceSet {
  const maxUid = Math.min(query.uidNext - 1, MAX_NZ_NUMBER);
  if (maxUid < 1) return SequenceSet.EMPTY;
  const known = query.knownUids ?? SequenceSet.fromRanges([[1, maxUid]]);
  const floor = query.seqMatch === undefined ? 0 : seqMatchFloor(query.seqMatch, query.currentUids);
  if (floor >= maxUid) return SequenceSet.EMPTY;
  return known.clamp(floor + 1, maxUid).missingFrom(query.currentUids);
}
