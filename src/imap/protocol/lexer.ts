/**
 * The streaming IMAP lexer, used in both directions: client commands (the gateway as a
 * server) and upstream responses (the gateway as a client).
 *
 * It splits the byte stream into line segments and literals and nothing more; structure
 * is parser.ts's job, and only for the commands and responses the gateway must read.
 *
 * Framing (RFC 3501 §2.2, §4.3, §9; RFC 7888 §3, §8; RFC 3516 §5):
 *
 *   - A command or response is a line ending in CRLF. When the line ends (just before its
 *     CRLF) with a literal announcement `{n}`, `{n+}` (non-synchronizing, RFC 7888),
 *     `~{n}` or `~{n+}` (literal8, RFC 3516) that is not inside a quoted string, exactly
 *     n bytes of literal data follow and then the line continues in a new segment, which
 *     may announce another literal, until a segment ends with a plain CRLF.
 *   - Quoting is tracked with backslash escapes (RFC 3501 §9 `quoted`, `quoted-specials`),
 *     so `a SELECT "box {5}"` or an unterminated `"box {5}` announce nothing.
 *   - `{abc}`, `{}`, `{5} ` and the like are not announcements: the segment is plain text.
 *   - Leniency: a bare LF (without CR) is accepted as a line end, as most servers do; the
 *     'text' event then ends in "\n" alone. A CR not followed by LF is an ordinary byte.
 *
 * Events, per command/response: 'text' (the segment's raw bytes, through its CRLF), then
 * for an announced literal 'literal-start', any number of 'literal-data' slices and
 * 'literal-end', then the next 'text', ... and finally 'end'. Each command ends with
 * either 'end' or an 'error'; after an 'error' no more events of that command follow.
 *
 * Errors and recovery:
 *
 *   - 'line-too-long': a segment has more than maxLineLength bytes before its CRLF. One
 *     error is emitted (text = up to the first 200 bytes of the segment, copied, so the
 *     caller can guess a tag even when the segment is a continuation), then the rest of
 *     the command is dropped without events: the rest of that line, and, should the
 *     dropped line announce a non-synchronizing literal, its data and the following
 *     segments too, so a message body is never mistaken for commands. A dropped line
 *     announcing a synchronizing literal ends the command: the peer waits for a "+" it
 *     will not get. Lexing resumes fresh with the next command.
 *   - 'literal-too-large': an announced literal exceeds maxLiteralSize (a size with more
 *     than 15 significant digits is reported as Infinity, never overflowing). text = the
 *     announcing segment. For a synchronizing literal the client sends no data until it
 *     sees "+" (RFC 3501 §7.5), which the caller will not send, so the next line is read
 *     as a new command. For a non-synchronizing literal the data is already on its way
 *     and there is no way to find the next command: the lexer stops (every later push()
 *     returns no events until reset()) and the caller closes the connection, as RFC 7888
 *     §4 allows. If that happens while a command is being dropped after 'line-too-long',
 *     this second error is still emitted, so the caller knows to close.
 *   - 'bad-literal' is reserved: the lexer does not emit it today (bad announcements are
 *     text, oversized ones are 'literal-too-large').
 *
 * In the response direction (reading an upstream server) any error is fatal for the
 * connection: a server sends literal data without waiting, so "the peer will not send
 * it" does not hold there, and the caller must not keep reading after an error.
 *
 * Performance: literal data is handed out as subarray slices of the pushed chunk, never
 * copied, so a 50 MB FETCH or APPEND literal streams through in constant memory. A line
 * is found with Buffer#indexOf (native), and its bytes are looked at in JavaScript only
 * when it ends in "}" (to check quoting), so a line arriving in many small chunks costs
 * linear time. A segment wholly inside one chunk is emitted as a slice of that chunk; the
 * start of one spanning chunks is copied into a single owned buffer (at most
 * maxLineLength + 2 bytes), whatever the chunking. The caller must therefore not modify a
 * chunk after pushing it while it keeps the events.
 */

export interface LexerLimits {
  /** Bytes allowed in one segment before its CRLF. */
  maxLineLength: number;
  /** Largest literal accepted. */
  maxLiteralSize: number;
}

export type LexErrorCode = 'line-too-long' | 'literal-too-large' | 'bad-literal';

