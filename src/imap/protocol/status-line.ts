/**
 * Status responses (RFC 3501 §7.1), the one reader of their parts:
 *
 *   response-tagged = tag SP resp-cond-state CRLF
 *   resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
 *   resp-cond-bye   = "BYE" SP resp-text;  resp-cond-auth = ("OK" / "PREAUTH") SP resp-text
 *   resp-text       = ["[" resp-text-code "]" SP] text
 *
 * Their text is free text, not IMAP values, so it is never tokenized: only the tag, the
 * status word and the bracketed code are read (parser.ts parseResponseHead reads the same
 * code, through readResponseCode, for rewriting it in place).
 */
import { quotedStringEnd } from './lexer.js';
import type { UntaggedStatus } from './writer.js';

const SP = 0x20;
const QUOTE = 0x22;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const CR = 0x0d;
const LF = 0x0a;

/** The status words of RFC 3501 §7.1 (upper case; they are case-insensitive on the wire). */
export const STATUS_KINDS: ReadonlySet<string> = new Set<UntaggedStatus>(['OK', 'NO', 'BAD', 'BYE', 'PREAUTH']);

export interface StatusLine {
  /** The tag, or "*" for an untagged status response. */
  tag: string;
  /** Upper-cased. Only OK, NO and BAD may complete a command (response-tagged). */
  status: UntaggedStatus;
  /** The resp-text-code without its brackets, e.g. "APPENDUID 38505 3955". */
  code?: string;
  /** The text after the status and code, without the line end. */
  text: string;
}

/** A response code (RFC 3501 §9 resp-text-code) found by readResponseCode. */
export interface ResponseCode {
  /** The code's name (its first word), upper-cased. */
  name: string;
  /** The text between the brackets. */
  raw: string;
  /** Byte offsets of "[" and of just after "]". */
  start: number;
  end: number;
}

/**
 * The response code whose "[" is at `open`, if a "]" closes it before `end`. A quoted
 * string inside may hold "]" (it is skipped whole), as codes carrying mailbox names do.
 */
export function readResponseCode(line: Buffer, open: number, end: number): ResponseCode | undefined {
  if (line[open] !== LBRACKET) return undefined;
  for (let i = open + 1; i < end; i++) {
    const b = line[i]!;
    if (b === QUOTE) {
      i = quotedStringEnd(line, i, end);
      if (i < 0) return undefined;
    } else if (b === RBRACKET) {
      const raw = line.toString('latin1', open + 1, i);
      const nameEnd = raw.indexOf(' ');
      return { name: (nameEnd < 0 ? raw : raw.slice(0, nameEnd)).toUpperCase(), raw, start: open, end: i + 1 };
    }
  }
  return undefined;
}

/**
 * "tag status [code] text" read into its parts; undefined when the line is no status
 * response. Strings come back latin1 (one character per byte), so the caller can rebuild
 * the line's exact bytes; a string argument is read the same way, as the session hands
 * lines over (first.toString('latin1')).
 */
export function parseStatusLine(line: Buffer | string): StatusLine | undefined {
  const buf = typeof line === 'string' ? Buffer.from(line, 'latin1') : line;
  let end = buf.length;
  if (buf[end - 1] === LF) end--;
  if (buf[end - 1] === CR && end < buf.length) end--;
  const tagEnd = buf.indexOf(SP);
  if (tagEnd <= 0 || tagEnd >= end) return undefined;
  let statusEnd = buf.indexOf(SP, tagEnd + 1);
  if (statusEnd < 0 || statusEnd > end) statusEnd = end;
  const status = buf.toString('latin1', tagEnd + 1, statusEnd).toUpperCase();
  if (!isStatus(status)) return undefined;
  let textStart = Math.min(statusEnd + 1, end);
  const code = readResponseCode(buf, textStart, end);
  // resp-text puts SP after "]"; a server that leaves it out still has its text read.
  if (code !== undefined) textStart = buf[code.end] === SP ? code.end + 1 : code.end;
  const out: StatusLine = { tag: buf.toString('latin1', 0, tagEnd), status, text: buf.toString('latin1', textStart, end) };
  if (code !== undefined) out.code = code.raw;
  return out;
}

/**
 * A string parseStatusLine handed back (latin1, one character per byte) read as the UTF-8
 * it carries: the text and code to pass on to a client as the upstream sent them (non-ASCII
 * text comes as UTF-8 from today's servers, RFC 6855 §3), not encoded twice.
 */
export function sentText(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

function isStatus(word: string): word is UntaggedStatus {
  return STATUS_KINDS.has(word);
}

/** A tagged OK without a response code, given one (RFC 3501 §7.1); a line with a code, or not OK, is kept. */
export function withResponseCode(line: Buffer, code: string): Buffer {
  const status = parseStatusLine(line);
  if (status === undefined || status.tag === '*' || status.status !== 'OK' || status.code !== undefined) return line;
  const afterStatus = status.tag.length + ' OK'.length;
  return Buffer.concat([line.subarray(0, afterStatus), Buffer.from(` [${code}]`), line.subarray(afterStatus)]);
}
