/**
 * One client submission session (RFC 6409): the SMTP state machine of RFC 5321 §4.1.4
 * with PIPELINING (RFC 2920), STARTTLS (RFC 3207), AUTH (RFC 4954) and CHUNKING (RFC 3030).
 *
 * Commands are handled strictly in the order received, so a pipelined burst gets its
 * replies in order. A transaction is relayed to the upstream MTA as it happens: MAIL and
 * each RCPT are forwarded when received and the client gets the MTA's own reply, the
 * content streams through, and the final reply is the MTA's. Nothing is acknowledged that
 * the MTA did not accept.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Config, ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';
import { plaintextAuthAllowed, startServerTls } from '../net/client-socket.js';
import { SmtpReader, type SmtpEvent } from './protocol/reader.js';
import {
  SmtpSyntaxError,
  decodeBase64Strict,
  parseBdatArgs,
  parseAuthArgs,
  parseCommandLine,
  parseMailFrom,
  parseRcptTo,
  parseSize,
} from './protocol/parser.js';
import { asParsedReply, challenge, ehloReply, formatReply, reply, type Reply } from './protocol/reply.js';
import { Replies } from './protocol/replies.js';
import { precondition, type SessionView } from './preconditions.js';
import { checkParams, effectiveMaxSize, ehloKeywords, mailParams, rcptParams, type ExtensionContext } from './extensions.js';
import { senderAllowed } from './sender-policy.js';
import { parseBurlArgs, resolveBurl } from './burl.js';
import type { Lemonade } from '../lemonade/services.js';
import { receivedHeader } from './trace.js';
import type { ImapAuthenticator } from '../auth/imap-authenticator.js';
import type { RelayPool } from './relay-pool.js';
import type { ContentForm, SmtpParams, SmtpReply, UpstreamSmtp } from './upstream.js';
import type { FutureRelease } from '../lemonade/futurerelease/service.js';
import { describeHold, holdQuotaRefusal } from '../lemonade/futurerelease/hold-params.js';
import { UpstreamUnavailable } from '../upstream/connect.js';
import { isStoreUnavailable } from '../store/availability.js';
import { bytesTotal, sessionsOpen, sessionsTotal, submissionAuthTotal, submissionMessages } from '../metrics/metrics.js';

export interface SubmissionDeps {
  config: Config;
  listener: ListenerConfig;
  tls: TlsContextHolder;
  auth: ImapAuthenticator;
  pool: RelayPool;
  lemonade: Lemonade;
  futureRelease: FutureRelease;
  /** The upstream MTA's EHLO keywords, when known. */
  upstreamExtensions(): ReadonlyMap<string, string> | undefined;
  log: Logger;
  onClose(session: SubmissionSession): void;
}

/**
 * Where a transaction's content goes: the MTA connection itself (relayed now), or the
 * FUTURERELEASE spool (held; futurerelease/held-content.ts).
 */
interface ContentTarget {
  startContent(form: ContentForm): Promise<SmtpReply>;
  writeContent(chunk: Buffer): boolean;
  onceDrain(fn: () => void): void;
  endContent(): Promise<SmtpReply>;
  destroy(): void;
}

interface Transaction {
  id: string;
  from: string;
  /** MAIL FROM parameters relayed to the MTA (kept for a held message's release). */
  mailParams: SmtpParams;
  /** The MTA connection, for a message relayed now; a held message does not use one until its release. */
  conn?: UpstreamSmtp;
  out: ContentTarget;
  /** RFC 4865: when a held message is to be released (ms since the epoch). */
  releaseAt?: number;
  /** Recipients the upstream accepted, and their RCPT parameters. */
  accepted: string[];
  acceptedParams: SmtpParams[];
  rcptCount: number;
  declaredSize?: number;
  /** How content is arriving, once it does. */
  content?: 'data' | 'bdat';
  /** Content bytes received from the client (without our trace header). */
  size: number;
  /** The SIZE limit in force for this message (RFC 1870), fixed at MAIL. */
  maxSize: number;
  /** Set when the message can no longer be accepted; the reply given at its end. */
  failure?: { reply: Reply; reason: string };
  started: number;
  /** The MTA refused MAIL (known once its reply came): the transaction never began. */
  mailRefused?: boolean;
}

/** A BDAT command whose chunk is being read (RFC 3030 §2: replies come after the chunk). */
interface ChunkInProgress {
  size: number;
  last: boolean;
  /** Reply to give after the chunk when the command itself was refused. */
  refusal?: Reply;
}

type SaslStep =
  | { kind: 'plain' }
  | { kind: 'login-user' }
  | { kind: 'login-password'; user: string };

