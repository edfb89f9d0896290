/**
 * Structured parsing of one complete command or response, for the commands the gateway
 * answers itself and the upstream responses it must understand. Relayed traffic never
 * goes through here: it is forwarded as lexed.
 *
 * Grammar: RFC 3501 §9 (atoms, quoted strings, literals, NIL, parenthesized lists), with
 * RFC 3516 literal8 and fetch attributes such as BODY[HEADER.FIELDS (A B)]<0.100> kept
 * as one atom.
 */

export type ImapValue =
  | { type: 'atom'; value: string }
  | { type: 'string'; value: Buffer; literal: boolean; binary?: boolean }
  | { type: 'nil' }
  | { type: 'list'; items: ImapValue[] };

export interface ParsedLine {
  /** The command tag, or "*" / "+" for untagged and continuation responses. */
  tag: string;
  items: ImapValue[];
}

export class ImapParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImapParseError';
  }
}

const SP = 0x20;
const LPAREN = 0x28;
const RPAREN = 0x29;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const LBRACE = 0x7b;
const TILDE = 0x7e;
const CR = 0x0d;
const LF = 0x0a;

/** atom-specials of RFC 3501 §9, less "]" which resp-text-code and section atoms use. */
function isAtomChar(b: number): boolean {
  return b > 0x20 && b < 0x7f && b !== LPAREN && b !== RPAREN && b !== LBRACE && b !== QUOTE && b !== SP;
}

/**
 * segments: the 'text' events of one command or response, in order; literals: the bodies
 * that followed the segments announcing them.
 */
export function parseSegments(segments: Buffer[], literals: Buffer[]): ParsedLine {
  if (segments.length !== literals.length + 1) {
    throw new ImapParseError(`expected ${literals.length + 1} segments, got ${segments.length}`);
  }
  const root: ImapValue[] = [];
  const stack: ImapValue[][] = [root];
  let tag: string | undefined;
  for (let s = 0; s < segments.length; s++) {
    const seg = segments[s]!;
    let end = seg.length;
    if (seg[end - 1] === LF) end--;
    if (seg[end - 1] === CR) end--;
    let i = 0;
    while (i < end) {
      const b = seg[i]!;
      const top = stack[stack.length - 1]!;
      if (b === SP) {
        i++;
        continue;
      }
      if (tag === undefined) {
        // The tag is whatever comes before the first space (RFC 3501 §9 tag, "*" or "+").
        let j = i;
        while (j < end && seg[j] !== SP) j++;
        tag = seg.toString('latin1', i, j);
        i = j;
        continue;
      }
      if (b === LPAREN) {
        const list: ImapValue = { type: 'list', items: [] };
        top.push(list);
        stack.push(list.items);
        i++;
      } else if (b === RPAREN) {
        if (stack.length === 1) throw new ImapParseError('unbalanced ")"');
        stack.pop();
        i++;
      } else if (b === QUOTE) {
        const [value, next] = readQuoted(seg, i + 1, end);
        top.push({ type: 'string', value, literal: false });
        i = next;
      } else if (b === LBRACE || (b === TILDE && seg[i + 1] === LBRACE)) {
        // Only valid as the announcement that ends this segment.
        const close = seg.indexOf(0x7d, i);
        if (close !== end - 1 || s === segments.length - 1) throw new ImapParseError('literal announcement not at end of line');
        top.push({ type: 'string', value: literals[s]!, literal: true, ...(b === TILDE ? { binary: true } : {}) });
        i = end;
      } else if (isAtomChar(b)) {
        const next = readAtom(seg, i, end);
        const text = seg.toString('latin1', i, next);
        top.push(text.toUpperCase() === 'NIL' ? { type: 'nil' } : { type: 'atom', value: text });
        i = next;
      } else {
        throw new ImapParseError(`unexpected character 0x${b.toString(16)}`);
      }
      // Tokens must be separated by SP, ")" or end of line.
      if (i < end && seg[i] !== SP && seg[i] !== RPAREN && seg[i - 1] !== LPAREN) {
        throw new ImapParseError('missing space between tokens');
      }
    }
  }
  if (stack.length !== 1) throw new ImapParseError('unbalanced "("');
  if (tag === undefined || tag === '') throw new ImapParseError('empty line');
  return { tag, items: root };
}

/** A quoted string body from after the opening quote; returns the unescaped bytes and the index after the closing quote. */
function readQuoted(seg: Buffer, start: number, end: number): [Buffer, number] {
  const out: number[] = [];
  for (let i = start; i < end; i++) {
    const b = seg[i]!;
    if (b === BACKSLASH) {
      const n = seg[i + 1];
      // RFC 3501 §9 quoted-specials: only \" and \\ may be escaped.
      if (n !== QUOTE && n !== BACKSLASH) throw new ImapParseError('bad escape in quoted string');
      out.push(n);
      i++;
    } else if (b === QUOTE) {
      return [Buffer.from(out), i + 1];
    } else if (b === CR || b === LF) {
      throw new ImapParseError('line break in quoted string');
    } else {
      out.push(b);
    }
  }
  throw new ImapParseError('unterminated quoted string');
}

/** An atom, letting "[...]" sections (with spaces and lists inside) and "<o.l>" partials belong to it. */
function readAtom(seg: Buffer, start: number, end: number): number {
  let i = start;
  while (i < end) {
    const b = seg[i]!;
    if (b === LBRACKET) {
      const close = seg.indexOf(RBRACKET, i);
      if (close < 0 || close >= end) throw new ImapParseError('unterminated "["');
      i = close + 1;
      continue;
    }
    if (!isAtomChar(b)) break;
    i++;
  }
  return i;
}

export interface ResponseHead {
  /** "*", "+" or the tag. */
  tag: string;
  /** Upper-case status (OK, NO, BAD, BYE, PREAUTH) or data keyword (CAPABILITY, FETCH, EXISTS...). */
  kind: string;
  /** The number of "* 12 EXISTS" / "* 3 FETCH ...". */
  number?: number;
  /** The bracketed response code of a status response (RFC 3501 §7.1), with its byte range. */
  code?: { name: string; raw: string; start: number; end: number };
}

/** Reads only the start of a response, so free response text is never parsed as IMAP values. */
export function parseResponseHead(first: Buffer): ResponseHead {
  const limit = Math.min(first.length, 8192);
  const text = first.toString('latin1', 0, limit);
  const sp = text.indexOf(' ');
  const tag = (sp < 0 ? text : text.slice(0, sp)).replace(/\r?\n$/, '');
  if (tag === '+' || sp < 0) return { tag, kind: tag === '+' ? '+' : '' };
  const m = /^(\d+) ([A-Za-z]+)|^([A-Za-z][A-Za-z0-9.-]*)/.exec(text.slice(sp + 1));
  if (!m) return { tag, kind: '' };
  const head: ResponseHead = m[1] !== undefined ? { tag, kind: m[2]!.toUpperCase(), number: Number(m[1]) } : { tag, kind: m[3]!.toUpperCase() };
  if (head.number === undefined && ['OK', 'NO', 'BAD', 'BYE', 'PREAUTH'].includes(head.kind)) {
    const codeStart = sp + 1 + m[0].length + 1;
    if (text[codeStart - 1] === ' ' && text[codeStart] === '[') {
      const close = text.indexOf(']', codeStart);
      if (close > 0) {
        const raw = text.slice(codeStart + 1, close);
        head.code = { name: (raw.split(' ')[0] ?? '').toUpperCase(), raw, start: codeStart, end: close + 1 };
      }
    }
  }
  return head;
}
