/**
 * Structured parsing of one complete command or response, for the commands the gateway
 * answers itself and the upstream responses it must understand. Relayed traffic never
 * goes through here: it is forwarded as lexed.
 *
 * Grammar: RFC 3501 §4 (data formats) and §9 (formal syntax): atoms, numbers, quoted
 * strings, literals, NIL and parenthesized lists, plus RFC 3516 literal8 (`~{n}`) and
 * RFC 7888 non-synchronizing literals (`{n+}`). Deliberate leniencies:
 *
 *   - "[" is an ATOM-CHAR and "]" an ASTRING-CHAR (RFC 3501 §9: only "]" is a
 *     resp-special, and neither is an atom-special), so outside the two places below an
 *     atom may hold either without the other: `SELECT a[b` names the mailbox "a[b", and
 *     `SELECT a[b c]` is the atom "a[b" followed by "c]", as Dovecot reads them.
 *   - Bracketed sections belong to the atom they are in, with everything inside them
 *     (spaces, lists, quoted strings), in two places only: after a section-bearing fetch
 *     attribute of a FETCH command or response (RFC 3501 §6.4.5 and §7.4.2 `BODY[`,
 *     `BODY.PEEK[`; RFC 3516 §4.1 `BINARY[`, `BINARY.PEEK[`, `BINARY.SIZE[`), so
 *     `BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>` is one atom, and the response code at
 *     the start of an untagged status response's text (RFC 3501 §7.1 resp-text-code), so
 *     `* OK [PERMANENTFLAGS (\Seen \*)] Limited` reads `[PERMANENTFLAGS (\Seen \*)]` as
 *     one atom. Their value is the raw text. An unterminated section there, or a literal
 *     inside one, is an ImapParseError.
 *   - Atoms may contain "%" and "*" (list wildcards, sequence sets), as Dovecot's atoms do,
 *     and 8-bit bytes (decoded as UTF-8); "\" is allowed too so that flags such as \Seen
 *     are atoms.
 *   - Quoted strings may hold 8-bit bytes (RFC 6855 UTF8=ACCEPT); only \" and \\ escapes
 *     are accepted (RFC 3501 §9 quoted-specials), and no CR, LF or NUL.
 *   - "(" may follow ")" directly, as body-type-mpart requires ("((...)(...) "MIXED")").
 *
 * Free text of status responses (`a1 OK [READ-WRITE] done`) is not IMAP values and may
 * not parse: use parseResponseHead for those.
 */

import type { LexEvent, LexErrorCode, ImapLexer } from './lexer.js';
import { parseAnnouncement } from './lexer.js';
import { readResponseCode, STATUS_KINDS, type ResponseCode } from './status-line.js';

export type ImapValue =
  /** Atoms, numbers, sequence sets, flags like \Seen, and section-bearing atoms (raw text). */
  | { type: 'atom'; value: string }
  /** A quoted string (unescaped) or a literal; binary for a literal8 (RFC 3516). */
  | { type: 'string'; value: Buffer; literal: boolean; binary?: boolean }
  | { type: 'nil' }
  | { type: 'list'; items: ImapValue[] };

export interface ParsedLine {
  /** The command tag, or "*" / "+" for untagged and continuation responses. */
  tag: string;
  /** For commands, items[0] is the command name atom. */
  items: ImapValue[];
}

export class ImapParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImapParseError';
  }
}

const SP = 0x20;
const QUOTE = 0x22;
const LPAREN = 0x28;
const RPAREN = 0x29;
const PLUS = 0x2b;
const STAR = 0x2a;
const PERCENT = 0x25;
const BACKSLASH = 0x5c;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const TILDE = 0x7e;
const CR = 0x0d;
const LF = 0x0a;

/** Atom bytes: RFC 3501 §9 ATOM-CHAR, leniently (see the module comment). */
function isAtomByte(b: number): boolean {
  return b > 0x20 && b !== 0x7f && b !== LPAREN && b !== RPAREN && b !== LBRACE && b !== QUOTE;
}

/** RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">; "*" and "+" for responses. */
export function isValidTag(tag: string): boolean {
  if (tag === '*' || tag === '+') return true;
  if (tag.length === 0) return false;
  for (let i = 0; i < tag.length; i++) {
    const c = tag.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
    if (c === LPAREN || c === RPAREN || c === LBRACE || c === QUOTE || c === BACKSLASH) return false;
    if (c === PERCENT || c === STAR || c === PLUS) return false;
  }
  return true;
}