export type LexEvent =
  /**
   * Raw bytes of one segment exactly as received: up to and including a literal
   * announcement and its CRLF ("... {12}\r\n"), or up to and including the final CRLF.
   */
  | { type: 'text'; data: Buffer }
  /** Right after the 'text' that announced it. sync=false for {n+}/~{n+}; binary=true for ~{n}. */
  | { type: 'literal-start'; size: number; sync: boolean; binary: boolean }
  /** A slice of the input (zero-copy); a literal may come in many. */
  | { type: 'literal-data'; data: Buffer }
  | { type: 'literal-end' }
  /** The whole command/response (line, literals and continuation segments) is complete. */
  | { type: 'end' }
  | {
      type: 'error';
      code: LexErrorCode;
      /** literal-too-large: the announced size (Infinity when it has too many digits). */
      size?: number;
      /** literal-too-large: whether the literal was synchronizing. */
      sync?: boolean;
      /** The start of the offending segment, so the caller can find a tag to answer. */
      text: Buffer;
    };

export interface LiteralAnnouncement {
  size: number;
  sync: boolean;
  binary: boolean;
}

/** More significant digits than this cannot be a size we accept (and must not overflow). */
const MAX_SIZE_DIGITS = 15;
/** How much of an offending segment is kept for an error report. */
const ERROR_TEXT_BYTES = 200;

const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const PLUS = 0x2b;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const TILDE = 0x7e;

const EMPTY = Buffer.alloc(0);

// Announcement recognizer states for a line being dropped (see DropScanner).
const ANN_NONE = 0;
const ANN_OPEN = 1; // "{"
const ANN_DIGITS = 2; // "{1"...
const ANN_PLUS = 3; // "{12+"
const ANN_CLOSE = 4; // "{12}" or "{12+}"
const ANN_CLOSE_CR = 5; // "{12}\r"

/**
 * Incremental scanner for an over-long line that is being discarded: tracks quoting and
 * whether the bytes so far end with a literal announcement, without keeping the bytes.
 */
class DropScanner {
  inQuote = false;
  escaped = false;
  ann = ANN_NONE;
  digits = 0;
  size = 0;
  sync = true;

  clear(): void {
    this.inQuote = false;
    this.escaped = false;
    this.ann = ANN_NONE;
    this.digits = 0;
    this.size = 0;
    this.sync = true;
  }

  scan(buf: Buffer, start: number, end: number): void {
    let { inQuote, escaped, ann, digits, size, sync } = this;
    for (let i = start; i < end; i++) {
      const b = buf[i]!;
      if (inQuote) {
        if (escaped) escaped = false;
        else if (b === BACKSLASH) escaped = true;
        else if (b === QUOTE) inQuote = false;
        continue;
      }
      if (b === QUOTE) {
        inQuote = true;
        ann = ANN_NONE;
      } else if (b === LBRACE) {
        ann = ANN_OPEN;
        digits = 0;
        size = 0;
        sync = true;
      } else if (b >= DIGIT_0 && b <= DIGIT_9) {
        if (ann === ANN_OPEN || ann === ANN_DIGITS) {
          ann = ANN_DIGITS;
          if (size !== 0 || b !== DIGIT_0) {
            digits++;
            size = digits > MAX_SIZE_DIGITS ? Number.POSITIVE_INFINITY : size * 10 + (b - DIGIT_0);
          }
        } else {
          ann = ANN_NONE;
        }
      } else if (b === PLUS) {
        ann = ann === ANN_DIGITS ? ANN_PLUS : ANN_NONE;
      } else if (b === RBRACE) {
        if (ann === ANN_DIGITS || ann === ANN_PLUS) {
          sync = ann === ANN_DIGITS;
          ann = ANN_CLOSE;
        } else {
          ann = ANN_NONE;
        }
      } else if (b === CR) {
        ann = ann === ANN_CLOSE ? ANN_CLOSE_CR : ANN_NONE;
      } else {
        ann = ANN_NONE;
      }
    }
    Object.assign(this, { inQuote, escaped, ann, digits, size, sync });
  }

  /** The announcement that ends the scanned bytes, if any (binary-ness is irrelevant when dropping). */
  announcement(): LiteralAnnouncement | undefined {
    if (this.ann !== ANN_CLOSE && this.ann !== ANN_CLOSE_CR) return undefined;
    return { size: this.size, sync: this.sync, binary: false };
  }
}

