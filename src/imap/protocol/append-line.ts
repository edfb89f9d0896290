/**
 * The first segment of an APPEND command, read up to its message (RFC 3501 §6.3.11, §9;
 * RFC 3516 §4.4 literal8; RFC 4469 §5 CATENATE):
 *
 *   tag SP "APPEND" SP mailbox [SP flag-list] [SP date-time] SP (literal / "CATENATE" SP "(" ...)
 *
 * One reader for the three places that look at this line: the grammar check of a relayed
 * APPEND (append-grammar.ts), CATENATE emulation (commands/catenate.ts catenateStart) and
 * APPENDUID synthesis (lemonade/appenduid.ts plainAppend). It finds the pieces and where
 * they end, with the loosest rule any of them uses for each piece; each caller then holds
 * the pieces to its own rules. The pieces cannot be confused (a flag list starts with "(",
 * a date with a quote, the message with "{", "~{" or "CATENATE"), so reading them one
 * after the other finds what a single regular expression over the line would.
 * Text is latin1, one character per byte, as the segments are read.
 */

/** Up to the mailbox: the tag and "APPEND" (any case). */
const HEAD = /(\S+) APPEND /iy;
/** A literal announcement ending the segment: the mailbox is the next literal. */
const MAILBOX_LITERAL = /\{\d+\+?\}\r?\n$/y;
/** RFC 3501 §9 quoted, with any escaped character (the grammar's checker narrows that to \" and \\). */
const QUOTED = /"(?:[^"\\\r\n]|\\[^\r\n])*"/y;
/** Atom bytes: no SP, CTL, "(", ")", "{", DQUOTE or "\"; "%", "*", "]" and 8-bit let through for the callers to judge. */
const ATOM = /[^\x00-\x20\x7f(){"\\]+/y;
/** A parenthesized flag list, its flags unchecked. */
const FLAG_LIST = / \([^()\r\n]*\)/y;
/** A quoted date-time, its contents unchecked. */
const DATE_TIME = / "[^"\r\n]*"/y;
/** The message literal ending the segment (RFC 3516 "~" for literal8, RFC 7888 "+"). */
const MESSAGE_LITERAL = / (~?)\{(\d+)\+?\}\r?\n$/y;
const CATENATE = / CATENATE \(/iy;

export type AppendMailbox =
  /** raw as sent; name without quotes and escapes (still latin1). */
  | { form: 'atom' | 'quoted'; raw: string; name: string }
  /** Announced as a literal, whose bytes come after this segment. */
  | { form: 'literal' };

export interface AppendHead {
  tag: string;
  mailbox: AppendMailbox;
  /** Where the text after the mailbox starts. */
  end: number;
}

export type AppendData =
  /** The message is a literal; digits is its announced size as sent. */
  | { form: 'literal'; binary: boolean; digits: string }
  /** A CATENATE list: `at` is where "CATENATE" starts, `rest` the text after its "(". */
  | { form: 'catenate'; at: number; rest: string };

export interface AppendMessage {
  /** The flag list as sent, parentheses included. */
  flags?: string;
  /** The date-time as sent, quotes included. */
  date?: string;
  data: AppendData;
}

/** "tag APPEND mailbox": undefined when the segment does not start so. */
export function readAppendHead(text: string): AppendHead | undefined {
  HEAD.lastIndex = 0;
  const head = HEAD.exec(text);
  if (head === null) return undefined;
  const at = HEAD.lastIndex;
  const tag = head[1]!;
  if (match(MAILBOX_LITERAL, text, at) !== undefined) return { tag, mailbox: { form: 'literal' }, end: text.length };
  const quoted = match(QUOTED, text, at);
  if (quoted !== undefined) {
    return { tag, mailbox: { form: 'quoted', raw: quoted, name: quoted.slice(1, -1).replace(/\\(.)/g, '$1') }, end: at + quoted.length };
  }
  const atom = match(ATOM, text, at);
  if (atom === undefined) return undefined;
  return { tag, mailbox: { form: 'atom', raw: atom, name: atom }, end: at + atom.length };
}

/** "[SP flag-list] [SP date-time] SP message" from `from` on: undefined when the text is not that. */
export function readAppendMessage(text: string, from = 0): AppendMessage | undefined {
  let at = from;
  const out: Omit<AppendMessage, 'data'> = {};
  const flags = match(FLAG_LIST, text, at);
  if (flags !== undefined) {
    out.flags = flags.slice(1);
    at += flags.length;
  }
  const date = match(DATE_TIME, text, at);
  if (date !== undefined) {
    out.date = date.slice(1);
    at += date.length;
  }
  const catenate = match(CATENATE, text, at);
  if (catenate !== undefined) return { ...out, data: { form: 'catenate', at: at + 1, rest: text.slice(at + catenate.length) } };
  MESSAGE_LITERAL.lastIndex = at;
  const literal = MESSAGE_LITERAL.exec(text);
  if (literal === null) return undefined;
  return { ...out, data: { form: 'literal', binary: literal[1] === '~', digits: literal[2]! } };
}

/**
 * A mailbox named inline that catenateStart and plainAppend take as a name: a quoted
 * string, or an atom of 7-bit bytes. An ATOM-CHAR is a CHAR (RFC 3501 §9, %x01-7F), and
 * RFC 6855 lets UTF-8 into quoted strings only, so an atom with 8-bit bytes is no mailbox
 * name: the command goes upstream as it is, and the upstream answers it.
 */
export function recognizedMailbox(mailbox: AppendMailbox): mailbox is Extract<AppendMailbox, { name: string }> {
  return mailbox.form === 'quoted' || (mailbox.form === 'atom' && !/[\x80-\xff]/.test(mailbox.raw));
}

/** What a sticky pattern matches at `at`, if anything. */
function match(pattern: RegExp, text: string, at: number): string | undefined {
  pattern.lastIndex = at;
  return pattern.exec(text)?.[0];
}
