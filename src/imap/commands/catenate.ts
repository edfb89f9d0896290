/**
 * APPEND with CATENATE (RFC 4469), emulated over an upstream without it:
 *
 *   C: A003 APPEND Drafts (\Seen \Draft) CATENATE (URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=HEADER"
 *       TEXT {42}\r\n<text> URL "/Drafts;UIDVALIDITY=385759045/;UID=20/;SECTION=1.MIME" URL "..." TEXT {n}\r\n<text>)
 *   S: A003 OK [APPENDUID 385759045 45] append Completed
 *
 * The parts arrive in order and are assembled as they come (lemonade/assembly.ts: memory,
 * then a spill file): TEXT literals from the client, URL parts fetched from the upstream
 * on a side connection (the client never carries them). The result is APPENDed upstream
 * on the client's own connection as one ordinary literal, so the upstream's answer
 * (TRYCREATE, APPENDUID, ...) is the client's answer.
 *
 * Errors (RFC 4469 §5, §6): a URL that does not resolve fails the command with
 * NO [BADURL url]; a message over the size limit with NO [TOOBIG]. The rest of the command
 * is still read (a synchronizing literal is refused instead of waited for), so the
 * session stays in step. A refusal is logged and counted like any command (command-log.ts);
 * the APPEND sent upstream is the session's, accounted for when the upstream answers it.
 *
 * Grammar (RFC 4469 §5): append-data =/ "CATENATE" SP "(" cat-part *(SP cat-part) ")";
 * cat-part = text-literal / url; text-literal = "TEXT" SP literal; url = "URL" SP astring.
 */
import type { Readable } from 'node:stream';
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import type { LexEvent } from '../protocol/lexer.js';
import type { Lemonade } from '../../lemonade/services.js';
import { ImapUrlError, parseImapUrl } from '../protocol/url.js';
import { Assembly, AssemblyTooBig } from '../../lemonade/assembly.js';
import { authorizeForUser, describeRefusal, isOurHost, partRefOf } from '../../lemonade/authorize-url.js';
import { fetchPart, type PartRef } from '../../lemonade/fetch-part.js';
import { SideLoginRefused } from '../side-pool.js';
import { astringParts, badUrlCode } from '../protocol/writer.js';
import { readAppendHead, readAppendMessage, recognizedMailbox } from '../protocol/append-line.js';
import { UpstreamUnavailable } from '../../upstream/connect.js';
import { catenateAppends, catenateUrlBytes } from '../../metrics/metrics.js';
import { commandFinished } from './command-log.js';
import { isStoreUnavailable, STORE_UNAVAILABLE_TEXT } from '../../store/availability.js';
import path from 'node:path';

/** What the session does for the command (its socket, its upstream, its replies). */
export interface CatenateHost {
  readonly config: Config;
  readonly log: Logger;
  readonly lemonade: Lemonade;
  readonly authenticatedUser: string | undefined;
  /** Stops / resumes reading the client while a part is fetched. */
  hold(reason: string): void;
  release(reason: string): void;
  /** "+" for a synchronizing literal the client may now send (RFC 3501 §7.5). */
  continueLiteral(): void;
  /** Refuses the synchronizing literal just announced: the client will not send it. */
  refuseLiteral(): void;
  /** APPENDs the assembled message upstream as the client's command `tag`; resolves once sent. */
  appendUpstream(tag: string, prefix: string, data: Readable, size: number): Promise<void>;
  /** The command's tagged answer from the gateway (in command order). */
  answer(tag: string, status: 'NO' | 'BAD', text: string, code?: string): Promise<void>;
  /** The command is over: the session reads the next one. */
  done(): void;
}

/** Where a CATENATE APPEND's first segment ends its prefix: "tag APPEND mailbox [flags] [date] CATENATE (". */
export interface CatenateStart {
  tag: string;
  /** " APPEND mailbox [flags] [date] " with the tag removed, to re-send upstream. */
  prefix: string;
  /** The target mailbox as the client named it (quotes and escapes removed). */
  mailbox: string;
  /** The rest of the first segment after "CATENATE (". */
  rest: string;
}

/**
 * Recognizes an APPEND whose message is a CATENATE list, from its first segment. A
 * mailbox, flag list or date sent as a literal is not recognized (the segment ends
 * before CATENATE); such a command is relayed as an ordinary APPEND.
 */