type State = 'line' | 'literal' | 'echo' | 'dead';

/**
 * Response direction only: given a finished segment, -1 when it is finished indeed, or
 * how many bytes (0 or more) belong to it raw, line breaks and all, before it runs on to
 * its line end. See echo.ts (an upstream echoing a literal).
 */
export type EchoCheck = (segment: Buffer) => number;

export class ImapLexer {
  private readonly maxLine: number;
  private readonly maxLiteral: number;
  private state: State = 'line';
  /**
   * The start of a segment that spans chunks, copied into one owned buffer (grown by
   * doubling, at most maxLineLength + 2 bytes), so neither the input chunks nor one object
   * per tiny chunk are kept. Handed off with the 'text' event and replaced.
   */
  private line: Buffer | undefined;
  private lineLength = 0;
  /** Literal bytes still expected. */
  private literalLeft = 0;
  /** Echoed bytes still to be taken into the current segment (state 'echo'). */
  private echoLeft = 0;
  /** The rest of the current command is being dropped after an error: no events until it ends. */
  private dropping = false;
  /** The current segment is over-long and being discarded up to its LF. */
  private discarding = false;
  private readonly drop = new DropScanner();

  constructor(
    limits: LexerLimits,
    private readonly echoCheck?: EchoCheck,
  ) {
    this.maxLine = limits.maxLineLength;
    this.maxLiteral = limits.maxLiteralSize;
  }

  /** Forget everything, including a stop after a too-large non-synchronizing literal. */
  reset(): void {
    this.state = 'line';
    this.line = undefined;
    this.lineLength = 0;
    this.literalLeft = 0;
    this.echoLeft = 0;
    this.dropping = false;
    this.discarding = false;
    this.drop.clear();
  }

  /**
   * The caller refused a synchronizing literal (answered BAD/NO instead of "+"), so the
   * peer will not send it: read what follows as a new command (RFC 3501 §7.5). Call it
   * right after the 'literal-start', before any of its data was pushed.
   */
  abortLiteral(): void {
    if (this.state === 'literal') this.reset();
  }

  /** True after a too-large non-synchronizing literal: nothing more is read until reset(). */
  get stopped(): boolean {
    return this.state === 'dead';
  }