/**
 * Parses one command or response. segments: the 'text' events of it, in order; literals:
 * the bodies that followed each segment but the last (so segments.length === literals.length + 1).
 * Throws ImapParseError on anything that is not RFC 3501 §9 syntax (with the leniencies
 * above; runs of spaces and trailing spaces are tolerated too).
 */
export function parseSegments(segments: Buffer[], literals: Buffer[]): ParsedLine {
  if (segments.length === 0 || segments.length !== literals.length + 1) {
    throw new ImapParseError(`expected ${literals.length + 1} segments, got ${segments.length}`);
  }
  const root: ImapValue[] = [];
  const stack: ImapValue[][] = [root];
  let tag: string | undefined;
  // afterToken: a token, the tag or ")" was just read, so a space (or ")", or "(" right
  // after ")") must come next. A literal counts as a token, across segments.
  let afterToken = false;
  let afterClose = false;
  for (let s = 0; s < segments.length; s++) {
    const seg = segments[s]!;
    const last = s === segments.length - 1;
    let end = seg.length;
    if (seg[end - 1] === LF) end--;
    if (seg[end - 1] === CR) end--;
    let i = 0;
    let literalTaken = false;
    if (tag === undefined) {
      // The tag is everything up to the first space (RFC 3501 §2.2.1, §9 tag).
      let j = seg.indexOf(SP);
      if (j < 0 || j > end) j = end;
      tag = seg.toString('latin1', 0, j);
      if (!isValidTag(tag)) throw new ImapParseError(tag === '' ? 'missing tag' : 'invalid tag');
      i = j;
      afterToken = true;
    }
    while (i < end) {
      const b = seg[i]!;
      if (b === SP) {
        afterToken = false;
        afterClose = false;
        i++;
        continue;
      }
      if (b === RPAREN) {
        if (stack.length === 1) throw new ImapParseError('unbalanced ")"');
        stack.pop();
        afterToken = true;
        afterClose = true;
        i++;
        continue;
      }
      if (afterToken && !(afterClose && b === LPAREN)) {
        throw new ImapParseError(`missing space between tokens at offset ${i}`);
      }
      afterClose = false;
      const top = stack[stack.length - 1]!;
      if (b === LPAREN) {
        const list: ImapValue = { type: 'list', items: [] };
        top.push(list);
        stack.push(list.items);
        afterToken = false;
        i++;
        continue;
      }
      afterToken = true;
      if (b === QUOTE) {
        const [value, next] = readQuoted(seg, i + 1, end);
        top.push({ type: 'string', value, literal: false });
        i = next;
      } else if (b === LBRACE || (b === TILDE && seg[i + 1] === LBRACE)) {
        // RFC 3501 §4.3 / RFC 3516 §5: only valid as the announcement that ends this segment.
        const ann = ANNOUNCEMENT.test(seg.toString('latin1', i, end)) ? parseAnnouncement(seg.subarray(i, end)) : undefined;
        if (ann === undefined || last) throw new ImapParseError('literal announcement not at end of line');
        const value = literals[s]!;
        if (value.length !== ann.size) throw new ImapParseError(`literal of ${ann.size} bytes has ${value.length}`);
        top.push(ann.binary ? { type: 'string', value, literal: true, binary: true } : { type: 'string', value, literal: true });
        literalTaken = true;
        i = end;
      } else if (isAtomByte(b)) {
        const next = readAtom(seg, i, end, bracketsFor(tag, root, top));
        const text = seg.toString('utf8', i, next);
        top.push(text.length === 3 && text.toUpperCase() === 'NIL' ? { type: 'nil' } : { type: 'atom', value: text });
        i = next;
      } else {
        throw new ImapParseError(`unexpected byte 0x${b.toString(16)} at offset ${i}`);
      }
    }
    if (!last && !literalTaken) throw new ImapParseError('segment does not end with a literal announcement');
  }
  if (stack.length !== 1) throw new ImapParseError('unbalanced "("');
  return { tag: tag!, items: root };
}

const ANNOUNCEMENT = /^~?\{[0-9]+\+?\}$/;

