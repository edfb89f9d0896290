/**
 * The streaming reader for the client side of a submission session: it turns the byte
 * stream into command lines, DATA message text and BDAT chunks, and nothing more. What a
 * command means is parser.ts's job, and what to answer is the session's.
 *
 * Modes:
 *
 *   - Command mode (the default): a line ends in CRLF; a bare LF is accepted as a line end
 *     too, because some clients and scripts send it and refusing it buys nothing in a
 *     command line. A line longer than maxCommandLine (counting its line end) is dropped
 *     up to the next LF and reported once, when that LF arrives, so the session's 500
 *     comes in the place of the dropped command among pipelined replies (RFC 2920 §3.1).
 *   - DATA mode, entered only when the session calls expectData() after sending 354: the
 *     content runs until CRLF "." CRLF (RFC 5321 §4.1.1.4). Only a CRLF ends a line there:
 *     a bare LF is message content and goes through unchanged, and "\n.\r\n" does not end
 *     the message (RFC 5321 §4.1.1.4 names the sequence, and §2.3.8 forbids bare LF in
 *     content, so a bare LF can only be content the client meant literally).
 *   - Chunk mode (RFC 3030 §2, §4.2): a client may pipeline "BDAT n" and the n raw bytes
 *     right behind it, without waiting for any reply. So the reader must see the BDAT line
 *     itself and switch to reading n bytes immediately after emitting it; waiting for the
 *     session would make it read binary content as commands. A BDAT line that does not
 *     parse is emitted as an ordinary command and the reader stays in command mode: the
 *     chunk's end cannot be known, so the session answers 501 and closes the connection.
 *
 * DATA content (RFC 5321 §4.5.2): the leading "." of every line that starts with one is
 * removed, the end-of-data line is not part of the content, and the last line's CRLF is:
 * 'data' events carry the message exactly as it would travel in BDAT chunks. A message
 * sent as just "." after 354 is empty (no 'data' events). Text line lengths are counted
 * after un-stuffing, per RFC 5321 §4.5.3.1.6 (1000 octets including CRLF, not counting a
 * stuffed dot); an over-long line is only flagged on 'data-end', the content still flows,
 * so the session can refuse the message at its end with the connection still in step.
 * For that count any LF ends a line, so a message with bare-LF line ends is not flagged
 * wholesale.
 *
 * Performance: DATA content is searched with Buffer#indexOf for LF (native), and each
 * byte is looked at in JavaScript only at line starts; the state needed to recognize a
 * terminator split across pushes ("\r" | "\n.\r\n", etc.) is a few flags, so nothing is
 * rescanned. DATA and BDAT content is handed out as subarray slices of the pushed chunk,
 * never copied (the only exception is a lone "\r" withheld after a line-start dot while
 * deciding whether it begins the terminator). The caller must therefore not modify a
 * chunk after pushing it while it keeps the events. A partial command line spanning
 * pushes is copied, bounded by maxCommandLine.
 */

import { parseBdatArgs, parseCommandLine } from './parser.js';

export interface SmtpReaderLimits {
  /** Longest command line accepted, in bytes including CRLF (RFC 5321 §4.5.3.1.4 minimum: 512). */
  maxCommandLine: number;
  /** Longest DATA text line before it is flagged, including CRLF (RFC 5321 §4.5.3.1.6: 1000). */
  maxTextLine: number;
}

export type SmtpEvent =
  /** One command line, line end stripped, decoded as UTF-8. */
  | { type: 'command'; line: string }
  /** A line exceeded maxCommandLine; it was discarded through its LF. */
  | { type: 'command-too-long' }
  /** DATA content, dot-unstuffed, CRLFs kept (slices of the input where possible). */
  | { type: 'data'; data: Buffer }
  /** The end-of-data line was read; lineTooLong: some text line exceeded maxTextLine. */
  | { type: 'data-end'; lineTooLong: boolean }
  /** BDAT chunk bytes exactly as sent (slices of the input). */
  | { type: 'chunk'; data: Buffer }
  /** The announced BDAT size has been read. */
  | { type: 'chunk-end' };

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CR_BUFFER = Buffer.from('\r');

const enum Mode {
  Command,
  Data,
  Chunk,
}

/** Where DATA reading stands relative to the start of a CRLF-delimited line. */
const enum DataPhase {
  /** The next byte starts a line. */
  LineStart,
  /** A line-start "." was read (and dropped: it is either stuffing or the terminator). */
  Dot,
  /** "." CR at line start was read; the CR is withheld until the next byte is known. */
  DotCr,
  /** Inside a line. */
  Mid,
}

export class SmtpReader {
  private mode = Mode.Command;

  // Command mode: the start of a line that spans pushes (copied), or discarding.
  private parts: Buffer[] = [];
  private partLength = 0;
  private discarding = false;

  // Data mode.
  private phase = DataPhase.LineStart;
  private lastWasCr = false;
  private lineLength = 0;
  private lineTooLong = false;

  // Chunk mode.
  private chunkRemaining = 0;

  constructor(private readonly limits: SmtpReaderLimits) {}

