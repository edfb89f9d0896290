/**
 * Literals an upstream may echo inside a response line.
 *
 * Dovecot 2.3 quotes some arguments back in its error text verbatim, literals included:
 * `a SEARCH CHARSET UTF-8 {n}` with a string where a search key belongs is answered
 * `a BAD Error in IMAP command SEARCH: Unexpected string as search key: <the literal>`,
 * CR and LF included. Read as lines, the literal's second and later lines look like
 * responses of their own: a client could write `* 3 EXPUNGE` or another command's tag
 * there and have the gateway take it as the upstream's word (the emulations record
 * expunges for every session of the user). So each literal sent upstream that holds a
 * line break is remembered with its command's tag; when that tag's response line ends
 * exactly where the literal's first line ends, the rest of the literal is read as part
 * of that one line (ImapLexer's echo check), and the line reaches the client with its
 * line breaks turned into spaces (flattenLine).
 */
import { randomBytes } from 'node:crypto';

/** How much of the literal's first line is kept to recognize its end in a response. */
const HEAD_TAIL_BYTES = 1024;
const LF = 0x0a;

/** A literal with a line break: the end of its first line (through the LF) and how many bytes follow it. */
export interface LiteralEcho {
  headTail: Buffer;
  /** headTail is the whole first line (it was short enough to keep). */
  headWhole: boolean;
  rest: number;
}

/** The echo of a literal sent whole, or undefined when it has no LF (its echo cannot break a line). */
export function literalEcho(literal: Buffer): LiteralEcho | undefined {
  const lf = literal.indexOf(LF);
  if (lf < 0) return undefined;
  const from = Math.max(0, lf + 1 - HEAD_TAIL_BYTES);
  return { headTail: Buffer.from(literal.subarray(from, lf + 1)), headWhole: from === 0, rest: literal.length - (lf + 1) };
}

/** The same for a literal relayed in slices, in constant memory. */
export class LiteralEchoTracker {
  private seen = 0;
  private tail: Buffer = Buffer.alloc(0);
  private found: LiteralEcho | undefined;

  constructor(private readonly size: number) {}

  push(chunk: Buffer): void {
    if (this.found !== undefined) return;
    const lf = chunk.indexOf(LF);
    const upTo = lf < 0 ? chunk.length : lf + 1;
    const joined = Buffer.concat([this.tail, chunk.subarray(Math.max(0, upTo - HEAD_TAIL_BYTES), upTo)]);
    this.tail = joined.subarray(Math.max(0, joined.length - HEAD_TAIL_BYTES));
    this.seen += upTo;
    if (lf >= 0) this.found = { headTail: Buffer.from(this.tail), headWhole: this.seen <= HEAD_TAIL_BYTES, rest: this.size - this.seen };
  }

  result(): LiteralEcho | undefined {
    return this.found;
  }
}

/**
 * Per command tag, the echoes its response line may carry. check() is the lexer's echo
 * check is ImapLexer's EchoCheck: given a finished response segment, -1, or the number of
 * raw bytes that still belong to it.
 */
export class EchoWatch {
  private readonly byTag = new Map<string, LiteralEcho[]>();

  expect(tag: string, echo: LiteralEcho): void {
    const list = this.byTag.get(tag);
    if (list === undefined) this.byTag.set(tag, [echo]);
    else list.push(echo);
  }

  /** The command is over (answered, or its connection gone): nothing more to expect. */
  forget(tag: string): void {
    this.byTag.delete(tag);
  }

  get size(): number {
    return this.byTag.size;
  }

  readonly check = (segment: Buffer): number => {
    if (this.byTag.size === 0) return -1;
    const space = segment.indexOf(0x20);
    if (space <= 0) return -1;
    const tag = segment.toString('latin1', 0, space);
    const list = this.byTag.get(tag);
    if (list === undefined) return -1;
    const at = ERROR_STATUS.test(segment.toString('latin1', space, space + 5)) ? list.findIndex((e) => echoedAtEnd(segment, space, e)) : -1;
    if (at < 0) {
      // The tagged line ended at a line end of its own: no echo (left) in it.
      this.byTag.delete(tag);
      return -1;
    }
    const [echo] = list.splice(at, 1);
    return echo!.rest;
  };
}

/** Only error answers quote arguments back. */
const ERROR_STATUS = /^ (?:BAD|NO)\b/i;

/**
 * The segment ends with the literal's first line. A whole short first line must also
 * follow a space, as a quoted argument does (`...search key: <literal>`): a first line
 * of "\r\n" alone would otherwise match every line.
 */
function echoedAtEnd(segment: Buffer, space: number, e: LiteralEcho): boolean {
  const start = segment.length - e.headTail.length;
  if (start <= space) return false;
  if (segment.compare(e.headTail, 0, e.headTail.length, start, segment.length) !== 0) return false;
  return !e.headWhole || segment[start - 1] === 0x20;
}

/** A response line with interior CR, LF or NUL (an echo) as one line: those become spaces, its final line end stays. */
export function flattenLine(line: Buffer): Buffer {
  const lf = line.indexOf(LF);
  if (lf < 0 || lf === line.length - 1) return line;
  let end = line.length;
  if (line[end - 1] === LF) end--;
  if (line[end - 1] === 0x0d) end--;
  const out = Buffer.from(line);
  for (let i = 0; i < end; i++) if (out[i] === 0x0d || out[i] === LF || out[i] === 0) out[i] = 0x20;
  return out;
}

/**
 * A random start for the tags the gateway sends upstream on one connection. Should a
 * line of the client's ever be read as a response nonetheless (an echo this module does
 * not know), it cannot name a command of ours: tags like C12 could be guessed.
 */
export function unguessableTagPrefix(): string {
  return randomBytes(3).toString('hex');
}
