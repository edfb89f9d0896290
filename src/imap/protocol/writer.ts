/**
 * Formatting for the wire: strings (RFC 3501 §4.3, §9 quoted / literal), and tagged,
 * untagged and continuation responses (RFC 3501 §7, §7.1, §7.5), each ending in CRLF.
 */
import { percentEncoded } from './url.js';

/** Longest string sent quoted; longer ones go as literals. */
const MAX_QUOTED = 1000;

/** RFC 3501 §9 QUOTED-CHAR, unescaped: any 7-bit CHAR except CR and LF (and NUL, which CHAR excludes). */
const QUOTABLE = /^[\x01-\x09\x0b\x0c\x0e-\x7f]*$/;
/** RFC 3501 §9 ATOM-CHAR: no atom-specials ( ) { SP CTL % * " \ ]. */
const ATOM = /^[^\x00-\x20\x7f-\uffff(){%*"\\\]]+$/;
/** Bytes that would break a response line, or its framing, in free text. */
const LINE_BREAKERS = /[\r\n\0]/g;

/** True when s can be sent as a quoted string: 7-bit, no CR/LF/NUL, not too long. */
export function isQuotable(s: string): boolean {
  return s.length <= MAX_QUOTED && QUOTABLE.test(s);
}

/** A quoted string with quoted-specials (" and \) escaped; callers check isQuotable first. */
export function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

export interface QuoteOptions {
  /**
   * Use a non-synchronizing literal `{n+}` (RFC 7888 §3) when a literal is needed: for
   * commands to a server that advertises LITERAL+ (or LITERAL- and n <= 4096). The
   * default `{n}` is right for responses, where a server never waits for the client.
   */
  nonSync?: boolean;
}

/**
 * An IMAP string for s: quoted when it can be, else a literal `{n}\r\n` + the bytes (for
 * CR/LF/NUL, 8-bit characters, or more than 1000 characters).
 *
 * The result is meant to be written as UTF-8 (what socket.write(string) does): n counts
 * UTF-8 bytes. A Buffer argument is decoded as UTF-8 first; bytes that are not valid
 * UTF-8 become U+FFFD, so the framing stays right but the data changes. For exact bytes
 * use encodeString, which returns a Buffer.
 */
export function quoteString(s: string | Buffer, options: QuoteOptions = {}): string {
  const text = typeof s === 'string' ? s : s.toString('utf8');
  if (isQuotable(text)) return quoted(text);
  return `${literalPrefix(Buffer.byteLength(text, 'utf8'), options)}${text}`;
}

/** Like quoteString, but exact bytes in and out (a string argument is taken as UTF-8). */
export function encodeString(s: string | Buffer, options: QuoteOptions = {}): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  if (bytes.length <= MAX_QUOTED && isQuotableBytes(bytes)) return Buffer.from(quoted(bytes.toString('latin1')), 'latin1');
  return Buffer.concat([Buffer.from(literalPrefix(bytes.length, options), 'latin1'), bytes]);
}

function isQuotableBytes(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0 || c === 0x0a || c === 0x0d || c > 0x7f) return false;
  }
  return true;
}

function literalPrefix(n: number, options: QuoteOptions): string {
  return `{${n}${options.nonSync ? '+' : ''}}\r\n`;
}

/** One piece of a command the gateway sends: text as-is, or a string sent as a literal (RFC 3501 §4.3). */
export type CommandPart = string | { literal: Buffer };

/** An astring argument (RFC 3501 §9) of a command the gateway sends: quoted when it can be, else a literal. */
export function astringParts(s: string): CommandPart[] {
  return isQuotable(s) ? [quoted(s)] : [{ literal: Buffer.from(s, 'utf8') }];
}

/**
 * An astring (RFC 3501 §9): s itself when it is a valid atom (and not "NIL", which would
 * read as nil, nor over 1000 characters), else quoteString(s). For mailbox names, user
 * names and the like.
 */
export function astring(s: string, options: QuoteOptions = {}): string {
  return s.length <= MAX_QUOTED && ATOM.test(s) && s.toUpperCase() !== 'NIL' ? s : quoteString(s, options);
}

/** Free text made safe for one response line: CR, LF and NUL become spaces. */
export function sanitizeText(text: string): string {
  return text.replace(LINE_BREAKERS, ' ');
}

/** RFC 4469 §6 url-resp-text = 1*(%x01-09 / %x0B-0C / %x0E-5B / %x5D-FE): no NUL, LF, CR or "]". */
const NOT_URL_RESP_CHAR = /[\x00\x0a\x0d\x5d]/g;
/** Longest URL echoed in a BADURL code: RFC 4469 sets no bound, a response line needs one. */
const MAX_BADURL_TEXT = 1000;

