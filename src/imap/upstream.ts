/**
 * The session's own connection to the upstream IMAP server.
 *
 * Two modes. Before the client is authenticated the gateway talks to the upstream itself
 * ("internal" mode: greeting, optional STARTTLS, LOGIN / AUTHENTICATE, CAPABILITY), reading
 * whole responses. After login the connection is handed to the session's relay, which
 * receives the raw lexer events and forwards them to the client as they arrive, so FETCH
 * literals stream without being held in memory.
 */
import type net from 'node:net';
import { ImapLexer, type LexEvent } from './protocol/lexer.js';
import { EchoWatch, unguessableTagPrefix, type LiteralEcho } from './protocol/echo.js';
import { sendGated } from './protocol/gated-literals.js';
import { CommandCollector, parseSegments, parseResponseHead, type ParsedLine, type ResponseHead } from './protocol/parser.js';
import { parseStatusLine, sentText, STATUS_KINDS } from './protocol/status-line.js';
import { connectSocket, upgradeToTls, UpstreamUnavailable } from '../upstream/connect.js';
import { detachForTls } from '../net/client-socket.js';
import { hasCapability, parseCapabilityList } from './capabilities.js';
import { astringParts, type CommandPart, type TaggedStatus } from './protocol/writer.js';
import type { Credentials } from './credentials.js';
import type { UpstreamConfig } from '../config/schema.js';
import { bytesTotal, upstreamConnectFailures, upstreamConnectionsOpen } from '../metrics/metrics.js';

/**
 * Upstream response lines may be long (SEARCH results of big mailboxes); literals are
 * streamed to the client in relay mode, so only their announced size is bounded.
 */
const UPSTREAM_LIMITS = { maxLineLength: 64 * 1024 * 1024, maxLiteralSize: Number.MAX_SAFE_INTEGER };
/** What the gateway buffers of one upstream response to a command of its own. */
const MAX_INTERNAL_RESPONSE = 1024 * 1024;
/** Upstream responses to gateway-internal commands must come within this time. */
const INTERNAL_COMMAND_TIMEOUT_MS = 30_000;

export interface TaggedResult {
  status: TaggedStatus;
  /** The bracketed response code without brackets, e.g. "CAPABILITY IMAP4rev1 ...". */
  code?: string;
  /** Human-readable text after the status and code. */
  text: string;
  /** Untagged responses seen while the command ran. */
  untagged: ParsedLine[];
  /** Response codes of untagged status responses seen meanwhile ("UIDVALIDITY 42", ...). */
  codes: string[];
}

/**
 * Where the bytes of one response literal go instead of memory (a FETCH of a 10 MB part
 * for CATENATE or URLFETCH). write() returning false pauses the upstream until the
 * sink's drain.
 */
export interface LiteralSink {
  write(chunk: Buffer): boolean;
  onceDrain(fn: () => void): void;
  end(): void;
}

export interface CommandOptions {
  /** The line to send when the server asks for more (a SASL response, RFC 3501 §6.2.2). */
  saslResponse?: string;
  /**
   * Called for each literal in an untagged response to this command, with the response's
   * text up to the literal and the literal's size; a sink returned takes its bytes (the
   * parsed response then shows an empty string in its place).
   */
  literalSink?(announcedBy: Buffer, size: number): LiteralSink | undefined;
  /**
   * Sees each parsed untagged response (not status responses) as it arrives; returning
   * true consumes it, so a command with a response per message (UID FETCH 1:* FLAGS over
   * 50,000 messages) is read as a stream instead of collected in `untagged`.
   */
  onUntagged?(line: ParsedLine): boolean;
}

export interface RelayHandler {
  onEvent(event: LexEvent): void;
  onClose(error?: Error): void;
}

interface PendingInternal {
  tag: string;
  untagged: ParsedLine[];
  codes: string[];
  resolve(result: TaggedResult): void;
  reject(err: Error): void;
  /** Set while a synchronizing literal waits for the server's "+": true at "+", false when the command is answered first. */
  continuation?: (go: boolean) => void;
  /** The line to send when the server asks for more (a SASL response, RFC 3501 §6.2.2). */
  saslResponse?: string;
  literalSink?: CommandOptions['literalSink'];
  onUntagged?: CommandOptions['onUntagged'];
  /** Restarts the no-progress timer. */
  touch(): void;
}

