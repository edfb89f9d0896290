/**
 * The grammar of a relayed APPEND up to its message literal, checked segment by segment
 * before any of it goes upstream (RFC 3501 §6.3.11 and §9; RFC 3516 §4.4 literal8):
 *
 *   append = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
 *
 * Why the gateway checks what the upstream will check anyway: Dovecot 2.3 reads an APPEND
 * as it arrives, and some malformed ones leave its framing different from the client's.
 * After `APPEND IN x () "date" {n}` it answers NO [TRYCREATE] and then swallows the next
 * command line as the rest of the APPEND; after `APPEND INBOX 42 {n}` it waits in silence.
 * Either way the next command never gets an answer. Refused here, they never reach it.
 * What follows the message literal (the end of the line, or more messages for an upstream
 * with MULTIAPPEND, RFC 3502) is the upstream's to judge: by then the message has gone
 * upstream, and the gateway could only end the session, where the upstream answers BAD
 * and goes on.
 * An APPEND with CATENATE (RFC 4469) is relayed only to an upstream that has it, and its
 * parts are left to the upstream; to any other, the gateway assembles it (catenate.ts),
 * and one it could not read as such is refused here.
 */

import { readAppendHead, readAppendMessage } from './append-line.js';

/**
 * RFC 3501 §9 ATOM-CHAR: any CHAR except atom-specials ( ) { SP CTL % * " \ ]; 8-bit bytes
 * are let through (some clients send UTF-8 names unquoted; the upstream judges those).
 */
const ATOM = String.raw`[^\x00-\x20\x7f(){%*"\\\]]+`;
/** The wildcards the reader lets into a mailbox atom and astring does not (list-wildcards). */
const WILDCARD = /[%*]/;
/** RFC 3501 §9 quoted: only \" and \\ are escapes (quoted-specials). */
const QUOTED = /^"(?:[^"\\\r\n]|\\["\\])*"$/;
/** flag = "\" atom (system flags and flag-extension) / atom (flag-keyword). */
const FLAG = String.raw`\\?${ATOM}`;
const FLAG_LIST = new RegExp(String.raw`^\((?:${FLAG}(?: ${FLAG})*)?\)$`);
/**
 * date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE;
 * a one-digit day without its space is let through (clients formatting with %e or %-d).
 */
const DATE_TIME = /^"(?: \d|\d{1,2})-(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"$/i;

const NO_MAILBOX = 'APPEND expects a mailbox';
const NO_MESSAGE = 'APPEND expects [flags] [date-time] and a literal';

/** What the upstream advertises that changes the grammar. */
export interface AppendUpstream {
  binary: boolean;
  catenate: boolean;
}

type Expect = 'first' | 'after-mailbox' | 'unchecked';

export class AppendGrammar {
  private expect: Expect = 'first';

  constructor(private readonly upstream: AppendUpstream) {}

  /** The next text segment of the command; a reason to refuse it, or undefined when it may go on. */
  check(segment: Buffer): string | undefined {
    if (this.expect === 'unchecked') return undefined;
    const text = segment.toString('latin1');
    if (this.expect === 'after-mailbox') return this.message(text, 0);
    const head = readAppendHead(text);
    if (head === undefined) return NO_MAILBOX;
    const { mailbox } = head;
    if (mailbox.form === 'literal') {
      this.expect = 'after-mailbox';
      return undefined;
    }
    if (mailbox.form === 'quoted' && !QUOTED.test(mailbox.raw)) return NO_MAILBOX;
    if (mailbox.form === 'atom') {
      // astring stops at a wildcard: none at all is no mailbox, one later leaves text that is no message.
      const wildcard = mailbox.raw.search(WILDCARD);
      if (wildcard === 0) return NO_MAILBOX;
      if (wildcard > 0) return NO_MESSAGE;
    }
    return this.message(text, head.end);
  }

  private message(text: string, from: number): string | undefined {
    const m = readAppendMessage(text, from);
    if (m === undefined) return NO_MESSAGE;
    if (m.flags !== undefined && !FLAG_LIST.test(m.flags)) return NO_MESSAGE;
    if (m.date !== undefined && !DATE_TIME.test(m.date)) return NO_MESSAGE;
    if (m.data.form === 'catenate') {
      if (!this.upstream.catenate) return NO_MESSAGE;
    } else if (m.data.binary && !this.upstream.binary) {
      return 'literal8 needs BINARY';
    }
    this.expect = 'unchecked';
    return undefined;
  }
}