/**
 * The BADURL response code (RFC 4469 §6) naming a URL the command could not use: the URL
 * as the client sent it, with the characters url-resp-text excludes percent-encoded (RFC
 * 3986 §2.1), so the client can still match it to the URL it sent. Codes go out as UTF-8,
 * whose bytes are never 0xFF, so NUL, LF, CR and "]" are all there is to encode.
 * url-resp-text has at least one character: an empty URL is named as it was on the wire, "".
 */
export function badUrlCode(url: string): string {
  const text = url.replace(NOT_URL_RESP_CHAR, (c) => percentEncoded(c.charCodeAt(0))).slice(0, MAX_BADURL_TEXT);
  return `BADURL ${text === '' ? '""' : text}`;
}

export type TaggedStatus = 'OK' | 'NO' | 'BAD';
export type UntaggedStatus = 'OK' | 'NO' | 'BAD' | 'BYE' | 'PREAUTH';

const DEFAULT_TEXT: Record<string, string> = { OK: 'done', NO: 'failed', BAD: 'error', BYE: 'closing', PREAUTH: 'ready' };

/** "[code] text", or "text" (RFC 3501 §9 resp-text). An empty text gets a word, as text is 1*TEXT-CHAR. */
function respText(status: string, text: string, code: string | undefined): string {
  const body = sanitizeText(text) || DEFAULT_TEXT[status]!;
  return code === undefined || code === '' ? body : `[${sanitizeText(code)}] ${body}`;
}

/**
 * A tagged status response: `tag OK [code] text\r\n` (RFC 3501 §7.1, §9 response-tagged).
 * text and code are free text: CR/LF/NUL in them are replaced so they cannot end the line.
 * code is the content between the brackets, e.g. "TOOBIG" or "APPENDUID 38505 3955".
 */
export function tagged(tag: string, status: TaggedStatus, text: string, code?: string): Buffer {
  return Buffer.from(`${sanitizeText(tag)} ${status} ${respText(status, text, code)}\r\n`, 'utf8');
}

/**
 * An untagged response: `* text\r\n` (RFC 3501 §7). text is written as given (UTF-8)
 * and may hold literals from quoteString, so it is NOT sanitized: build it from
 * quoteString/astring/atoms, never from raw client input. See untaggedStatus for free text.
 */
export function untagged(text: string | Buffer): Buffer {
  const body = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  return Buffer.concat([Buffer.from('* ', 'latin1'), body, Buffer.from('\r\n', 'latin1')]);
}

/**
 * The start of an untagged response whose last item is a literal streamed after it:
 * `* text {size}\r\n` (RFC 3501 §4.3); the literal's bytes and then responseEnd() follow.
 * text is written as given, like untagged().
 */
export function untaggedLiteralStart(text: string, size: number): Buffer {
  return Buffer.from(`* ${text} {${size}}\r\n`, 'utf8');
}

/** The CRLF that ends a response after a streamed literal. */
export function responseEnd(): Buffer {
  return Buffer.from('\r\n', 'latin1');
}

/** An untagged status response, `* OK [code] text\r\n`, with free text sanitized like tagged(). */
export function untaggedStatus(status: UntaggedStatus, text: string, code?: string): Buffer {
  return Buffer.from(`* ${status} ${respText(status, text, code)}\r\n`, 'utf8');
}

/**
 * A command continuation request: `+ text\r\n` (RFC 3501 §7.5 continue-req = "+" SP
 * (resp-text / base64) CRLF). An empty text gives "+ \r\n", the form of an empty SASL
 * challenge. CR/LF/NUL in text are replaced.
 */
export function continuation(text = ''): Buffer {
  return Buffer.from(`+ ${sanitizeText(text)}\r\n`, 'utf8');
}

/** A command's bytes cut at its literals: text to send as is, and literal contents that wait for "+". */
export type CommandPiece = { text: Buffer } | { literal: Buffer; binary: boolean };

/**
 * Cuts a command (as formatValues or quoteString made it, with `{n}`, `{n+}` or `~{n}`
 * literals) into its text and its literals, so the sender can announce each literal
 * synchronizing and send its bytes only after the server's "+" (RFC 3501 §7.5). A literal
 * announcement can only end a line (its CRLF can be in no quoted string), and a literal's
 * bytes are skipped by their count, so whatever they hold is never taken for one.
 */
export function splitAtLiterals(command: Buffer): CommandPiece[] {
  const pieces: CommandPiece[] = [];
  const announcement = /(~?)\{(\d{1,10})\+?\}\r\n/g;
  const text = command.toString('latin1');
  let from = 0;
  for (;;) {
    announcement.lastIndex = from;
    const m = announcement.exec(text);
    if (m === null) break;
    const size = Number(m[2]);
    const dataStart = m.index + m[0].length;
    if (dataStart + size > command.length) break; // not a whole literal: left as text
    pieces.push({ text: command.subarray(from, m.index) });
    pieces.push({ literal: command.subarray(dataStart, dataStart + size), binary: m[1] === '~' });
    from = dataStart + size;
  }
  pieces.push({ text: command.subarray(from) });
  return pieces;
}