  /** Feeds bytes from the client; returns the events they complete, in order. */
  push(chunk: Buffer): SmtpEvent[] {
    const events: SmtpEvent[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.mode) {
        case Mode.Command:
          pos = this.readCommand(chunk, pos, events);
          break;
        case Mode.Data:
          pos = this.readData(chunk, pos, events);
          break;
        case Mode.Chunk:
          pos = this.readChunk(chunk, pos, events);
          break;
      }
    }
    return events;
  }

  /** After the session answered 354 to DATA: what follows is message text until CRLF.CRLF. */
  expectData(): void {
    // A partial line buffered now was sent before the 354, against RFC 2920 §3.1 (DATA
    // ends a pipelined group); it cannot be told apart from content, so it is dropped.
    this.clearCommand();
    this.mode = Mode.Data;
    // The DATA command's own CRLF precedes the content, so "." first is the terminator.
    this.phase = DataPhase.LineStart;
    this.lastWasCr = false;
    this.lineLength = 0;
    this.lineTooLong = false;
  }

  /** Back to command mode, dropping partial state (after STARTTLS, RFC 3207 §4.2). */
  reset(): void {
    this.mode = Mode.Command;
    this.clearCommand();
    this.chunkRemaining = 0;
    this.phase = DataPhase.LineStart;
    this.lastWasCr = false;
    this.lineLength = 0;
    this.lineTooLong = false;
  }

  private clearCommand(): void {
    this.parts = [];
    this.partLength = 0;
    this.discarding = false;
  }

  private readCommand(buf: Buffer, pos: number, events: SmtpEvent[]): number {
    const lf = buf.indexOf(LF, pos);
    if (lf === -1) {
      if (!this.discarding) {
        const length = this.partLength + buf.length - pos;
        // Even if the LF comes next, the line would be over the limit by then.
        if (length >= this.limits.maxCommandLine) {
          this.parts = [];
          this.partLength = 0;
          this.discarding = true;
        } else {
          // Copied so that a short tail does not pin a large socket chunk in memory.
          this.parts.push(Buffer.from(buf.subarray(pos)));
          this.partLength = length;
        }
      }
      return buf.length;
    }
    const next = lf + 1;
    if (this.discarding || this.partLength + next - pos > this.limits.maxCommandLine) {
      this.clearCommand();
      events.push({ type: 'command-too-long' });
      return next;
    }
    let line = buf.subarray(pos, lf);
    if (this.parts.length > 0) {
      this.parts.push(line);
      line = Buffer.concat(this.parts);
      this.clearCommand();
    }
    const end = line.length > 0 && line[line.length - 1] === CR ? line.length - 1 : line.length;
    const text = line.toString('utf8', 0, end);
    events.push({ type: 'command', line: text });
    const bdat = recognizeBdat(text);
    if (bdat !== undefined && bdat > 0) {
      this.mode = Mode.Chunk;
      this.chunkRemaining = bdat;
    }
    return next;
  }

  private readChunk(buf: Buffer, pos: number, events: SmtpEvent[]): number {
    const take = Math.min(this.chunkRemaining, buf.length - pos);
    events.push({ type: 'chunk', data: buf.subarray(pos, pos + take) });
    this.chunkRemaining -= take;
    if (this.chunkRemaining === 0) {
      events.push({ type: 'chunk-end' });
      this.mode = Mode.Command;
    }
    return pos + take;
  }

  private readData(buf: Buffer, pos: number, events: SmtpEvent[]): number {
    const n = buf.length;
    let i = pos;
    /** Start of the content not yet emitted. */
    let from = pos;
    const flush = (to: number) => {
      if (to > from) events.push({ type: 'data', data: buf.subarray(from, to) });
    };
    while (i < n) {
      switch (this.phase) {
        case DataPhase.LineStart:
          if (buf[i] === DOT) {
            // RFC 5321 §4.5.2: a line-start "." is removed, whether it is stuffing or
            // the terminator, so it never needs to be emitted.
            flush(i);
            i++;
            from = i;
            this.phase = DataPhase.Dot;
          } else {
            this.phase = DataPhase.Mid;
          }
          break;
        case DataPhase.Dot:
          if (buf[i] === CR) {
            i++;
            from = i;
            this.phase = DataPhase.DotCr;
          } else {
            this.phase = DataPhase.Mid;
          }
          break;
        case DataPhase.DotCr:
          if (buf[i] === LF) {
            // The end-of-data line: the content ended with the CRLF before it.
            events.push({ type: 'data-end', lineTooLong: this.lineTooLong });
            this.mode = Mode.Command;
            this.phase = DataPhase.LineStart;
            this.lineLength = 0;
            this.lineTooLong = false;
            this.lastWasCr = false;
            return i + 1;
          }
          // ".\r" then something else: an ordinary line after all; the CR is content.
          events.push({ type: 'data', data: CR_BUFFER });
          this.lineLength += 1;
          this.lastWasCr = true;
          this.phase = DataPhase.Mid;
          break;
        case DataPhase.Mid: {
          const lf = buf.indexOf(LF, i);
          if (lf === -1) {
            this.lineLength += n - i;
            this.lastWasCr = buf[n - 1] === CR;
            i = n;
            break;
          }
          const crlf = lf > i ? buf[lf - 1] === CR : this.lastWasCr;
          this.lineLength += lf + 1 - i;
          if (this.lineLength > this.limits.maxTextLine) this.lineTooLong = true;
          this.lineLength = 0;
          this.lastWasCr = false;
          i = lf + 1;
          if (crlf) this.phase = DataPhase.LineStart;
          break;
        }
      }
    }
    flush(n);
    return n;
  }
}

/** The chunk size of a line the session will read as a valid BDAT command, else undefined. */
function recognizeBdat(line: string): number | undefined {
  // Cheap pre-check: almost every line is not BDAT.
  if (line.length < 6 || (line.charCodeAt(0) | 0x20) !== 0x62) return undefined;
  const cmd = parseCommandLine(line);
  if (cmd === undefined || cmd.verb !== 'BDAT') return undefined;
  return parseBdatArgs(cmd.args)?.size;
}
