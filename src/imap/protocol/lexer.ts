/**
 * The streaming IMAP lexer, used in both directions: client commands (the gateway as a
 * server) and upstream responses (the gateway as a client).
 *
 * It splits the byte stream into line segments and literals and nothing more. A command
 * or response is a line; when a line ends with a literal announcement (RFC 3501 §4.3
 * `{n}`, RFC 7888 `{n+}`, RFC 3516 `~{n}`), exactly n bytes follow and then the line
 * continues in a new segment. Literal bytes are handed out as slices of the input, never
 * copied or gathered, so a 50 MB APPEND or FETCH streams through in constant memory.
 */

export interface LexerLimits {
  /** Bytes allowed in one segment before its CRLF. */
  maxLineLength: number;
  /** Largest literal accepted. */
  maxLiteralSize: number;
}

export type LexEvent =
  /** Raw bytes of one segment, through its CRLF (including a literal announcement). */
  | { type: 'text'; data: Buffer }
  | { type: 'literal-start'; size: number; sync: boolean; binary: boolean }
  | { type: 'literal-data'; data: Buffer }
  | { type: 'literal-end' }
  /** The whole command or response is complete. */
  | { type: 'end' }
  | {
      type: 'error';
      code: 'line-too-long' | 'literal-too-large' | 'bad-literal';
      size?: number;
      sync?: boolean;
      /** The start of the offending segment, so the caller can find a tag to answer. */
      text: Buffer;
    };

/** More digits than this cannot be a literal size we accept (and must not overflow). */
const MAX_SIZE_DIGITS = 15;
const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** How much of an over-long line is kept for the error report. */
const ERROR_TEXT_BYTES = 256;

type State = 'line' | 'literal' | 'skip' | 'dead';

export class ImapLexer {
  private state: State = 'line';
  /** Pieces of the segment being read (a line may arrive in many chunks). */
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** Quoting state of the bytes scanned so far in this segment (RFC 3501 §4.3 quoted). */
  private inQuote = false;
  private escaped = false;
  private literalLeft = 0;

  constructor(private readonly limits: LexerLimits) {}

  reset(): void {
    this.state = 'line';
    this.parts = [];
    this.partsLength = 0;
    this.inQuote = false;
    this.escaped = false;
    this.literalLeft = 0;
  }

  /**
   * The caller refused a synchronizing literal (it answered BAD/NO instead of "+"), so the
   * peer will not send it: read what follows as a new command (RFC 3501 §7.5).
   */
  abortLiteral(): void {
    if (this.state === 'literal') this.reset();
  }