/** A quoted string body from after the opening quote; returns the unescaped bytes and the index after the closing quote. */
function readQuoted(seg: Buffer, start: number, end: number): [Buffer, number] {
  let escapes = 0;
  for (let i = start; i < end; i++) {
    const b = seg[i]!;
    if (b === BACKSLASH) {
      const n = seg[i + 1];
      // RFC 3501 §9 quoted-specials: only \" and \\ may be escaped.
      if (i + 1 >= end || (n !== QUOTE && n !== BACKSLASH)) throw new ImapParseError('bad escape in quoted string');
      escapes++;
      i++;
    } else if (b === QUOTE) {
      if (escapes === 0) return [seg.subarray(start, i), i + 1];
      const out = Buffer.allocUnsafe(i - start - escapes);
      let o = 0;
      for (let k = start; k < i; k++) {
        if (seg[k] === BACKSLASH) k++;
        out[o++] = seg[k]!;
      }
      return [out, i + 1];
    } else if (b === CR || b === LF || b === 0) {
      throw new ImapParseError('CR, LF or NUL in quoted string');
    }
  }
  throw new ImapParseError('unterminated quoted string');
}

/** RFC 3501 §9 fetch-att / msg-att-static and RFC 3516 §4.1: the names a section follows. */
const SECTION_NAMES = new Set(['BODY', 'BODY.PEEK', 'BINARY', 'BINARY.PEEK', 'BINARY.SIZE']);
const STATUS_WORDS = new Set(['OK', 'NO', 'BAD', 'BYE', 'PREAUTH']);

/** Where in the line an atom starts decides what a "[" in it opens (see the module comment). */
type Brackets = 'section' | 'code' | 'none';

function bracketsFor(tag: string | undefined, root: ImapValue[], top: ImapValue[]): Brackets {
  const word = (v: ImapValue | undefined): string | undefined => (v?.type === 'atom' ? v.value.toUpperCase() : undefined);
  // "* OK [code ...] text" (RFC 3501 §7.1): the code right after the status word.
  if (tag === '*' && top === root && root.length === 1 && STATUS_WORDS.has(word(root[0]) ?? '')) return 'code';
  // "tag FETCH", "tag UID FETCH" (RFC 3501 §6.4.5, §6.4.8) and "* n FETCH" (§7.4.2).
  return word(root[0]) === 'FETCH' || word(root[1]) === 'FETCH' ? 'section' : 'none';
}

/**
 * An atom. A "[" opens a section that belongs to the atom, with spaces, lists and quoted
 * strings inside, only where `brackets` says so: after a section-bearing fetch attribute
 * name ('section') or at the start of a response code ('code'); elsewhere "[" and "]" are
 * atom bytes like any other. "<o.l>" partials are atom bytes anyway.
 */
function readAtom(seg: Buffer, start: number, end: number, brackets: Brackets): number {
  let i = start;
  while (i < end) {
    const b = seg[i]!;
    if (b === LBRACKET && opensSection(seg, start, i, brackets)) {
      i = skipBracket(seg, i + 1, end);
      continue;
    }
    if (!isAtomByte(b)) break;
    i++;
  }
  return i;
}

function opensSection(seg: Buffer, start: number, at: number, brackets: Brackets): boolean {
  if (brackets === 'code') return at === start;
  if (brackets === 'section') return SECTION_NAMES.has(seg.toString('latin1', start, at).toUpperCase());
  return false;
}

/** From after a "[", the index after its matching "]"; quoted strings inside may hold "]". */
function skipBracket(seg: Buffer, start: number, end: number): number {
  let depth = 1;
  for (let i = start; i < end; i++) {
    const b = seg[i]!;
    if (b === QUOTE) {
      i = readQuoted(seg, i + 1, end)[1] - 1;
    } else if (b === LBRACKET) {
      depth++;
    } else if (b === RBRACKET) {
      if (--depth === 0) return i + 1;
    }
  }
  // Also the case of a literal inside the brackets, which is not supported.
  throw new ImapParseError('unterminated "["');
}

// ---- response heads -------------------------------------------------------------------