export function catenateStart(first: Buffer): CatenateStart | undefined {
  const text = first.toString('latin1');
  // tag SP "APPEND" SP mailbox [SP flag-list] [SP date-time] SP "CATENATE" SP "("  (RFC 3501 §9, RFC 4469 §5).
  // mailbox = astring: an atom of ASTRING-CHARs ("[" and "]" included, RFC 3501 §9) and,
  // leniently as Dovecot, "%" and "*"; or a quoted string. Anything not recognized here is
  // relayed as a plain APPEND, so what Dovecot accepts as a mailbox must be recognized.
  // Flags and date are the upstream's to judge.
  const head = readAppendHead(text);
  if (head === undefined || !TAG.test(head.tag) || !recognizedMailbox(head.mailbox)) return undefined;
  const message = readAppendMessage(text, head.end);
  if (message?.data.form !== 'catenate') return undefined;
  // The line was read as latin1: back to its bytes, as UTF-8 (RFC 6855 quoted names).
  const mailbox = Buffer.from(head.mailbox.name, 'latin1').toString('utf8');
  return { tag: head.tag, prefix: text.slice(head.tag.length, message.data.at), mailbox, rest: message.data.rest };
}

/** RFC 3501 §9 tag: any ASTRING-CHAR (7-bit) but "+"; here also no "]", as catenateStart always read it. */
const TAG = /^[^\s(){%*"\\+\]\x00-\x1f\x7f-\xff]+$/;

type Expect =
  /** A cat-part or ")". */
  | 'part'
  /** The literal of a TEXT part (announced at the end of the segment). */
  | 'text-literal'
  /** The literal of a URL part's astring. */
  | 'url-literal'
  /** After ")": the end of the command. */
  | 'end';

interface Failure {
  text: string;
  code?: string;
  bad?: boolean;
}

/** Bound on a URL sent as a literal (URLs are short; RFC 5092 sets no limit, we do). */
const MAX_URL_LITERAL = 8192;

export class CatenateCommand {
  private readonly assembly: Assembly;
  private expect: Expect = 'part';
  private failure: Failure | undefined;
  private parts = 0;
  private urlLiteral: Buffer[] = [];
  /** The literal being read belongs to a part we are discarding. */
  private discarding = false;
  private urlBytes = 0;
  /** When the command arrived, for its `command` log line. */
  private readonly started = process.hrtime.bigint();

  constructor(
    private readonly host: CatenateHost,
    private readonly start: CatenateStart,
  ) {
    const cfg = host.config;
    this.assembly = new Assembly({
      dir: path.join(cfg.dataDir, 'tmp'),
      spillBytes: cfg.imap.catenate.spillBytes,
      maxBytes: cfg.imap.limits.maxLiteralSize,
    });
  }

  /** The first segment (which catenateStart recognized), after the target mailbox is known to exist. */
  async begin(): Promise<void> {
    await this.checkTarget();
    return this.segment(this.start.rest);
  }

  /**
   * RFC 3501 §6.3.11 (RFC 4469 §5: CATENATE is an APPEND): a target mailbox that does not
   * exist is NO [TRYCREATE], whatever the parts are, as Dovecot's own CATENATE answers. So it
   * is checked first, with STATUS on a side connection as the user, before any URL is
   * resolved: a bad URL must not hide it. Every later part is then skipped (a synchronizing
   * literal refused, RFC 3501 §7.5) and the command answered at its end.
   */
  private async checkTarget(): Promise<void> {
    const user = this.host.authenticatedUser!;
    this.host.hold('catenate');
    try {
      const r = await this.host.lemonade.sidePool.withConnection(user, (conn) => conn.command(['STATUS ', ...astringParts(this.start.mailbox), ' (MESSAGES)']));
      if (r.status === 'OK') return;
      // "Unless it is certain that the destination mailbox can not be created" (§6.3.11): a
      // STATUS that fails with a code of its own (NOPERM, ...) says why; anything else is
      // a mailbox that is not there.
      const code = r.code?.split(' ')[0]?.toUpperCase();
      if (code !== undefined && code !== 'NONEXISTENT' && code !== 'TRYCREATE') return this.fail({ text: r.text, code: r.code! });
      this.fail({ text: "Mailbox doesn't exist", code: 'TRYCREATE' });
    } catch (err) {
      if (err instanceof SideLoginRefused) return this.fail({ text: "Mailbox doesn't exist", code: 'TRYCREATE' });
      if (!(err instanceof UpstreamUnavailable)) throw err;
      this.fail({ text: 'Upstream server unavailable, try again later', code: 'UNAVAILABLE' });
    } finally {
      this.host.release('catenate');
    }
  }

  /**
   * One client event of the rest of the command. A promise means the session must wait
   * (a part is being fetched, or the command is being answered) before the next event.
   */
  onEvent(ev: LexEvent): Promise<void> | undefined {
    switch (ev.type) {
      case 'text':
        return this.segment(ev.data.toString('latin1'));
      case 'literal-start':
        return this.literalStart(ev.size, ev.sync);
      case 'literal-data':
        if (this.discarding) return undefined;
        if (this.expect === 'url-literal') this.urlLiteral.push(Buffer.from(ev.data));
        else this.write(ev.data);
        return undefined;
      case 'literal-end':
        this.discarding = false;
        if (this.expect === 'url-literal') {
          const url = Buffer.concat(this.urlLiteral).toString('utf8');
          this.urlLiteral = [];
          this.expect = 'part';
          return this.urlPart(url);
        }
        if (this.expect === 'text-literal') this.expect = 'part';
        return undefined;
      case 'end':
        return this.end();
      case 'error':
        // The lexer refused a line or literal (too long): the command is over. A literal
        // over the APPEND limit is a message too big (RFC 4469 §6), not bad syntax.
        this.fail(ev.code === 'literal-too-large' ? { text: 'Message too large', code: 'TOOBIG' } : { text: 'Command too large', code: 'TOOBIG', bad: true });
        return this.end();
    }
  }

  // ---- parsing -------------------------------------------------------------------------

  /** A text segment: cat-parts, possibly ending in a literal announcement. */
  private async segment(text: string): Promise<void> {
    let s = text.replace(/\r?\n$/, '');
    while (s.length > 0 && this.failure?.bad !== true) {
      s = s.replace(/^ +/, '');
      if (s === '') break;
      if (this.expect === 'end') {
        // RFC 3502 MULTIAPPEND would continue here; the emulation appends one message.
        return this.fail({ text: 'CATENATE: one message per APPEND', bad: true });
      }
      if (s[0] === ')') {
        this.expect = 'end';
        s = s.slice(1);
        continue;
      }
      const text = /^TEXT (~?\{\d+\+?\})$/i.exec(s);
      if (text) {
        this.expect = 'text-literal';
        return;
      }
      const urlLiteral = /^URL (\{\d+\+?\})$/i.exec(s);
      if (urlLiteral) {
        this.expect = 'url-literal';
        return;
      }
      const url = /^URL (?:"((?:[^"\\]|\\.)*)"|([^\s(){"\\\x00-\x1f\x7f]+))/i.exec(s);
      if (url) {
        s = s.slice(url[0].length);
        await this.urlPart(url[1] !== undefined ? url[1].replace(/\\(.)/g, '$1') : url[2]!);
        continue;
      }
      return this.fail({ text: 'CATENATE: expected TEXT literal or URL', bad: true });
    }
  }

  private literalStart(size: number, sync: boolean): Promise<void> | undefined {
    const refuse = (failure: Failure) => {
      this.fail(failure);
      this.discarding = true;
      if (sync) {
        // Not "+": the client sends nothing more of this command (RFC 3501 §7.5).
        this.host.refuseLiteral();
        return this.end();
      }
      return undefined;
    };
    if (this.failure !== undefined) return refuse(this.failure);
    if (this.expect === 'url-literal') {
      if (size > MAX_URL_LITERAL) return refuse({ text: 'CATENATE: URL too long', bad: true });
    } else if (this.expect === 'text-literal') {
      if (++this.parts > this.host.config.imap.catenate.maxParts) return refuse({ text: 'CATENATE: too many parts', bad: true });
      if (!this.assembly.fits(size)) return refuse({ text: 'Message too large', code: 'TOOBIG' });
    } else {
      return refuse({ text: 'CATENATE: unexpected literal', bad: true });
    }
    if (sync) this.host.continueLiteral();
    return undefined;
  }

  private write(data: Buffer): void {
    if (this.failure !== undefined) return;
    try {
      this.assembly.write(data);
    } catch (err) {
      if (!(err instanceof AssemblyTooBig)) throw err;
      this.fail({ text: 'Message too large', code: 'TOOBIG' });
    }
  }

  // ---- URL parts (RFC 4469 §5: the data is that of a FETCH BODY[section]<partial>) ------

  private async urlPart(text: string): Promise<void> {
    if (this.failure !== undefined) return;
    if (++this.parts > this.host.config.imap.catenate.maxParts) return this.fail({ text: 'CATENATE: too many parts', bad: true });
    let target;
    try {
      target = await this.resolve(text);
    } catch (err) {
      // A URLAUTH part's key is in the store: the command may work later (RFC 5530 §3).
      if (!isStoreUnavailable(err)) throw err;
      return this.fail({ text: STORE_UNAVAILABLE_TEXT, code: 'UNAVAILABLE' });
    }
    // RFC 4469 §6: NO [BADURL url], and the text says why (lemonade/authorize-url.ts).
    const refused = (why: string) => this.fail({ text: `CATENATE: URL does not resolve: ${why}`, code: badUrlCode(text) });
    if (!target.ok) return refused(target.why);
    const crossUser = target.owner !== this.host.authenticatedUser;
    this.host.hold('catenate');
    try {
      let tooBig = false;
      const result = await this.host.lemonade.sidePool.withConnection(target.owner, (conn) =>
        fetchPart(conn, target.ref, (size) => {
          tooBig = !this.assembly.fits(size);
          return {
            write: (chunk) => {
              if (!tooBig) this.assembly.write(chunk);
              return true;
            },
            onceDrain: (fn) => fn(),
            end: () => undefined,
          };
        }),
      );
      if (tooBig) return this.fail({ text: 'Message too large', code: 'TOOBIG' });
      if (!result.ok) return refused(describeRefusal(result.reason, crossUser));
      this.urlBytes += result.size;
    } catch (err) {
      // The owner cannot be logged in as: not there, as far as the requester may know.
      if (err instanceof SideLoginRefused) return refused(describeRefusal('no-mailbox', crossUser));
      if (!(err instanceof UpstreamUnavailable)) throw err;
      return this.fail({ text: 'Upstream server unavailable, try again later', code: 'UNAVAILABLE' });
    } finally {
      this.host.release('catenate');
    }
  }

  /** Whose mailbox and which part: the user's own by a plain URL, or anyone's by URLAUTH. */
  private async resolve(text: string): Promise<{ ok: true; owner: string; ref: PartRef } | { ok: false; why: string }> {
    const user = this.host.authenticatedUser!;
    const hostname = this.host.config.hostname;
    let parsed;
    try {
      parsed = parseImapUrl(text, { user, host: hostname });
    } catch (err) {
      if (err instanceof ImapUrlError) return { ok: false, why: describeRefusal('syntax', false) };
      throw err;
    }
    const url = parsed.url;
    if (url.urlauth !== undefined) {
      // The same checks as URLFETCH (RFC 4467 §6.3), in the same order: the token first.
      const auth = await authorizeForUser(this.host.lemonade.urlauth, this.host.config, user, text);
      return auth.ok ? { ok: true, owner: auth.owner, ref: auth.ref } : { ok: false, why: describeRefusal(auth.reason, true) };
    }
    // Without URLAUTH only the user's own mail on this server (RFC 4469 §5: as FETCH would).
    if (url.server === undefined || !isOurHost(url.server.host, hostname)) return { ok: false, why: describeRefusal('not_ours', false) };
    if ((url.server.user ?? user) !== user) return { ok: false, why: describeRefusal('plain_other_user', true) };
    if (url.mailbox === undefined || url.uid === undefined) return { ok: false, why: describeRefusal('syntax', false) };
    return { ok: true, owner: user, ref: partRefOf({ ...url, mailbox: url.mailbox, uid: url.uid }) };
  }

  // ---- the end ---------------------------------------------------------------------------

  private fail(failure: Failure): void {
    // The first failure is the one reported.
    this.failure ??= failure;
  }

  private ended = false;

  private async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    const tag = this.start.tag;
    try {
      if (this.failure === undefined && this.expect !== 'end') this.fail({ text: 'CATENATE: missing ")"', bad: true });
      const failure = this.failure;
      if (failure !== undefined) {
        catenateAppends.inc({ result: catenateResult(failure) });
        this.host.log.info({ reason: failure.text }, 'CATENATE refused');
        const status = failure.bad ? 'BAD' : 'NO';
        await this.host.answer(tag, status, failure.text, failure.code);
        // Answered here, not by the upstream: the session's accounting never sees it.
        commandFinished(this.host.log, 'APPEND', status, this.started);
        return;
      }
      this.host.hold('catenate');
      try {
        await this.host.appendUpstream(tag, this.start.prefix, this.assembly.open(), this.assembly.size);
      } finally {
        this.host.release('catenate');
      }
      catenateAppends.inc({ result: 'appended' });
      catenateUrlBytes.inc(this.urlBytes);
    } finally {
      this.assembly.dispose();
      this.host.done();
    }
  }
}

/** The catenateAppends label for a refusal. */
function catenateResult(failure: Failure): string {
  if (failure.bad) return 'bad';
  const code = failure.code?.split(' ')[0];
  if (code === 'TOOBIG') return 'toobig';
  if (code === 'UNAVAILABLE') return 'unavailable';
  if (code === 'BADURL') return 'badurl';
  return 'mailbox';
}