  push(chunk: Buffer): LexEvent[] {
    const events: LexEvent[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case 'dead':
          return events;
        case 'literal': {
          const take = Math.min(this.literalLeft, chunk.length - pos);
          events.push({ type: 'literal-data', data: chunk.subarray(pos, pos + take) });
          pos += take;
          this.literalLeft -= take;
          if (this.literalLeft === 0) {
            events.push({ type: 'literal-end' });
            this.state = 'line';
          }
          break;
        }
        case 'skip': {
          const nl = chunk.indexOf(LF, pos);
          if (nl < 0) return events;
          pos = nl + 1;
          this.reset();
          break;
        }
        case 'line':
          pos = this.scanLine(chunk, pos, events);
          break;
      }
    }
    return events;
  }

  /** Reads line bytes from pos; returns where it stopped. */
  private scanLine(chunk: Buffer, pos: number, events: LexEvent[]): number {
    let i = pos;
    const end = chunk.length;
    // Track quoting byte by byte: a "{5}" inside a quoted string is not a literal.
    let inQuote = this.inQuote;
    let escaped = this.escaped;
    for (; i < end; i++) {
      const b = chunk[i]!;
      if (b === LF) break;
      if (inQuote) {
        if (escaped) escaped = false;
        else if (b === BACKSLASH) escaped = true;
        else if (b === QUOTE) inQuote = false;
      } else if (b === QUOTE) {
        inQuote = true;
      }
    }
    this.inQuote = inQuote;
    this.escaped = escaped;
    const lineBytes = this.partsLength + (i - pos);
    if (i === end) {
      if (lineBytes > this.limits.maxLineLength) return this.overlong(chunk, pos, i, events);
      this.parts.push(chunk.subarray(pos, i));
      this.partsLength += i - pos;
      return i;
    }
    // A segment ends at LF (CRLF per RFC 3501 §2.2; a bare LF is accepted as well).
    const contentLength = lineBytes - (i > pos ? (chunk[i - 1] === CR ? 1 : 0) : this.lastPartEndsWithCr() ? 1 : 0);
    if (contentLength > this.limits.maxLineLength) return this.overlong(chunk, pos, i, events);
    const piece = chunk.subarray(pos, i + 1);
    const segment = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
    this.parts = [];
    this.partsLength = 0;
    const quoted = this.inQuote;
    this.inQuote = false;
    this.escaped = false;
    this.endSegment(segment, quoted, events);
    return i + 1;
  }

  private lastPartEndsWithCr(): boolean {
    const last = this.parts[this.parts.length - 1];
    return last !== undefined && last.length > 0 && last[last.length - 1] === CR;
  }

  private overlong(chunk: Buffer, pos: number, stop: number, events: LexEvent[]): number {
    const head = Buffer.concat([...this.parts, chunk.subarray(pos, Math.min(stop, pos + ERROR_TEXT_BYTES))]).subarray(
      0,
      ERROR_TEXT_BYTES,
    );
    events.push({ type: 'error', code: 'line-too-long', text: Buffer.from(head) });
    this.reset();
    this.state = 'skip';
    // Resume the scan for LF from where we stopped.
    return stop < chunk.length && chunk[stop] === LF ? this.finishSkip(stop) : stop;
  }

  private finishSkip(lfIndex: number): number {
    this.reset();
    return lfIndex + 1;
  }

  /** A complete segment: a literal announcement at its end, or the end of the command. */
  private endSegment(segment: Buffer, unbalancedQuote: boolean, events: LexEvent[]): void {
    const literal = unbalancedQuote ? undefined : parseAnnouncement(segment);
    if (literal === undefined) {
      events.push({ type: 'text', data: segment }, { type: 'end' });
      return;
    }
    if (literal.size > this.limits.maxLiteralSize) {
      events.push({
        type: 'error',
        code: 'literal-too-large',
        size: literal.size,
        sync: literal.sync,
        text: segment.subarray(0, ERROR_TEXT_BYTES),
      });
      // A synchronizing literal is not sent until we say "+": the next line is a new
      // command. A non-synchronizing one is already on its way and cannot be skipped
      // safely; the caller closes the connection (RFC 7888 §4).
      this.reset();
      if (!literal.sync) this.state = 'dead';
      return;
    }
    events.push({ type: 'text', data: segment }, { type: 'literal-start', ...literal });
    if (literal.size === 0) {
      events.push({ type: 'literal-end' });
      return;
    }
    this.state = 'literal';
    this.literalLeft = literal.size;
  }
}

/**
 * The literal announced at the end of a segment, if any:
 * `literal = "{" number ["+"] "}" CRLF` (RFC 3501 §9, RFC 7888 §8), `literal8 = "~{" ...` (RFC 3516 §4.2).
 */
export function parseAnnouncement(segment: Buffer): { size: number; sync: boolean; binary: boolean } | undefined {
  let end = segment.length;
  if (segment[end - 1] === LF) end--;
  if (segment[end - 1] === CR) end--;
  if (segment[end - 1] !== 0x7d /* } */) return undefined;
  let i = end - 2;
  let sync = true;
  if (segment[i] === 0x2b /* + */) {
    sync = false;
    i--;
  }
  const digitsEnd = i + 1;
  while (i >= 0 && segment[i]! >= 0x30 && segment[i]! <= 0x39) i--;
  const digits = digitsEnd - (i + 1);
  if (digits === 0 || segment[i] !== 0x7b /* { */) return undefined;
  const binary = i > 0 && segment[i - 1] === 0x7e; /* ~ */
  const size = digits > MAX_SIZE_DIGITS ? Number.POSITIVE_INFINITY : Number(segment.toString('latin1', i + 1, digitsEnd));
  return { size, sync, binary };
}