export interface ResponseHead {
  /** "*", "+" or the tag. */
  tag: string;
  /**
   * Upper-case status (OK, NO, BAD, BYE, PREAUTH), the keyword after a number (EXISTS,
   * EXPUNGE, FETCH, RECENT), the untagged keyword (CAPABILITY, LIST, SEARCH, ...), "+"
   * for a continuation request, or "" when the line has nothing recognizable there.
   */
  kind: string;
  /** The number of "* 12 EXISTS" / "* 3 FETCH ...". */
  number?: number;
  /**
   * The bracketed response code of a status response (RFC 3501 §7.1 resp-text-code):
   * name upper-cased, raw = the text between the brackets, start/end = byte offsets of
   * "[" and just after "]" within the segment, for rewriting it in place.
   */
  code?: ResponseCode;
}

/** How far into a line the head (tag, kind, number, code) is looked for. */
const HEAD_LIMIT = 16384;

/**
 * Reads only the start of a response (RFC 3501 §7: status, server data, continuation),
 * so free response text is never parsed as IMAP values. Also usable on a command line.
 */
export function parseResponseHead(first: Buffer): ResponseHead {
  let end = Math.min(first.length, HEAD_LIMIT);
  if (end === first.length) {
    if (first[end - 1] === LF) end--;
    if (first[end - 1] === CR) end--;
  }
  let sp = first.indexOf(SP);
  if (sp < 0 || sp > end) sp = end;
  const tag = first.toString('latin1', 0, sp);
  // RFC 3501 §7.5: continue-req = "+" SP (resp-text / base64) CRLF; some servers omit the SP.
  if (tag === '+') return { tag, kind: '+' };
  let i = sp + 1;
  if (i > end) return { tag, kind: '' };
  let number: number | undefined;
  const digitsStart = i;
  while (i < end && first[i]! >= 0x30 && first[i]! <= 0x39) i++;
  if (i > digitsStart && (i === end || first[i] === SP)) {
    number = Number(first.toString('latin1', digitsStart, i));
    i++;
  } else {
    i = digitsStart;
  }
  const kindStart = i;
  while (i < end && isKeywordByte(first[i]!)) i++;
  const kind = first.toString('latin1', kindStart, i).toUpperCase();
  const head: ResponseHead = number === undefined ? { tag, kind } : { tag, kind, number };
  // resp-cond-state / resp-cond-bye / resp-cond-auth: status SP resp-text, and
  // resp-text = ["[" resp-text-code "]" SP] text (RFC 3501 §9).
  if (number === undefined && STATUS_KINDS.has(kind) && first[i] === SP && i + 1 < end) {
    const code = readResponseCode(first, i + 1, end);
    if (code !== undefined) head.code = code;
  }
  return head;
}

function isKeywordByte(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x2e || b === 0x5f;
}

// ---- collecting whole commands --------------------------------------------------------

export interface CollectorOptions {
  /** Total literal bytes buffered for one command or response. */
  maxLiteralBytes: number;
  /** Total segment bytes for one command or response (default 1 MiB): bounds {0} chains. */
  maxTextBytes?: number;
  /**
   * Server side: the lexer reading the client. A synchronizing literal over the bound is
   * then refused with lexer.abortLiteral() (the client sends nothing before "+", RFC 3501
   * §7.5). Leave it out when reading responses: their literals always follow, so an
   * over-bound one is dropped with the rest of the response.
   */
  lexer?: ImapLexer;
}

export type CollectorOutput =
  /** A complete command or response, ready for parseSegments. */
  | { type: 'command'; segments: Buffer[]; literals: Buffer[] }
  /** A synchronizing literal was accepted: a server now sends "+ ..." (RFC 3501 §7.5). */
  | { type: 'continue'; size: number; binary: boolean }
  /**
   * The command was refused and will produce no 'command'. text is the start of its first
   * segment (to find the tag). fatal: the stream cannot be resynchronized (a too-large
   * non-synchronizing literal, RFC 7888 §4): close the connection. Otherwise collection
   * resumes with the next command by itself.
   */
  | {
      type: 'error';
      code: LexErrorCode | 'command-too-large';
      size?: number;
      sync?: boolean;
      text: Buffer;
      fatal: boolean;
    };

const ERROR_TEXT_BYTES = 200;

/**
 * Gathers the lexer's events into whole commands (or responses) with bounded buffering:
 * literal data is concatenated once per literal at its end (so the input chunks it
 * sliced are released), text and literal totals are capped per command.
 */
export class CommandCollector {
  private readonly maxLiteralBytes: number;
  private readonly maxTextBytes: number;
  private readonly lexer: ImapLexer | undefined;
  private segments: Buffer[] = [];
  private literals: Buffer[] = [];
  private chunks: Buffer[] = [];
  private chunksLength = 0;
  private literalBytes = 0;
  private textBytes = 0;
  /** Refused: ignore events until the lexer ends this command. */
  private skipping = false;

