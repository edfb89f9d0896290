/**
 * SMTP replies in both directions: formatting the gateway's own replies to clients
 * (RFC 5321 §4.2, RFC 2034 enhanced status codes) and reading the upstream MTA's.
 */

/** RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the code and CRLF. */
const MAX_REPLY_LINE = 512;
/** Bytes that would break a reply line, or its framing, in free text. */
const LINE_BREAKERS = /[\r\n\0]+/g;

/** Some clients mis-parse a reply without text, so an empty one gets a word for its class. */
function fallbackText(code: number): string {
  if (code < 300) return 'Ok';
  if (code < 400) return 'Continue';
  if (code < 500) return 'Temporary failure';
  return 'Failed';
}

/** Cuts s so that it fits in `bytes` octets of UTF-8 without splitting a character. */
function fitBytes(s: string, bytes: number): string {
  if (Buffer.byteLength(s) <= bytes) return s;
  let out = '';
  let used = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (used + n > bytes) break;
    out += ch;
    used += n;
  }
  return out;
}

function formatLines(code: number, prefix: string, texts: string[]): string {
  const head = String(code);
  let out = '';
  texts.forEach((text, i) => {
    const sep = i === texts.length - 1 ? ' ' : '-';
    const start = `${head}${sep}${prefix}`;
    out += `${start}${fitBytes(text, MAX_REPLY_LINE - Buffer.byteLength(start) - 2)}\r\n`;
  });
  return out;
}

function sanitize(text: string): string {
  return text.replace(LINE_BREAKERS, ' ');
}

/**
 * A reply the gateway gives in its own name: RFC 5321 §4.2 reply code, RFC 3463 enhanced
 * status code (left out only where RFC 2034 §3 has none: the greeting, HELO, 354), text.
 * The named ones are in replies.ts.
 */
export interface Reply {
  readonly code: number;
  readonly enhanced?: string;
  readonly text: string;
}

/** A reply with its enhanced status code, as every refusal has (RFC 2034 §4). */
export interface CodedReply extends Reply {
  readonly enhanced: string;
}

/**
 * A reply, multi-line when text is an array of several lines (RFC 5321 §4.2.1: "code-"
 * on every line but the last). The enhanced code goes on every line (RFC 2034 §4).
 */
export function reply(code: number, enhanced: string | undefined, text: string | readonly string[]): string {
  const lines = (typeof text === 'string' ? [text] : text).map(sanitize);
  if (lines.length === 0) lines.push('');
  const texts = lines.map((l) => (l.trim() === '' ? fallbackText(code) : l));
  return formatLines(code, enhanced === undefined ? '' : `${enhanced} `, texts);
}

/** A named reply in the form the MTA's replies take (ParsedReply), for what stands in for the MTA. */
export function asParsedReply(r: Reply): ParsedReply {
  return { code: r.code, ...(r.enhanced !== undefined ? { enhanced: r.enhanced } : {}), lines: [r.text] };
}

/** The wire form of a named reply (replies.ts). */
export function formatReply(r: Reply): string {
  return reply(r.code, r.enhanced, r.text);
}

/**
 * A SASL challenge (RFC 4954 §4): "334" SP base64, where an empty challenge stays empty
 * (a client reads "334 " as "send your response"), so no fallback text and no enhanced code.
 */
export function challenge(base64: string): string {
  return formatLines(334, '', [sanitize(base64)]);
}

/**
 * The EHLO reply (RFC 5321 §4.1.1.1): greeting line "domain [text]", then one keyword
 * per line. No enhanced codes: RFC 2034 §3 enables them only after EHLO, and clients
 * parse the keyword lines as "code SP/- keyword".
 */
export function ehloReply(domain: string, greetingText: string, keywords: string[]): string {
  const greeting = sanitize(greetingText).trim();
  const first = greeting === '' ? sanitize(domain) : `${sanitize(domain)} ${greeting}`;
  return formatLines(250, '', [first, ...keywords.map(sanitize)]);
}