  push(chunk: Buffer): LexEvent[] {
    const events: LexEvent[] = [];
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      if (this.state === 'literal') {
        const take = Math.min(this.literalLeft, n - pos);
        if (!this.dropping) events.push({ type: 'literal-data', data: chunk.subarray(pos, pos + take) });
        pos += take;
        this.literalLeft -= take;
        if (this.literalLeft === 0) {
          if (!this.dropping) events.push({ type: 'literal-end' });
          this.state = 'line';
        }
      } else if (this.state === 'echo') {
        pos = this.readEcho(chunk, pos, events);
      } else if (this.state === 'dead') {
        break;
      } else if (this.discarding) {
        pos = this.discardLine(chunk, pos, events);
      } else {
        pos = this.readLine(chunk, pos, events);
      }
    }
    return events;
  }

  /** Reads segment bytes from pos; returns where it stopped. */
  private readLine(chunk: Buffer, pos: number, events: LexEvent[]): number {
    const lf = chunk.indexOf(LF, pos);
    if (lf < 0) {
      // No line end yet. Keep at most maxLineLength + 1 bytes (the extra one may be the CR).
      if (this.lineLength + (chunk.length - pos) > this.maxLine + 1) return this.startDiscard(chunk, pos, chunk.length, events);
      this.append(chunk, pos, chunk.length);
      return chunk.length;
    }
    // A segment ends at LF: CRLF per RFC 3501 §2.2, a bare LF leniently.
    const before = this.lineLength + (lf - pos);
    const crBeforeLf = lf > pos ? chunk[lf - 1] === CR : this.lineLength > 0 && this.line![this.lineLength - 1] === CR;
    if (before - (crBeforeLf ? 1 : 0) > this.maxLine) return this.startDiscard(chunk, pos, lf, events);
    let segment: Buffer;
    if (this.lineLength === 0) {
      segment = chunk.subarray(pos, lf + 1); // the common case: zero-copy
    } else {
      this.append(chunk, pos, lf + 1);
      segment = this.line!.subarray(0, this.lineLength);
    }
    const echoed = this.echoCheck?.(segment) ?? -1;
    if (echoed >= 0) {
      // The line break was inside an echoed literal: the segment goes on.
      if (this.lineLength === 0) this.append(chunk, pos, lf + 1);
      if (echoed > 0) {
        this.state = 'echo';
        this.echoLeft = echoed;
      }
      return lf + 1;
    }
    this.line = undefined;
    this.lineLength = 0;
    this.endSegment(segment, parseAnnouncement(segment), events);
    return lf + 1;
  }

  /** Echoed bytes, taken into the segment whatever they hold; then the segment runs to its line end. */
  private readEcho(chunk: Buffer, pos: number, events: LexEvent[]): number {
    const take = Math.min(this.echoLeft, chunk.length - pos);
    if (this.lineLength + take > this.maxLine) {
      this.state = 'line';
      this.echoLeft = 0;
      return this.startDiscard(chunk, pos, pos + take, events);
    }
    this.append(chunk, pos, pos + take);
    this.echoLeft -= take;
    if (this.echoLeft === 0) this.state = 'line';
    return pos + take;
  }

  private append(chunk: Buffer, start: number, end: number): void {
    const need = this.lineLength + (end - start);
    if (this.line === undefined || this.line.length < need) {
      const size = Math.min(Math.max(need, 256, (this.line?.length ?? 0) * 2), this.maxLine + 2);
      const grown = Buffer.allocUnsafe(Math.max(size, need));
      if (this.line !== undefined) this.line.copy(grown, 0, 0, this.lineLength);
      this.line = grown;
    }
    chunk.copy(this.line, this.lineLength, start, end);
    this.lineLength = need;
  }

  /**
   * The segment is over-long: report it once, then drop the rest of the command. The
   * bytes kept so far plus chunk[pos, stop) are the segment's start.
   */
  private startDiscard(chunk: Buffer, pos: number, stop: number, events: LexEvent[]): number {
    const kept = this.line === undefined ? EMPTY : this.line.subarray(0, this.lineLength);
    const head = Buffer.allocUnsafe(Math.min(ERROR_TEXT_BYTES, kept.length + (stop - pos)));
    const fromKept = kept.copy(head, 0, 0, Math.min(kept.length, head.length));
    chunk.copy(head, fromKept, pos, pos + (head.length - fromKept));
    if (!this.dropping) events.push({ type: 'error', code: 'line-too-long', text: head });
    this.drop.clear();
    this.drop.scan(kept, 0, kept.length);
    this.drop.scan(chunk, pos, stop);
    this.line = undefined;
    this.lineLength = 0;
    this.discarding = true;
    this.dropping = true;
    return stop;
  }

  /** Skips the rest of an over-long segment, watching for a literal announcement at its end. */
  private discardLine(chunk: Buffer, pos: number, events: LexEvent[]): number {
    const lf = chunk.indexOf(LF, pos);
    const stop = lf < 0 ? chunk.length : lf;
    this.drop.scan(chunk, pos, stop);
    if (lf < 0) return stop;
    this.discarding = false;
    this.endSegment(EMPTY, this.drop.announcement(), events);
    return lf + 1;
  }

  /** A complete segment: it announces a literal, or it ends the command. */
  private endSegment(segment: Buffer, literal: LiteralAnnouncement | undefined, events: LexEvent[]): void {
    if (literal === undefined) {
      if (!this.dropping) events.push({ type: 'text', data: segment }, { type: 'end' });
      this.dropping = false;
      return;
    }
    if (literal.size > this.maxLiteral) {
      // Emitted even while dropping when non-synchronizing: the caller must learn to close.
      if (!this.dropping || !literal.sync) {
        events.push({
          type: 'error',
          code: 'literal-too-large',
          size: literal.size,
          sync: literal.sync,
          text: Buffer.from(segment.subarray(0, ERROR_TEXT_BYTES)),
        });
      }
      this.dropping = false;
      // Synchronizing: no data comes before "+", the next line is a new command. Non-
      // synchronizing: the data is on its way and cannot be skipped safely (RFC 7888 §4).
      if (!literal.sync) this.state = 'dead';
      return;
    }
    if (this.dropping) {
      // A dropped command: a synchronizing literal will not come (no "+" is sent), so the
      // command is over; a non-synchronizing one is skipped with the rest of the command.
      if (literal.sync) {
        this.dropping = false;
        return;
      }
    } else {
      events.push({ type: 'text', data: segment }, { type: 'literal-start', ...literal });
    }
    if (literal.size === 0) {
      if (!this.dropping) events.push({ type: 'literal-end' });
      return;
    }
    this.state = 'literal';
    this.literalLeft = literal.size;
  }
}