  constructor(options: CollectorOptions) {
    this.maxLiteralBytes = options.maxLiteralBytes;
    this.maxTextBytes = options.maxTextBytes ?? 1024 * 1024;
    this.lexer = options.lexer;
  }

  /** Bytes currently held for the command being collected. */
  get buffered(): number {
    return this.textBytes + this.literalBytes;
  }

  reset(): void {
    this.segments = [];
    this.literals = [];
    this.chunks = [];
    this.chunksLength = 0;
    this.literalBytes = 0;
    this.textBytes = 0;
    this.skipping = false;
  }

  /** Consumes many events, yielding outputs in order. */
  *consume(events: Iterable<LexEvent>): Generator<CollectorOutput> {
    for (const ev of events) {
      const out = this.push(ev);
      if (out !== undefined) yield out;
    }
  }

  /** Consumes one event; returns an output when it completes, refuses or needs a continuation. */
  push(ev: LexEvent): CollectorOutput | undefined {
    if (ev.type === 'error') {
      const fatal = ev.code === 'literal-too-large' && ev.sync === false;
      const first = this.segments[0];
      const refused = this.skipping;
      this.reset();
      // A command already refused was answered once; only a fatal error is worth another word.
      if (refused && !fatal) return undefined;
      const out: CollectorOutput = { type: 'error', code: ev.code, text: first ? headOf(first) : ev.text, fatal };
      if (ev.size !== undefined) out.size = ev.size;
      if (ev.sync !== undefined) out.sync = ev.sync;
      return out;
    }
    if (this.skipping) {
      if (ev.type === 'end') this.reset();
      else if (ev.type === 'literal-start') this.refuseLiteral(ev.sync);
      return undefined;
    }
    if (ev.type !== 'text' && this.segments.length === 0) {
      // Stray literal events after a refused synchronizing literal the peer sent anyway.
      return undefined;
    }
    switch (ev.type) {
      case 'text':
        this.textBytes += ev.data.length;
        this.segments.push(ev.data);
        if (this.textBytes > this.maxTextBytes) return this.refuse('command-too-large');
        return undefined;
      case 'literal-start':
        if (this.literalBytes + ev.size > this.maxLiteralBytes) {
          const out = this.refuse('literal-too-large', ev.size, ev.sync);
          this.refuseLiteral(ev.sync);
          return out;
        }
        this.literalBytes += ev.size;
        this.chunks = [];
        this.chunksLength = 0;
        return ev.sync ? { type: 'continue', size: ev.size, binary: ev.binary } : undefined;
      case 'literal-data':
        this.chunks.push(ev.data);
        this.chunksLength += ev.data.length;
        return undefined;
      case 'literal-end':
        // One copy per literal, so the input chunks it sliced are not kept alive.
        this.literals.push(this.chunks.length === 1 ? Buffer.from(this.chunks[0]!) : Buffer.concat(this.chunks, this.chunksLength));
        this.chunks = [];
        this.chunksLength = 0;
        return undefined;
      case 'end': {
        const out: CollectorOutput = { type: 'command', segments: this.segments, literals: this.literals };
        this.segments = [];
        this.literals = [];
        this.reset();
        return out;
      }
    }
  }

  /** Refuses the command being collected: the rest of its events are ignored. */
  private refuse(code: 'literal-too-large' | 'command-too-large', size?: number, sync?: boolean): CollectorOutput {
    const text = headOf(this.segments[0]!);
    this.reset();
    this.skipping = true;
    const out: CollectorOutput = { type: 'error', code, text, fatal: false };
    if (size !== undefined) out.size = size;
    if (sync !== undefined) out.sync = sync;
    return out;
  }

  /**
   * A literal of a refused command: a synchronizing one is never sent when we do not say
   * "+" (server side, with the lexer), so the command is over; otherwise it is skipped.
   */
  private refuseLiteral(sync: boolean): void {
    if (sync && this.lexer !== undefined) {
      this.lexer.abortLiteral();
      this.reset();
    }
  }
}

function headOf(segment: Buffer): Buffer {
  return Buffer.from(segment.subarray(0, ERROR_TEXT_BYTES));
}