export interface ParsedReply {
  code: number;
  /** The "class.subject.detail" code of the first line, when it has one (RFC 3463 §2). */
  enhanced?: string;
  /** Text after the code (and after the enhanced code, when there is one), one per line. */
  lines: string[];
}

export class ReplyParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReplyParseError';
  }
}

const MAX_UPSTREAM_LINE = 4096;
const MAX_UPSTREAM_LINES = 100;
const LF = 0x0a;
const CR = 0x0d;
/** RFC 3463 §2: class "." subject (1-3 digits) "." detail (1-3 digits), then SP or end. */
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/;

/**
 * Reads replies from the upstream MTA, assembling multi-line ones (RFC 5321 §4.2.1).
 * Bounded: a line over 4 KiB or a reply over 100 lines throws ReplyParseError, as does
 * anything that is not a reply line. After a throw the reader is in no defined state and
 * the connection must be closed: with the framing lost, no later reply can be trusted.
 */
export class ReplyReader {
  private parts: Buffer[] = [];
  private partLength = 0;
  private pending: { code: number; lines: string[] } | undefined;

  /** Octets read but not yet part of a complete reply (a partial line or reply). */
  get buffered(): number {
    return this.partLength + (this.pending === undefined ? 0 : 1);
  }

  push(chunk: Buffer): ParsedReply[] {
    const out: ParsedReply[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      const lf = chunk.indexOf(LF, pos);
      if (lf === -1) {
        this.partLength += chunk.length - pos;
        if (this.partLength > MAX_UPSTREAM_LINE) throw new ReplyParseError('Reply line too long');
        this.parts.push(Buffer.from(chunk.subarray(pos)));
        break;
      }
      if (this.partLength + lf + 1 - pos > MAX_UPSTREAM_LINE) throw new ReplyParseError('Reply line too long');
      let line = chunk.subarray(pos, lf);
      if (this.parts.length > 0) {
        this.parts.push(line);
        line = Buffer.concat(this.parts);
        this.parts = [];
        this.partLength = 0;
      }
      pos = lf + 1;
      const end = line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length;
      const done = this.line(line.toString('utf8', 0, end));
      if (done !== undefined) out.push(done);
    }
    return out;
  }

  private line(text: string): ParsedReply | undefined {
    // RFC 5321 §4.2: Reply-code [ ("-" / SP) textstring ]; a bare code ends a reply.
    const m = /^([2-5]\d\d)([ -]|$)/.exec(text);
    if (m === null) throw new ReplyParseError('Malformed reply line');
    const code = Number(m[1]);
    const more = m[2] === '-';
    const rest = text.slice(4);
    if (this.pending === undefined) this.pending = { code, lines: [] };
    else if (this.pending.code !== code) throw new ReplyParseError('Reply code changed within a multi-line reply');
    this.pending.lines.push(rest);
    if (this.pending.lines.length > MAX_UPSTREAM_LINES) throw new ReplyParseError('Reply has too many lines');
    if (more) return undefined;
    const { lines } = this.pending;
    this.pending = undefined;
    return splitEnhanced(code, lines);
  }
}

/**
 * Takes the enhanced code off the first line and off any later line that repeats it
 * (RFC 2034 §4 puts it on every line). A code whose class differs from the reply's is
 * not an enhanced code (RFC 3463 §2 ties them) and stays in the text.
 */
function splitEnhanced(code: number, lines: string[]): ParsedReply {
  const m = ENHANCED.exec(lines[0] as string);
  if (m === null || Number(m[1]) !== Math.floor(code / 100)) return { code, lines };
  const enhanced = `${m[1]}.${m[2]}.${m[3]}`;
  const strip = (l: string) => (l === enhanced ? '' : l.startsWith(`${enhanced} `) ? l.slice(enhanced.length + 1) : l);
  return { code, enhanced, lines: lines.map(strip) };
}