/**
 * The literal announced at the end of a segment (its CRLF or LF optional), if any:
 * `literal = "{" number ["+"] "}" CRLF` (RFC 3501 §9, RFC 7888 §8) and
 * `literal8 = "~{" number ["+"] "}" CRLF` (RFC 3516 §5, RFC 7888 §8), not inside a quoted
 * string. Leading zeros are allowed; more than 15 significant digits give size Infinity.
 */
export function parseAnnouncement(segment: Buffer): LiteralAnnouncement | undefined {
  let end = segment.length;
  if (segment[end - 1] === LF) end--;
  if (segment[end - 1] === CR) end--;
  if (end < 3 || segment[end - 1] !== RBRACE) return undefined;
  let i = end - 2;
  let sync = true;
  if (segment[i] === PLUS) {
    sync = false;
    i--;
  }
  const digitsEnd = i + 1;
  while (i >= 0 && segment[i]! >= DIGIT_0 && segment[i]! <= DIGIT_9) i--;
  const open = i;
  if (digitsEnd - (open + 1) === 0 || segment[open] !== LBRACE) return undefined;
  if (quotedAt(segment, open)) return undefined;
  let first = open + 1;
  while (first < digitsEnd - 1 && segment[first] === DIGIT_0) first++;
  const size =
    digitsEnd - first > MAX_SIZE_DIGITS ? Number.POSITIVE_INFINITY : Number(segment.toString('latin1', first, digitsEnd));
  return { size, sync, binary: open > 0 && segment[open - 1] === TILDE };
}

/**
 * The index of the quote closing the quoted string that opens at `open` (RFC 3501 §9
 * quoted, with \" and \\ escapes), or -1 if it does not close before `end`.
 */
export function quotedStringEnd(line: Buffer, open: number, end: number): number {
  for (let i = open + 1; i < end; i++) {
    const b = line[i]!;
    if (b === BACKSLASH) i++;
    else if (b === QUOTE) return i;
  }
  return -1;
}

/** Whether byte `index` of a line lies inside a quoted string. */
function quotedAt(line: Buffer, index: number): boolean {
  let pos = 0;
  while (true) {
    // Outside quotes only a quote matters: jump to the next one.
    const open = line.indexOf(QUOTE, pos);
    if (open < 0 || open >= index) return false;
    const close = quotedStringEnd(line, open, index);
    if (close < 0) return true;
    pos = close + 1;
  }
}

/**
 * What in a command segment a relay must not pass on, because servers frame it in
 * different ways: a "{" that opens no literal announcement ending the segment (see
 * strayBrace), or a quoted string still open at the segment's end (RFC 3501 §9: a
 * quoted string holds no CR or LF; Dovecot, after rejecting such a line, takes parts of
 * it for new commands). Undefined when the segment is well framed.
 */
export function framingFault(segment: Buffer): 'brace' | 'quote' | undefined {
  let end = segment.length;
  if (segment[end - 1] === LF) end--;
  if (segment[end - 1] === CR) end--;
  if (quotedAt(segment, end)) return 'quote';
  return strayBrace(segment) ? 'brace' : undefined;
}

/**
 * Whether a command segment holds a "{" outside quoted strings that does not open the
 * literal announcement ending it (`{}`, `{+}`, `{abc}`, `a{b`). RFC 3501 §9 makes "{" an
 * atom-special: in a command it only starts a literal. Servers frame such bytes
 * differently (Dovecot takes `{}` at a line's end for an empty literal and waits for the
 * rest of the command), so a relay that passed them on would no longer agree with the
 * upstream on where commands end.
 */
function strayBrace(segment: Buffer): boolean {
  const announcement = parseAnnouncement(segment);
  let end = segment.length;
  if (announcement !== undefined) {
    // The announcement's own "{" (and "~") is allowed: look only before it.
    end = segment.lastIndexOf(LBRACE, end - 1);
  }
  for (let i = segment.indexOf(LBRACE); i >= 0 && i < end; i = segment.indexOf(LBRACE, i + 1)) {
    if (!quotedAt(segment, i)) return true;
  }
  return false;
}