const BASE64_USERNAME = Buffer.from('Username:').toString('base64');
const BASE64_PASSWORD = Buffer.from('Password:').toString('base64');

export class SubmissionSession {
  readonly id = randomBytes(6).toString('hex');
  /** Carries the session id on every line, and the user once authenticated. */
  private log: Logger;
  private readonly config: Config;
  private client: net.Socket;
  private readonly reader: SmtpReader;
  private tlsActive: boolean;
  private queue: SmtpEvent[] = [];
  private busy = false;
  private paused = false;
  private closed = false;
  private helo: string | undefined;
  private user: string | undefined;
  private tx: Transaction | undefined;
  private chunk: ChunkInProgress | undefined;
  private sasl: SaslStep | undefined;
  private errors = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Deadline from connect to a successful AUTH (submission.timeouts.preAuthSeconds); not re-armed by input. */
  private preAuthTimer: NodeJS.Timeout | undefined;
  /** Command lines before a successful AUTH, bounded by submission.limits.maxCommandsBeforeAuth. */
  private commandsBeforeAuth = 0;
  /**
   * Replies still owed, in command order: MAIL and RCPT go to the MTA without waiting for
   * its verdict (PIPELINING both ways, RFC 2920 §3.1), so later replies queue behind them.
   */
  private owed: Promise<void> = Promise.resolve();
  /** Reply slots in command order; a slot waits for its text while the MTA answers. */
  private slots: Array<{ text?: string; after?: () => void }> = [];
  /** The slot the reply being made fills (set while an MTA verdict is turned into a reply). */
  private filling: { text?: string; after?: () => void } | undefined;

  constructor(
    socket: net.Socket,
    private readonly deps: SubmissionDeps,
  ) {
    this.config = deps.config;
    this.client = socket;
    this.tlsActive = socket instanceof tls.TLSSocket;
    this.log = deps.log.child({ session: this.id, protocol: 'submission', remote: socket.remoteAddress });
    const limits = deps.config.submission.limits;
    this.reader = new SmtpReader({ maxCommandLine: limits.maxCommandLine, maxTextLine: limits.maxTextLine });
    sessionsOpen.inc({ protocol: 'submission' });
    sessionsTotal.inc({ protocol: 'submission', listener_tls: deps.listener.tls });
    this.attach(socket);
    this.armTimer();
    this.preAuthTimer = setTimeout(() => {
      this.log.info('no authentication in time');
      // RFC 5321 §4.5.3.2: the server may close after its timeout with 421 (RFC 3463 X.4.2).
      this.close(formatReply(Replies.authTimeout(this.config.hostname)));
    }, deps.config.submission.timeouts.preAuthSeconds * 1000);
    this.preAuthTimer.unref();
    this.send(formatReply(Replies.greeting(this.config.hostname)));
    this.log.debug('session open');
  }

  private get clientAddress(): string {
    return this.client.remoteAddress ?? '';
  }

  private get authAllowed(): boolean {
    return plaintextAuthAllowed(this.tlsActive, this.deps.listener, this.client.remoteAddress);
  }

  private extensionContext(): ExtensionContext {
    return {
      tlsActive: this.tlsActive,
      starttlsOffered: this.deps.listener.tls === 'starttls',
      authAllowed: this.authAllowed && this.user === undefined,
      upstream: this.deps.upstreamExtensions(),
      maxMessageSize: this.config.submission.limits.maxMessageSize,
      burl: this.deps.lemonade.sidePool.available,
      authenticated: this.user !== undefined,
      futureRelease: this.deps.futureRelease.keyword(),
    };
  }