export class UpstreamConnection {
  /** Latest capability list the upstream showed (greeting, CAPABILITY, or a response code). */
  capabilities: string[] = [];
  greetingCapabilities: string[] | undefined;
  /** Literals sent with a line break, which the answer to their command may echo (protocol/echo.ts). */
  private readonly echoes = new EchoWatch();
  private readonly lexer = new ImapLexer(UPSTREAM_LIMITS, this.echoes.check);
  /** Whole responses to the gateway's own commands, bounded. */
  private readonly collector = new CommandCollector({ maxLiteralBytes: MAX_INTERNAL_RESPONSE, maxTextBytes: MAX_INTERNAL_RESPONSE });
  private pending: PendingInternal | undefined;
  private relay: RelayHandler | undefined;
  private nextTag = 1;
  private readonly tagPrefix = unguessableTagPrefix();
  private closed = false;
  private greetingWaiter: ((greeting: ResponseHead) => void) | undefined;
  private closeError: Error | undefined;

  private constructor(
    private socket: net.Socket,
    private readonly cfg: UpstreamConfig,
  ) {
    upstreamConnectionsOpen.inc({ protocol: 'imap' });
    this.attach(socket);
  }

  /** Connect, read the greeting, negotiate STARTTLS if configured, learn the capabilities. */
  static async open(cfg: UpstreamConfig): Promise<UpstreamConnection> {
    let socket: net.Socket;
    try {
      socket = await connectSocket(cfg);
    } catch (err) {
      const reason = err instanceof UpstreamUnavailable ? err.reason : 'other';
      upstreamConnectFailures.inc({ protocol: 'imap', reason });
      throw err;
    }
    const conn = new UpstreamConnection(socket, cfg);
    try {
      await conn.handshake();
      return conn;
    } catch (err) {
      conn.destroy();
      const reason = err instanceof UpstreamUnavailable ? err.reason : 'other';
      upstreamConnectFailures.inc({ protocol: 'imap', reason });
      throw err instanceof UpstreamUnavailable ? err : new UpstreamUnavailable('other', (err as Error).message);
    }
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      bytesTotal.inc({ protocol: 'imap', direction: 'upstream_in' }, chunk.length);
      this.onData(chunk);
    });
    socket.on('error', (err) => {
      this.closeError = err;
    });
    socket.on('close', () => this.onClose());
  }

  private async handshake(): Promise<void> {
    const greeting = await this.waitForGreeting();
    const kind = greeting.kind;
    if (kind !== 'OK') {
      // PREAUTH would log every client in as one user; BYE means the server refuses us.
      throw new UpstreamUnavailable('other', `upstream greeting was ${kind}, not OK`);
    }
    this.learnFromCode(greeting);
    this.greetingCapabilities = this.capabilities.length > 0 ? [...this.capabilities] : undefined;
    if (this.cfg.tls === 'starttls') {
      if (this.capabilities.length === 0) await this.refreshCapabilities();
      if (!hasCapability(this.capabilities, 'STARTTLS')) {
        throw new UpstreamUnavailable('tls', 'upstream does not advertise STARTTLS');
      }
      const result = await this.command(['STARTTLS']);
      if (result.status !== 'OK') throw new UpstreamUnavailable('tls', `upstream STARTTLS: ${result.text}`);
      detachForTls(this.socket);
      this.lexer.reset();
      this.socket = await upgradeToTls(this.socket, this.cfg);
      this.attach(this.socket);
      // RFC 3501 §6.2.1: capabilities learned before TLS must be discarded.
      this.capabilities = [];
    }
    if (this.capabilities.length === 0) await this.refreshCapabilities();
  }

  private waitForGreeting(): Promise<ResponseHead> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.greetingWaiter = undefined;
        reject(new UpstreamUnavailable('timeout', 'no greeting from upstream'));
      }, this.cfg.connectTimeoutMs);
      this.greetingWaiter = (greeting) => {
        clearTimeout(timer);
        this.greetingWaiter = undefined;
        this.pendingCloseHandler = undefined;
        resolve(greeting);
      };
      this.pendingCloseHandler = () => {
        clearTimeout(timer);
        reject(new UpstreamUnavailable('closed', 'upstream closed before its greeting'));
      };
    });
  }

  private pendingCloseHandler: (() => void) | undefined;
  /** The latest response segment, held back while it may announce a literal for a sink. */
  private heldText: Buffer | undefined;
  /** Whether the response being read is untagged (known from its first segment). */
  private heldIsUntagged: boolean | undefined;
  /** Takes the bytes of the literal being read, instead of the collector. */
  private sink: LiteralSink | undefined;

  async refreshCapabilities(): Promise<string[]> {
    const result = await this.command(['CAPABILITY']);
    if (result.status !== 'OK') throw new UpstreamUnavailable('other', `upstream CAPABILITY failed: ${result.text}`);
    return this.capabilities;
  }

  has(capability: string): boolean {
    return hasCapability(this.capabilities, capability);
  }

  /**
   * Runs one gateway-internal command and resolves with its tagged result. It fails with
   * UpstreamUnavailable when the upstream goes quiet for INTERNAL_COMMAND_TIMEOUT_MS (a
   * long streamed literal that keeps moving is not a timeout).
   */
  command(parts: CommandPart[], opts: CommandOptions = {}): Promise<TaggedResult> {
    if (this.closed) return Promise.reject(new UpstreamUnavailable('closed', 'upstream connection closed'));
    if (this.pending) return Promise.reject(new Error('internal command already in progress'));
    const tag = `${this.tagPrefix}G${this.nextTag++}`;
    return new Promise<TaggedResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const touch = () => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          this.failPending(new UpstreamUnavailable('timeout', 'upstream did not answer in time'));
          this.destroy();
        }, INTERNAL_COMMAND_TIMEOUT_MS);
      };
      touch();
      this.pending = {
        tag,
        untagged: [],
        codes: [],
        saslResponse: opts.saslResponse,
        literalSink: opts.literalSink,
        onUntagged: opts.onUntagged,
        touch,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      void this.sendParts(tag, parts);
    });
  }

  /** The command's pieces, each literal after the upstream's "+" (protocol/gated-literals.ts). */
  private sendParts(tag: string, parts: CommandPart[]): Promise<void> {
    const pieces = parts.map((part) => (typeof part === 'string' ? { text: Buffer.from(part) } : { literal: part.literal, binary: false }));
    return sendGated(tag, pieces, {
      // Once the command is answered (or failed), nothing more of it is sent.
      write: (data) => {
        if (this.pending?.tag === tag) this.write(data);
      },
      goAhead: () => {
        const pending = this.pending;
        if (pending?.tag !== tag) return Promise.resolve(false);
        return new Promise<boolean>((resolve) => (pending.continuation = resolve));
      },
      expectEcho: (echo) => this.expectEcho(tag, echo),
    });
  }

  /** The answer to command `tag` may quote this literal back, line breaks and all. */
  expectEcho(tag: string, echo: LiteralEcho): void {
    this.echoes.expect(tag, echo);
  }

  write(data: Buffer): boolean {
    if (this.closed) return false;
    bytesTotal.inc({ protocol: 'imap', direction: 'upstream_out' }, data.length);
    return this.socket.write(data);
  }

  /** Hands every further upstream byte to the session's relay. */
  startRelay(handler: RelayHandler): void {
    this.relay = handler;
  }

  /**
   * Back to internal mode (the session that relayed is gone and the connection is kept
   * warm): only between responses, when nothing of the relay is half-read.
   */
  stopRelay(): void {
    this.relay = undefined;
    this.collector.reset();
    this.socket.resume();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  onceDrain(fn: () => void): void {
    this.socket.once('drain', fn);
  }

  isClosed(): boolean {
    return this.closed;
  }

  /** Calls fn once the connection is closed (at once if it is). */
  whenClosed(fn: () => void): void {
    if (this.closed) fn();
    else this.socket.once('close', fn);
  }

  /** A gateway-internal command is still waiting for its tagged response. */
  get busy(): boolean {
    return this.pending !== undefined;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Polite close of the socket: FIN now, destroyed 2 s later if the upstream has not
   * closed its side. No LOGOUT is sent: the upstream ends the IMAP session on the close.
   */
  end(): void {
    if (this.closed) return;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private onData(chunk: Buffer): void {
    const events = this.lexer.push(chunk);
    if (this.relay) {
      for (const ev of events) this.relay.onEvent(ev);
      return;
    }
    for (const ev of events) this.collect(ev);
  }

  /** Internal mode: assemble whole responses (literals a sink takes stream past). */
  private collect(ev: LexEvent): void {
    const pending = this.pending;
    pending?.touch();
    if (pending?.literalSink !== undefined || this.heldText !== undefined) {
      // A segment is held until it is known whether a sink takes the literal it announces.
      if (ev.type === 'text') {
        this.flushHeld();
        // The first segment of a response says whether it is untagged ("* ...").
        this.heldIsUntagged ??= ev.data[0] === 0x2a;
        this.heldText = ev.data;
        return;
      }
      if (ev.type === 'literal-start' && this.heldText !== undefined && this.heldIsUntagged && pending?.literalSink) {
        this.sink = pending.literalSink(this.heldText, ev.size);
        if (this.sink) {
          // The parsed response shows an empty string where the streamed literal was.
          this.heldText = Buffer.from(this.heldText.toString('latin1').replace(/\{\d+\+?\}\r?\n$/, '{0}\r\n'), 'latin1');
          ev = { ...ev, size: 0 };
        }
      }
      this.flushHeld();
      if (ev.type === 'literal-data' && this.sink) {
        if (!this.sink.write(ev.data)) {
          this.socket.pause();
          this.sink.onceDrain(() => this.socket.resume());
        }
        return;
      }
      if (ev.type === 'literal-end' && this.sink) {
        this.sink.end();
        this.sink = undefined;
      }
      if (ev.type === 'end') this.heldIsUntagged = undefined;
    }
    this.collectOne(ev);
  }

  private flushHeld(): void {
    const held = this.heldText;
    if (held === undefined) return;
    this.heldText = undefined;
    this.collectOne({ type: 'text', data: held });
  }

  private collectOne(ev: LexEvent): void {
    const out = this.collector.push(ev);
    if (out === undefined || out.type === 'continue') return;
    if (out.type === 'error') {
      this.failPending(new UpstreamUnavailable('other', `unusable upstream response (${out.code})`));
      this.destroy();
      return;
    }
    this.onResponse(out.segments, out.literals);
  }

  private onResponse(segments: Buffer[], literals: Buffer[]): void {
    const first = segments[0];
    if (first === undefined) return;
    // Status responses carry free text that need not parse as IMAP values: read only their head.
    const head = parseResponseHead(first);
    if (head.tag === '+') {
      const pending = this.pending;
      if (!pending) return;
      if (pending.continuation) {
        const cont = pending.continuation;
        pending.continuation = undefined;
        return cont(true);
      }
      // A second challenge means the server did not like our response: cancel (RFC 3501 §6.2.2).
      const answer = pending.saslResponse ?? '*';
      pending.saslResponse = '*';
      this.write(Buffer.from(`${answer}\r\n`));
      return;
    }
    if (this.greetingWaiter) return this.greetingWaiter(head);
    this.learnFromCode(head);
    if (head.tag === '*') {
      if (head.kind === 'CAPABILITY') {
        this.capabilities = parseCapabilityList(first.toString('latin1').replace(/^\* CAPABILITY\s*/i, ''));
      }
      if (this.pending && STATUS_KINDS.has(head.kind) && head.code) this.pending.codes.push(head.code.raw);
      if (this.pending && !STATUS_KINDS.has(head.kind)) {
        try {
          const line = parseSegments(segments, literals);
          if (this.pending.onUntagged?.(line) !== true) this.pending.untagged.push(line);
        } catch {
          // An untagged response we cannot read is not one our own commands need.
        }
      }
      return;
    }
    const pending = this.pending;
    if (!pending || pending.tag !== head.tag) return;
    this.pending = undefined;
    pending.continuation?.(false);
    const parsed = parseStatusLine(first);
    // Anything but OK or NO (a tagged BYE, a line that is no status) failed as BAD would.
    const status: TaggedStatus = parsed?.status === 'OK' || parsed?.status === 'NO' ? parsed.status : 'BAD';
    const text = parsed !== undefined ? sentText(parsed.text) : first.toString('utf8', head.tag.length + 1).replace(/\r?\n$/, '');
    pending.resolve({ status, code: parsed?.code, text, untagged: pending.untagged, codes: pending.codes });
  }

  /** A [CAPABILITY ...] response code on any status response updates what we know. */
  private learnFromCode(head: ResponseHead): void {
    if (head.code?.name.toUpperCase() !== 'CAPABILITY') return;
    this.capabilities = parseCapabilityList(head.code.raw.replace(/^CAPABILITY\s*/i, ''));
  }

  private failPending(err: Error): void {
    const p = this.pending;
    this.pending = undefined;
    p?.continuation?.(false);
    p?.reject(err);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    upstreamConnectionsOpen.dec({ protocol: 'imap' });
    this.pendingCloseHandler?.();
    this.sink = undefined;
    this.failPending(new UpstreamUnavailable('closed', 'upstream closed the connection'));
    this.relay?.onClose(this.closeError);
  }
}

/** Logs the client's credentials in upstream: SASL PLAIN when offered (needed for an authzid), else LOGIN. */
export async function loginUpstream(upstream: UpstreamConnection, creds: Credentials): Promise<TaggedResult> {
  if (upstream.has('AUTH=PLAIN')) {
    const ir = Buffer.from(`${creds.authzid ?? ''}\0${creds.user}\0${creds.password}`, 'utf8').toString('base64');
    if (upstream.has('SASL-IR')) return upstream.command([`AUTHENTICATE PLAIN ${ir}`]);
    return upstream.command(['AUTHENTICATE PLAIN'], { saslResponse: ir });
  }
  if (creds.authzid !== undefined || upstream.has('LOGINDISABLED')) {
    return { status: 'NO', code: 'CANNOT', text: 'Upstream cannot log in this way', untagged: [], codes: [] };
  }
  return upstream.command(['LOGIN ', ...astringParts(creds.user), ' ', ...astringParts(creds.password)]);
}