  // ---- input ------------------------------------------------------------------------

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      bytesTotal.inc({ protocol: 'submission', direction: 'client_in' }, chunk.length);
      this.armTimer();
      for (const ev of this.reader.push(chunk)) this.queue.push(ev);
      void this.pump();
    });
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'client socket error'));
    socket.on('close', () => this.teardown());
  }

  /** Handles queued events one at a time; the socket is paused while a handler waits. */
  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (!this.closed && !this.closing) {
        const ev = this.queue.shift();
        if (ev === undefined) break;
        const pending = this.handle(ev);
        if (pending !== undefined) {
          this.pauseInput();
          await pending.catch((err: unknown) => this.storeFailed(err));
        }
      }
    } catch (err) {
      this.log.error({ err: (err as Error).stack }, 'submission session failed');
      this.abortTransaction();
      this.close(formatReply(Replies.internalError(this.config.hostname)));
    } finally {
      this.busy = false;
      // The state may have moved between commands and content: its timeout applies now.
      if (!this.closed) this.armTimer();
      this.resumeInput();
      this.closeIfIdle();
    }
  }

  /**
   * SIGTERM (gateway.ts): the session ends with 421 (RFC 5321 §3.8) as soon as no
   * transaction is under way. A transaction under way (MAIL given, or content arriving)
   * goes on to its end, so a message in DATA is relayed and gets the MTA's 250 (or its
   * refusal); the 421 follows that reply. The gateway sends 421 to whatever is left when
   * its grace time ends, and the client, which got no 250, keeps the message.
   */
  drain(): void {
    this.draining = true;
    this.closeIfIdle();
  }

  private draining = false;

  private closeIfIdle(): void {
    if (!this.draining || this.closed || this.closing) return;
    if (this.busy || this.tx !== undefined || this.chunk !== undefined || this.sasl !== undefined) return;
    this.close(shutdownReply(this.config.hostname));
  }

  private pauseInput(): void {
    if (!this.paused) {
      this.paused = true;
      this.client.pause();
    }
  }

  private resumeInput(): void {
    if (this.paused && !this.closed) {
      this.paused = false;
      this.client.resume();
    }
  }

  private handle(ev: SmtpEvent): Promise<void> | undefined {
    switch (ev.type) {
      case 'command':
        if (this.sasl) return this.saslResponse(ev.line);
        return this.command(ev.line);
      case 'command-too-long':
        this.sasl = undefined;
        return this.error(Replies.lineTooLong);
      case 'data':
      case 'chunk':
        return this.content(ev.data);
      case 'data-end':
        return this.finishMessage(ev.lineTooLong);
      case 'chunk-end':
        return this.chunkEnd();
    }
  }

  // ---- commands ---------------------------------------------------------------------

  private command(line: string): Promise<void> | undefined {
    if (this.user === undefined && ++this.commandsBeforeAuth > this.config.submission.limits.maxCommandsBeforeAuth) {
      this.log.info('too many commands before authentication');
      this.close(formatReply(Replies.tooManyCommandsBeforeAuth(this.config.hostname)));
      return undefined;
    }
    const cmd = parseCommandLine(line);
    if (cmd === undefined) return this.error(Replies.noVerb);
    // The verb only: arguments may hold credentials (AUTH PLAIN's initial response).
    this.log.debug({ command: cmd.verb.slice(0, 20) }, 'command');
    const refusal = precondition(cmd.verb, cmd.args, this.view());
    if (refusal !== undefined) return this.error(refusal);
    switch (cmd.verb) {
      case 'EHLO':
      case 'HELO':
        return this.ehlo(cmd.verb, cmd.args);
      case 'STARTTLS':
        return this.starttls();
      case 'AUTH':
        return this.auth(cmd.args);
      case 'MAIL':
        return this.mail(cmd.args);
      case 'RCPT':
        return this.rcpt(cmd.args);
      case 'DATA':
        return this.data();
      case 'BDAT':
        return this.bdat(cmd.args);
      case 'BURL':
        return this.burl(cmd.args);
      case 'XCANCEL':
        return this.cancelHeld(cmd.args);
      case 'RSET':
        this.abortTransaction();
        return this.ok(Replies.ok);
      case 'NOOP':
        return this.ok(Replies.ok);
      case 'QUIT':
        this.abortTransaction();
        this.close(formatReply(Replies.bye(this.config.hostname)));
        return undefined;
      case 'VRFY':
        if (cmd.args.trim() === '') return this.error(Replies.badArguments('Syntax: VRFY address'));
        return this.ok(Replies.cannotVrfy);
      case 'HELP':
        return this.ok(Replies.help);
      default:
        // Not reached: precondition() refuses every verb not handled above.
        return this.error(Replies.unrecognized(cmd.verb));
    }
  }

  /** What preconditions.ts looks at. */
  private view(): SessionView {
    const tx = this.tx;
    return {
      greeted: this.helo !== undefined,
      authenticated: this.user !== undefined,
      transaction: tx === undefined ? undefined : { refused: tx.mailRefused === true, contentStarted: tx.content !== undefined },
      authAllowed: this.authAllowed,
      starttlsAvailable: this.deps.listener.tls === 'starttls' && !this.tlsActive,
      burlOffered: this.deps.lemonade.sidePool.available,
    };
  }

  private ehlo(verb: string, args: string): undefined {
    const domain = args.trim();
    // RFC 5321 §4.1.1.1: a domain or address literal is required.
    if (domain === '' || /\s/.test(domain)) return this.error(Replies.badArguments(`Syntax: ${verb} hostname`));
    this.abortTransaction();
    this.helo = domain;
    this.errors = 0;
    if (verb === 'HELO') return this.ok(Replies.helo(this.config.hostname));
    this.send(ehloReply(this.config.hostname, `Hello ${domain.slice(0, 64)}`, ehloKeywords(this.extensionContext())));
    return undefined;
  }

  private async starttls(): Promise<void> {
    this.send(formatReply(Replies.readyForTls));
    // RFC 3207 §4.2 and CVE-2011-0411: forget everything, including pipelined plaintext.
    this.queue = [];
    this.reader.reset();
    this.abortTransaction();
    this.helo = undefined;
    const { secure, settled } = startServerTls(this.client, this.deps.tls.context());
    this.client = secure;
    this.tlsActive = true;
    this.attach(secure);
    this.paused = false;
    await settled;
  }

  private auth(args: string): Promise<void> | undefined {
    const parsed = parseAuthArgs(args);
    if (parsed === undefined) return this.error(Replies.badArguments('Syntax: AUTH mechanism [initial-response]'));
    const mechanism = parsed.mechanism.toUpperCase();
    if (mechanism === 'PLAIN') {
      if (parsed.initial !== undefined) return this.plain(parsed.initial);
      this.sasl = { kind: 'plain' };
      this.send(challenge(''));
      return undefined;
    }
    if (mechanism === 'LOGIN') {
      if (parsed.initial !== undefined) return this.saslResponse(parsed.initial, { kind: 'login-user' });
      this.sasl = { kind: 'login-user' };
      this.send(challenge(BASE64_USERNAME));
      return undefined;
    }
    return this.error(Replies.authMechanismUnknown);
  }

  private saslResponse(line: string, step: SaslStep | undefined = this.sasl): Promise<void> | undefined {
    this.sasl = undefined;
    if (step === undefined) return undefined;
    // RFC 4954 §4: "*" cancels the exchange.
    if (line === '*') return this.error(Replies.authCancelled);
    if (step.kind === 'plain') return this.plain(line);
    const decoded = decodeBase64Strict(line);
    if (decoded === undefined) return this.error(Replies.authUndecodable);
    if (step.kind === 'login-user') {
      this.sasl = { kind: 'login-password', user: decoded.toString('utf8') };
      this.send(challenge(BASE64_PASSWORD));
      return undefined;
    }
    return this.verify('login', step.user, decoded.toString('utf8'));
  }

  private plain(response: string): Promise<void> | undefined {
    // RFC 4954 §4: "=" is an empty initial response.
    const decoded = response === '=' ? Buffer.alloc(0) : decodeBase64Strict(response);
    if (decoded === undefined) return this.error(Replies.authUndecodable);
    const fields = decoded.toString('utf8').split('\0');
    if (fields.length !== 3 || fields[1] === '' || fields[2] === '') return this.error(Replies.authMalformedPlain);
    const [authzid, user, password] = fields as [string, string, string];
    return this.verify('plain', user, password, authzid !== '' && authzid !== user ? authzid : undefined);
  }

  private async verify(mechanism: 'plain' | 'login', user: string, password: string, authzid?: string): Promise<void> {
    const outcome = await this.deps.auth.check(user, password, this.clientAddress, authzid);
    submissionAuthTotal.inc({ mechanism, result: outcome });
    if (outcome === 'ok') {
      clearTimeout(this.preAuthTimer);
      this.user = authzid ?? user;
      this.log.info({ user: this.user, mechanism }, 'authenticated');
      this.log = this.log.child({ user: this.user });
      return this.ok(Replies.authSucceeded);
    }
    if (outcome === 'unavailable') return this.error(Replies.authTemporaryFailure);
    this.log.info({ user, mechanism }, 'authentication failed');
    return this.error(Replies.authInvalid);
  }

  private async mail(args: string): Promise<void> {
    const user = this.user!;
    // A MAIL the MTA refused is replaced by this one (preconditions.ts lets it through).
    if (this.tx !== undefined) this.abortTransaction();
    const ctx = this.extensionContext();
    let parsed;
    try {
      parsed = parseMailFrom(args, { utf8: /(^|\s)SMTPUTF8(\s|$)/i.test(args) && ctx.upstream?.has('SMTPUTF8') === true });
    } catch (err) {
      return this.error(Replies.badArguments(syntaxText(err, 'Syntax: MAIL FROM:<address>')));
    }
    const checked = checkParams(parsed.params, mailParams, ctx);
    if ('code' in checked) return this.error(checked);
    const sizeParam = parsed.params.get('SIZE');
    const declaredSize = typeof sizeParam === 'string' ? parseSize(sizeParam) : undefined;
    if (declaredSize !== undefined && declaredSize > effectiveMaxSize(ctx)) {
      submissionMessages.inc({ result: 'rejected', reason: 'size' });
      return this.error(Replies.messageTooBig);
    }
    if (!senderAllowed(this.config.submission.senderPolicy, user, parsed.address)) {
      submissionMessages.inc({ result: 'rejected', reason: 'sender' });
      return this.error(Replies.senderNotOwned(user));
    }
    const hold = this.deps.futureRelease.parse(parsed.params);
    if (hold !== undefined && !hold.ok) return this.error(hold);
    // RFC 4865 §6: a system quota on held messages is 552 X.7.17.
    if (hold !== undefined && !(await this.deps.futureRelease.hasRoom(declaredSize ?? 0))) return this.error(holdQuotaRefusal('system'));
    if (hold?.ok) return this.mailHeld(parsed.address, checked.relay, declaredSize, effectiveMaxSize(ctx), hold);
    let conn: UpstreamSmtp;
    try {
      conn = await this.deps.pool.acquire();
    } catch (err) {
      return this.upstreamFailed(err);
    }
    if (this.closed) {
      // The client left while the connection was being opened: no transaction will end it.
      this.deps.pool.release(conn, true);
      return;
    }
    const tx: Transaction = {
      id: randomBytes(8).toString('hex'),
      from: parsed.address,
      mailParams: checked.relay,
      conn,
      out: conn,
      accepted: [],
      acceptedParams: [],
      rcptCount: 0,
      declaredSize,
      size: 0,
      maxSize: effectiveMaxSize(ctx),
      started: Date.now(),
    };
    this.tx = tx;
    // Sent now; the next pipelined command is read while the MTA thinks (RFC 2920 §3.1).
    this.owe(
      conn.mail(parsed.address, checked.relay),
      (answer) => {
        if (answer.code >= 300) {
          tx.mailRefused = true;
          submissionMessages.inc({ result: 'rejected', reason: 'upstream' });
        }
        return this.relayReply(answer);
      },
      (err) => {
        if (this.tx === tx) this.abortTransaction();
        return this.upstreamFailed(err);
      },
    );
  }

  /**
   * MAIL with HOLDFOR / HOLDUNTIL (RFC 4865): the transaction is taken by the gateway alone
   * and its content goes to the spool. The MTA is not asked now: it sees the message at
   * release, and a recipient it refuses then gets the sender a DSN. (Asking it now and
   * resetting would also drain an MTA's arrival-rate tokens, e.g. Postfix's in_flow_delay,
   * without ever delivering.)
   */
  private mailHeld(from: string, mailParams: SmtpParams, declaredSize: number | undefined, maxSize: number, hold: { releaseAtMs: number; requested: string }): undefined {
    const user = this.user!;
    const tx: Transaction = {
      id: randomBytes(8).toString('hex'),
      from,
      mailParams,
      out: this.deps.futureRelease.holdContent(() => ({
        user,
        sender: tx.from,
        mailParams: tx.mailParams,
        recipients: tx.accepted.map((address, i) => ({ address, params: tx.acceptedParams[i]!, status: 'pending' as const })),
        releaseAt: hold.releaseAtMs,
        holdRequest: hold.requested,
      })),
      releaseAt: hold.releaseAtMs,
      accepted: [],
      acceptedParams: [],
      rcptCount: 0,
      declaredSize,
      size: 0,
      maxSize,
      started: Date.now(),
    };
    this.tx = tx;
    return this.ok(Replies.senderHeld(new Date(hold.releaseAtMs)));
  }

  private rcpt(args: string): undefined {
    // preconditions.ts: MAIL was given and accepted, and content has not started.
    const tx = this.tx!;
    if (tx.rcptCount >= this.config.submission.limits.maxRecipients) return this.error(Replies.tooManyRecipients);
    const ctx = this.extensionContext();
    let parsed;
    try {
      parsed = parseRcptTo(args, { utf8: ctx.upstream?.has('SMTPUTF8') === true });
    } catch (err) {
      return this.error(Replies.badArguments(syntaxText(err, 'Syntax: RCPT TO:<address>')));
    }
    const checked = checkParams(parsed.params, rcptParams, ctx);
    if ('code' in checked) return this.error(checked);
    tx.rcptCount++;
    const address = parsed.address;
    if (tx.conn === undefined) {
      // Held: the MTA judges the recipient at release.
      tx.accepted.push(address);
      tx.acceptedParams.push(checked.relay);
      return this.ok(Replies.recipientOk);
    }
    this.owe(
      tx.conn.rcpt(address, checked.relay),
      (answer) => {
        if (answer.code < 300 && !tx.mailRefused) {
          tx.accepted.push(address);
          tx.acceptedParams.push(checked.relay);
        }
        return this.relayReply(answer);
      },
      (err) => {
        if (this.tx === tx) this.abortTransaction();
        return this.upstreamFailed(err);
      },
    );
  }

  private async data(): Promise<void> {
    const opened = await this.openContent('DATA');
    if ('refusal' in opened) return this.error(opened.refusal);
    if ('upstream' in opened) return this.relayReply(opened.upstream);
    this.reader.expectData();
    this.send(formatReply(Replies.startData));
  }

  /** BDAT size [LAST] (RFC 3030 §2); the reader has already switched to reading the chunk. */
  private async bdat(args: string): Promise<void> {
    const parsed = parseBdatArgs(args);
    if (parsed === undefined) {
      // The chunk's end cannot be found: the connection cannot continue (RFC 3030 §2).
      this.abortTransaction();
      this.close(formatReply(Replies.badBdatClosing));
      return;
    }
    const { size, last } = parsed;
    const opened = await this.openContent('BDAT');
    // RFC 3030 §2: the chunk is read either way; a refusal is the reply after it.
    let refusal: Reply | undefined;
    if ('refusal' in opened) refusal = opened.refusal;
    else if ('upstream' in opened) refusal = { code: opened.upstream.code, enhanced: opened.upstream.enhanced ?? '4.3.0', text: opened.upstream.lines.join(' ') };
    this.chunk = { size, last, refusal };
    if (size === 0) return this.chunkEnd();
  }

  /** BURL imap-url [LAST] (RFC 4468 §3.2): the URL's content is the next piece of the message. */
  private async burl(args: string): Promise<void> {
    const parsed = parseBurlArgs(args);
    if (parsed === undefined) return this.error(Replies.badArguments('Syntax: BURL imap-url [LAST]'));
    const opened = await this.openContent('BURL');
    if ('refusal' in opened) return this.error(opened.refusal);
    if ('upstream' in opened) return this.relayReply(opened.upstream);
    const tx = opened.tx;
    const outcome = await resolveBurl(this.deps.lemonade, this.config, this.user!, parsed.url, {
      fits: (size) => tx.size + size <= tx.maxSize,
      sink: () => ({
        write: (chunk) => {
          tx.size += chunk.length;
          return tx.out.writeContent(chunk);
        },
        onceDrain: (fn) => tx.out.onceDrain(fn),
        end: () => undefined,
      }),
    });
    if (!outcome.ok) {
      // RFC 4468 §3.2: a failed BURL fails the transaction (the message is incomplete).
      this.log.info({ reason: outcome.reason }, 'BURL refused');
      if (this.tx === tx) this.abortTransaction();
      submissionMessages.inc({ result: 'rejected', reason: 'burl' });
      return this.error(outcome.reply);
    }
    if (parsed.last) return this.finishMessage(false);
    return this.ok(Replies.burlAdded(outcome.size));
  }

  /**
   * XCANCEL id: the submitter cancels one of their held messages before its release. RFC
   * 4865 defines no way to; an X-command is how RFC 5321 §4.1.5 lets a server add one.
   * The id is the one in the 250 reply that accepted the message.
   */
  private async cancelHeld(args: string): Promise<void> {
    const id = args.trim();
    if (!/^\S+$/.test(id)) return this.error(Replies.badArguments('Syntax: XCANCEL id'));
    const outcome = await this.deps.futureRelease.cancel(id, this.user!);
    if (outcome === 'unknown') return this.error(Replies.noHeldMessage(id));
    return this.ok(Replies.heldCancelled(id));
  }

  /**
   * The one place DATA, BDAT and BURL open a message's content. After the MTA's verdicts
   * on MAIL and every RCPT (they decide whether there is a message to take): a
   * transaction the MTA accepted (RFC 5321 §4.1.4), content of one kind only (RFC 3030
   * §2: DATA or BDAT/BURL chunks, BURL counting as a chunk, RFC 4468 §3.2), at least one
   * recipient (RFC 5321 §3.3). The first piece of content opens the content phase
   * upstream (or in the spool) and writes our trace header; the MTA's refusal of that is
   * returned as it came.
   */
  private async openContent(verb: 'DATA' | 'BDAT' | 'BURL'): Promise<{ tx: Transaction } | { refusal: Reply } | { upstream: SmtpReply }> {
    await this.owed;
    const tx = this.tx?.mailRefused ? undefined : this.tx;
    if (tx === undefined) return { refusal: Replies.needMail };
    const kind = verb === 'DATA' ? 'data' : 'bdat';
    if (tx.content !== undefined && tx.content !== kind) return { refusal: Replies.contentConflict(verb, verb === 'DATA' ? 'BDAT' : 'DATA') };
    if (tx.accepted.length === 0) return { refusal: Replies.noValidRecipients };
    if (tx.content === undefined) {
      const failed = await this.startContent(tx, kind === 'data' ? 'lines' : 'octets');
      if (failed !== undefined) return { upstream: failed };
      tx.content = kind;
    }
    return { tx };
  }

  /** Opens the content phase upstream and writes our trace header; returns a failure reply if it could not. */
  private async startContent(tx: Transaction, form: ContentForm): Promise<SmtpReply | undefined> {
    let answer: SmtpReply;
    try {
      answer = await tx.out.startContent(form);
    } catch {
      this.abortTransaction();
      return asParsedReply(Replies.mtaUnavailable);
    }
    if (answer.code >= 400) {
      this.abortTransaction();
      return answer;
    }
    tx.out.writeContent(
      receivedHeader({
        heloName: this.helo ?? 'unknown',
        clientAddress: this.clientAddress,
        hostname: this.config.hostname,
        tls: this.tlsActive,
        authenticated: true,
        id: tx.id,
        recipients: tx.accepted,
        ...(tx.releaseAt !== undefined ? { comment: describeHold(tx.releaseAt) } : {}),
      }),
    );
    return undefined;
  }

  // ---- content ----------------------------------------------------------------------

  private content(data: Buffer): Promise<void> | undefined {
    const tx = this.tx;
    if (tx === undefined || tx.failure !== undefined || (this.chunk?.refusal !== undefined && tx.content !== 'data')) return undefined;
    tx.size += data.length;
    if (tx.size > tx.maxSize) {
      // RFC 1870 §6: the message is refused at its end; stop sending it upstream now.
      tx.failure = { reply: Replies.messageTooBig, reason: 'size' };
      tx.out.destroy();
      return undefined;
    }
    if (tx.out.writeContent(data)) return undefined;
    return new Promise<void>((resolve) => tx.out.onceDrain(resolve));
  }

  private async chunkEnd(): Promise<void> {
    const chunk = this.chunk;
    this.chunk = undefined;
    if (chunk === undefined) return;
    if (chunk.refusal !== undefined) {
      if (this.tx?.content === 'bdat') this.abortTransaction();
      return this.error(chunk.refusal);
    }
    if (!chunk.last) return this.ok(Replies.chunkReceived(chunk.size, this.tx?.failure !== undefined));
    return this.finishMessage(false);
  }

  /** The end of the message: the MTA's verdict is the client's reply. */
  private async finishMessage(lineTooLong: boolean): Promise<void> {
    const tx = this.tx;
    if (tx === undefined) return;
    this.tx = undefined;
    if (tx.failure === undefined && lineTooLong) {
      tx.failure = { reply: Replies.messageLineTooLong, reason: 'line_too_long' };
    }
    if (tx.failure !== undefined) {
      tx.out.destroy();
      submissionMessages.inc({ result: 'rejected', reason: tx.failure.reason });
      return this.error(tx.failure.reply);
    }
    let answer: SmtpReply;
    try {
      answer = await tx.out.endContent();
    } catch (err) {
      tx.out.destroy();
      submissionMessages.inc({ result: 'rejected', reason: 'upstream_unavailable' });
      return this.upstreamFailed(err);
    }
    if (tx.conn !== undefined) this.deps.pool.release(tx.conn, true);
    const accepted = answer.code < 300;
    submissionMessages.inc({ result: accepted ? 'accepted' : 'rejected', reason: accepted ? 'none' : 'upstream' });
    if (tx.conn !== undefined) bytesTotal.inc({ protocol: 'submission', direction: 'upstream_out' }, tx.size);
    const outcome = !accepted ? 'message refused upstream' : tx.releaseAt !== undefined ? 'message held' : 'message relayed';
    this.log.info({ id: tx.id, size: tx.size, recipients: tx.accepted.length, code: answer.code }, outcome);
    return this.relayReply(answer);
  }

  // ---- replies ----------------------------------------------------------------------

  private relayReply(answer: SmtpReply): undefined {
    if (answer.code >= 400) this.countError();
    else this.errors = 0;
    this.send(reply(answer.code, answer.enhanced, answer.lines.length > 0 ? answer.lines : ['']));
    return undefined;
  }

  /**
   * The one place a store failure becomes a reply: whatever needed the store (a BURL's
   * access key, XCANCEL, a held message's commit) failed for now, and the transaction with
   * it, so the client keeps the message and tries again (RFC 3463 X.3.0, temporary).
   * Said once per outage by store/availability.ts, not per session. Other errors go on.
   */
  private storeFailed(err: unknown): undefined {
    if (!isStoreUnavailable(err)) throw err;
    this.abortTransaction();
    return this.error(Replies.storeUnavailable);
  }

  private upstreamFailed(err: unknown): undefined {
    if (!(err instanceof UpstreamUnavailable)) throw err;
    this.log.warn({ err: err.message }, 'upstream MTA unavailable');
    return this.error(Replies.mtaUnavailable);
  }

  private ok(r: Reply): undefined {
    this.errors = 0;
    this.send(formatReply(r));
    return undefined;
  }

  private error(r: Reply): undefined {
    this.send(formatReply(r));
    this.countError();
    return undefined;
  }

  private countError(): void {
    if (++this.errors >= this.config.submission.limits.maxErrors) {
      this.abortTransaction();
      this.close(formatReply(Replies.tooManyErrors(this.config.hostname)));
    }
  }

  /**
   * A reply that comes later (the MTA's verdict on a pipelined MAIL or RCPT): its place
   * among the replies is taken now; onReply / onError make its text when the MTA answers.
   */
  private owe(verdict: Promise<SmtpReply>, onReply: (answer: SmtpReply) => undefined, onError: (err: unknown) => undefined): void {
    const slot: { text?: string; after?: () => void } = {};
    this.slots.push(slot);
    const inSlot = (make: () => undefined) => () => {
      this.filling = slot;
      try {
        make();
      } finally {
        this.filling = undefined;
      }
    };
    const done = verdict
      .then(
        (answer) => inSlot(() => onReply(answer))(),
        (err: unknown) => inSlot(() => onError(err))(),
      )
      .catch((err: unknown) => {
        this.log.error({ err: (err as Error).stack }, 'submission reply failed');
        this.abortTransaction();
        this.close(formatReply(Replies.internalError(this.config.hostname)));
      })
      .finally(() => {
        // A verdict that made no reply (the session closed meanwhile) frees its place.
        slot.text ??= '';
        this.flushSlots();
      });
    this.owed = Promise.all([this.owed, done]).then(() => undefined);
  }

  private flushSlots(): void {
    while (this.slots.length > 0 && this.slots[0]!.text !== undefined) {
      const slot = this.slots.shift()!;
      if (slot.text !== '') this.write(slot.text!);
      slot.after?.();
    }
  }

  private send(text: string): void {
    if (this.filling !== undefined) {
      const slot = this.filling;
      this.filling = undefined;
      slot.text = text;
      return this.flushSlots();
    }
    if (this.slots.length > 0) {
      this.slots.push({ text });
      return;
    }
    this.write(text);
  }

  private write(text: string): void {
    if (this.closed || this.client.destroyed) return;
    bytesTotal.inc({ protocol: 'submission', direction: 'client_out' }, text.length);
    this.client.write(text);
  }

  // ---- lifecycle --------------------------------------------------------------------

  /** Drops the transaction; an upstream connection mid-content cannot be reused. */
  private abortTransaction(): void {
    const tx = this.tx;
    this.tx = undefined;
    if (tx === undefined) return;
    if (tx.content !== undefined || tx.failure !== undefined) {
      tx.out.destroy();
      return;
    }
    const conn = tx.conn;
    if (conn === undefined) return;
    conn.rset().then(
      (r) => this.deps.pool.release(conn, r.code < 300),
      () => conn.destroy(),
    );
  }

  private armTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    const t = this.config.submission.timeouts;
    const inContent = this.tx?.content !== undefined || this.chunk !== undefined;
    const seconds = inContent ? t.dataSeconds : t.commandSeconds;
    this.timer = setTimeout(() => {
      this.log.info('timeout');
      this.abortTransaction();
      // RFC 5321 §4.5.3.2: the server may close after its timeout with 421.
      this.close(formatReply(Replies.timeout(this.config.hostname)));
    }, seconds * 1000);
    this.timer.unref();
  }

  /** Sends a last reply and closes (421 or 221). */
  close(last: string): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    const finish = () => {
      this.write(last);
      this.client.end();
      const socket = this.client;
      setTimeout(() => socket.destroy(), 2000).unref();
      this.teardown();
    };
    // Replies still owed go out first (a pipelined QUIT gets its 221 last).
    if (this.slots.length > 0) this.slots.push({ text: '', after: finish });
    else finish();
  }

  /** close() was called; the last reply waits for the ones owed before it. */
  private closing = false;

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    clearTimeout(this.preAuthTimer);
    this.abortTransaction();
    sessionsOpen.dec({ protocol: 'submission' });
    this.log.debug('session closed');
    this.deps.onClose(this);
  }
}

function syntaxText(err: unknown, fallback: string): string {
  if (err instanceof SmtpSyntaxError) return `Syntax error: ${err.message.slice(0, 100)}`;
  if (err instanceof Error) throw err;
  return fallback;
}

/** RFC 5321 §3.8: 421 to a client when the server shuts down; RFC 3463 X.3.2 system not accepting messages. */
export function shutdownReply(hostname: string): string {
  return formatReply(Replies.shuttingDown(hostname));
}
