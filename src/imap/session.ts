/**
 * One client IMAP session: the state machine of RFC 3501 §3 on the client side, and the
 * relay between the client and its own upstream connection once authenticated.
 *
 * Commands the gateway answers itself are collected whole (with a small bound on their
 * literals) and handed to a handler in commands/. Every other command is streamed to the
 * upstream as it arrives, with its tag replaced, so a 50 MB APPEND never sits in memory;
 * the upstream's responses stream back the same way. Responses the gateway makes itself
 * are queued while an upstream response is half-written, so the two never interleave.
 */
import net from 'node:net';
import type { Readable } from 'node:stream';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Config, ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';
import { ImapLexer, framingFault, parseAnnouncement, type LexEvent } from './protocol/lexer.js';
import { CommandCollector, parseSegments, type ParsedLine } from './protocol/parser.js';
import { advertisedCapabilities } from './capabilities.js';
import { commandSpec, upstreamSupports, validInState, type SessionState } from './commands/registry.js';
import { preAuthHandlers, postAuthHandlers, relayChecks, relayHooks, streamedCommands, type RelayCheck } from './commands/index.js';
import type { CommandContext, CommandHandler, ResponseRewrite } from './commands/context.js';
import type { Credentials } from './credentials.js';
import { UpstreamConnection, loginUpstream, type TaggedResult } from './upstream.js';
import type { CapabilityCache } from './capability-cache.js';
import type { Lemonade } from '../lemonade/services.js';
import { CatenateCommand, catenateStart, type CatenateHost, type CatenateStart } from './commands/catenate.js';
import { commandFinished } from './commands/command-log.js';
import { isStoreUnavailable, STORE_UNAVAILABLE_TEXT } from '../store/availability.js';
import { continuation, splitAtLiterals, tagged, untagged, untaggedStatus, type TaggedStatus } from './protocol/writer.js';
import { LiteralEchoTracker } from './protocol/echo.js';
import { sendGated } from './protocol/gated-literals.js';
import { commandHead, guessTag, rewriteLiteralAnnouncement } from './protocol/command-line.js';
import { CondstoreSession } from '../lemonade/qresync/session-state.js';
import { parkUpstream } from './warm-upstreams.js';
import { UpstreamRelay, type InFlight, type RelayHost } from './relay.js';
import {
  bytesTotal,
  imapAuthTotal,
  malformedCommands,
  sessionsOpen,
  sessionsTotal,
} from '../metrics/metrics.js';
import { plaintextAuthAllowed, startServerTls } from '../net/client-socket.js';

/** Commands intercepted only in a CONDSTORE session or when they enable CONDSTORE. */
const CONDSTORE_ON_DEMAND = new Set(['FETCH', 'UID FETCH', 'STORE', 'UID STORE', 'SEARCH', 'UID SEARCH']);

/** The BYE text of a shutdown (drain and the end of the grace time). */
export const SHUTDOWN_TEXT = 'Server shutting down';

/** The continuation request before a client's literal (RFC 3501 §7.5). */
const READY_FOR_LITERAL = 'Ready for literal data';

/** Failed logins are answered only after this delay, to slow down password guessing. */
const AUTH_FAILURE_DELAY_MS = 1000;

/**
 * While a session's input is held (a command waits for a lock, the upstream's "+", a
 * handler), its client socket is still read up to this many bytes, so that a client
 * leaving (FIN) is noticed and the session ends, giving back what it holds or waits for.
 * Beyond it the socket is paused: a held session buffers no more than this.
 */
const CLIENT_READ_AHEAD = 64 * 1024;

function eventBytes(ev: LexEvent): number {
  return ev.type === 'text' || ev.type === 'literal-data' ? ev.data.length : 0;
}

export interface SessionDeps {
  config: Config;
  listener: ListenerConfig;
  tls: TlsContextHolder;
  capabilityCache: CapabilityCache;
  lemonade: Lemonade;
  log: Logger;
  onClose(session: ImapSession): void;
}

type Mode =
  /** Streaming the command to the upstream. */
  | { kind: 'relay'; clientTag: string; upTag: string; pendingText?: Buffer; sentAny: boolean; echo?: LiteralEchoTracker; check?: RelayCheck }
  /** Collecting the whole command for a local handler. */
  | { kind: 'collect'; tag: string; name: string }
  /** Dropping the rest of a command that was already answered. */
  | { kind: 'discard' }
  /** The client's answer to a continuation request (AUTHENTICATE). */
  | { kind: 'continuation'; segments: Buffer[] }
  /** An APPEND with CATENATE being assembled by the gateway (RFC 4469). */
  | { kind: 'catenate'; command: CatenateCommand };

export class ImapSession implements CommandContext {
  readonly id = randomBytes(6).toString('hex');
  /** Carries the session id on every line, and the user once logged in. */
  log: Logger;
  readonly config: Config;
  readonly listener: ListenerConfig;
  state: SessionState = 'not-authenticated';
  tlsActive: boolean;
  upstream: UpstreamConnection | undefined;
  /** CONDSTORE/QRESYNC state while the gateway emulates them (RFC 7162). */
  readonly condstore = new CondstoreSession();
  private client: net.Socket;
  private readonly lexer: ImapLexer;
  /** Gathers commands the gateway answers itself, within maxBufferedLiteral. */
  private readonly collector: CommandCollector;
  private queue: LexEvent[] = [];
  private mode: Mode | undefined;
  /** Reasons the client's input is not being processed; the socket is paused while any holds. */
  private readonly holds = new Set<string>();
  /** The upstream → client direction, and the commands in flight upstream (relay.ts). */
  private readonly relay: UpstreamRelay;
  /** Bytes lexed from the client but not yet processed (a held session keeps reading, within CLIENT_READ_AHEAD). */
  private queuedBytes = 0;
  /** Commands started before login, bounded by imap.limits.maxCommandsBeforeLogin. */
  private commandsBeforeLogin = 0;
  private readonly endedController = new AbortController();
  private continuationWaiter: ((line: string) => void) | undefined;
  private badInARow = 0;
  /** Status of the last tagged response the gateway made itself, for the command metrics. */
  private lastLocalStatus: 'OK' | 'NO' | 'BAD' | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private user: string | undefined;
  /** Finds this session's upstream connection again after the client vanished (warm-upstreams.ts). */
  private warmKey: string | undefined;
  private endedHere = false;

  constructor(
    socket: net.Socket,
    private readonly deps: SessionDeps,
  ) {
    this.config = deps.config;
    this.listener = deps.listener;
    this.tlsActive = socket instanceof tls.TLSSocket;
    this.client = socket;
    this.log = deps.log.child({ session: this.id, protocol: 'imap', remote: socket.remoteAddress });
    const limits = deps.config.imap.limits;
    this.lexer = new ImapLexer({ maxLineLength: limits.maxLineLength, maxLiteralSize: limits.maxLiteralSize });
    this.collector = new CommandCollector({
      maxLiteralBytes: limits.maxBufferedLiteral,
      maxTextBytes: limits.maxLineLength + limits.maxBufferedLiteral,
      lexer: this.lexer,
    });
    this.relay = new UpstreamRelay(this.relayHost());
    sessionsOpen.inc({ protocol: 'imap' });
    sessionsTotal.inc({ protocol: 'imap', listener_tls: deps.listener.tls });
    this.attachClient(socket);
    this.armTimer();
    this.relay.writeLocal(untaggedStatus('OK', 'lemonade-gateway ready', `CAPABILITY ${this.capabilities().join(' ')}`));
    this.log.debug('session open');
  }

  // ---- CommandContext -------------------------------------------------------------

  get plaintextAllowed(): boolean {
    return plaintextAuthAllowed(this.tlsActive, this.listener, this.client.remoteAddress);
  }

  capabilities(): string[] {
    const preAuth = this.state === 'not-authenticated';
    const upstreamCaps = preAuth || !this.upstream ? this.deps.capabilityCache.preAuth() : this.upstream.capabilities;
    return advertisedCapabilities(upstreamCaps, {
      emulated: this.deps.lemonade.emulated(upstreamCaps),
      preAuth,
      tlsActive: this.tlsActive,
      starttlsOffered: this.listener.tls === 'starttls',
      plaintextAllowed: this.plaintextAllowed,
    });
  }

  get lemonade(): Lemonade {
    return this.deps.lemonade;
  }

  get authenticatedUser(): string | undefined {
    return this.user;
  }

  get ended(): AbortSignal {
    return this.endedController.signal;
  }

  untagged(text: string): void {
    this.relay.writeLocal(untagged(text));
  }

  writeData(data: Buffer): boolean {
    if (this.closed || this.client.destroyed) return true;
    bytesTotal.inc({ protocol: 'imap', direction: 'client_out' }, data.length);
    return this.client.write(data);
  }

  clientDrained(): Promise<void> {
    if (this.closed || this.client.destroyed || !this.client.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.client.off('drain', done);
        this.client.off('close', done);
        resolve();
      };
      this.client.on('drain', done);
      this.client.on('close', done);
    });
  }

  tagged(tag: string, status: TaggedStatus, text: string, code?: string): void {
    this.lastLocalStatus = status;
    this.relay.writeLocal(tagged(tag, status, text, code));
    if (status === 'BAD') this.countBad();
    else this.badInARow = 0;
  }

  continuation(text: string): Promise<string> {
    return new Promise((resolve) => {
      this.mode = { kind: 'continuation', segments: [] };
      this.continuationWaiter = resolve;
      this.relay.writeLocal(continuation(text));
      this.release('handler');
    });
  }

  async login(tag: string, creds: Credentials): Promise<void> {
    const warm = this.deps.lemonade.warmUpstreams;
    const warmKey = warm.enabled ? warm.key(creds) : undefined;
    const parked = warmKey === undefined ? undefined : warm.take(warmKey);
    if (parked !== undefined) {
      // The same credentials logged this connection in a moment ago (warm-upstreams.ts).
      imapAuthTotal.inc({ mechanism: creds.mechanism, result: 'ok' });
      if (this.closed) return warm.park(warmKey!, parked);
      return this.loggedIn(tag, parked, creds, warmKey, true);
    }
    let upstream: UpstreamConnection;
    try {
      upstream = await UpstreamConnection.open(this.config.imap.upstream);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'upstream unavailable at login');
      // RFC 5530 UNAVAILABLE: a temporary failure, try again later.
      return this.tagged(tag, 'NO', 'Upstream server unavailable, try again later', 'UNAVAILABLE');
    }
    if (this.closed) return upstream.destroy();
    this.deps.capabilityCache.observe(upstream.capabilities);
    let result: TaggedResult;
    try {
      result = await loginUpstream(upstream, creds);
    } catch (err) {
      upstream.destroy();
      this.log.warn({ err: (err as Error).message }, 'upstream failed during login');
      return this.tagged(tag, 'NO', 'Upstream server unavailable, try again later', 'UNAVAILABLE');
    }
    imapAuthTotal.inc({ mechanism: creds.mechanism, result: result.status === 'OK' ? 'ok' : 'no' });
    if (result.status !== 'OK') {
      upstream.end();
      this.log.info({ user: creds.user }, 'login failed');
      await new Promise((r) => setTimeout(r, AUTH_FAILURE_DELAY_MS));
      const code = result.code?.split(' ')[0]?.toUpperCase() ?? 'AUTHENTICATIONFAILED';
      return this.tagged(tag, 'NO', 'Authentication failed', code === 'CAPABILITY' ? 'AUTHENTICATIONFAILED' : code);
    }
    if (result.code?.toUpperCase().startsWith('CAPABILITY ') !== true) {
      try {
        await upstream.refreshCapabilities();
      } catch {
        upstream.destroy();
        return this.tagged(tag, 'NO', 'Upstream server unavailable, try again later', 'UNAVAILABLE');
      }
    }
    if (this.closed) return upstream.end();
    this.loggedIn(tag, upstream, creds, warmKey);
  }

  /** The session is authenticated over upstream: relay from now on. */
  private loggedIn(tag: string, upstream: UpstreamConnection, creds: Credentials, warmKey: string | undefined, warm = false): void {
    this.upstream = upstream;
    this.warmKey = warmKey;
    this.state = 'authenticated';
    this.user = creds.authzid ?? creds.user;
    this.log.info({ user: this.user, mechanism: creds.mechanism, warmUpstream: warm }, 'logged in');
    this.log = this.log.child({ user: this.user });
    this.relay.start(upstream, (err) => this.onUpstreamClose(err));
    this.armTimer();
    this.tagged(tag, 'OK', 'Logged in', `CAPABILITY ${this.capabilities().join(' ')}`);
  }

  async startTls(tag: string): Promise<void> {
    this.tagged(tag, 'OK', 'Begin TLS negotiation now');
    // RFC 3501 §6.2.1 / RFC 2595 §3.1: anything the client pipelined after STARTTLS is
    // plaintext injected before TLS and must be dropped (CVE-2011-0411 style).
    this.queue = [];
    this.queuedBytes = 0;
    this.lexer.reset();
    const { secure, settled } = startServerTls(this.client, this.deps.tls.context());
    this.client = secure;
    this.tlsActive = true;
    this.attachClient(secure);
    await settled;
  }

  setSelected(selected: boolean): void {
    this.state = selected ? 'selected' : 'authenticated';
    if (!selected) this.condstore.deselect();
  }

  logout(tag: string): void {
    this.state = 'logout';
    this.untagged('BYE Logging out');
    this.tagged(tag, 'OK', 'Logout completed');
    this.closeClient();
  }

  // ---- client side ----------------------------------------------------------------

  private attachClient(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => this.onClientData(chunk));
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'client socket error'));
    socket.on('close', () => this.onClientClose());
  }

  private onClientData(chunk: Buffer): void {
    bytesTotal.inc({ protocol: 'imap', direction: 'client_in' }, chunk.length);
    // RFC 3501 §5.4 autologout counts inactivity once logged in; before that the limit is
    // a deadline from connect (armed once in the constructor), whatever the client sends.
    if (this.state !== 'not-authenticated') this.armTimer();
    for (const ev of this.lexer.push(chunk)) {
      this.queue.push(ev);
      this.queuedBytes += eventBytes(ev);
    }
    // pump() also pauses the client once the read-ahead is full and a hold keeps it queued.
    this.pump();
  }

  /** Stops processing the client's input (it is still read, within CLIENT_READ_AHEAD) until release(reason). */
  private hold(reason: string): void {
    this.holds.add(reason);
  }

  private release(reason: string): void {
    this.holds.delete(reason);
    if (this.holds.size === 0 && !this.closed) {
      this.pump();
      if (this.client.isPaused() && this.queuedBytes < CLIENT_READ_AHEAD) this.client.resume();
    }
  }

  private pump(): void {
    while (this.holds.size === 0 && !this.closed) {
      const ev = this.queue.shift();
      if (ev === undefined) break;
      this.queuedBytes -= eventBytes(ev);
      this.handleClientEvent(ev);
    }
    if (this.holds.size > 0 && this.queuedBytes >= CLIENT_READ_AHEAD && !this.closed) this.client.pause();
  }

  private handleClientEvent(ev: LexEvent): void {
    const mode = this.mode;
    if (mode === undefined) return this.startCommand(ev);
    switch (mode.kind) {
      case 'relay':
        return this.relayClientEvent(mode, ev);
      case 'collect':
        return this.collectClientEvent(mode, ev);
      case 'catenate':
        // A non-synchronizing literal too large to read leaves no way to find the next command (RFC 7888 §4).
        if (ev.type === 'error' && ev.code === 'literal-too-large' && ev.sync === false) return this.bye('Literal too large');
        return this.waitFor('catenate-event', mode.command.onEvent(ev));
      case 'discard':
        if (ev.type === 'literal-start' && ev.sync) this.lexer.abortLiteral();
        if (ev.type === 'end' || (ev.type === 'literal-start' && ev.sync)) this.mode = undefined;
        return;
      case 'continuation':
        if (ev.type === 'text') mode.segments.push(ev.data);
        else if (ev.type === 'error' || ev.type === 'literal-start') {
          // A SASL response is one line of base64: anything else cancels it.
          if (ev.type === 'literal-start' && ev.sync) this.lexer.abortLiteral();
          this.mode = ev.type === 'literal-start' && !ev.sync ? { kind: 'discard' } : undefined;
          this.finishContinuation('*');
        } else if (ev.type === 'end') {
          this.mode = undefined;
          this.finishContinuation(Buffer.concat(mode.segments).toString('utf8').replace(/\r?\n$/, ''));
        }
        return;
    }
  }

  private finishContinuation(line: string): void {
    const waiter = this.continuationWaiter;
    this.continuationWaiter = undefined;
    this.hold('handler');
    waiter?.(line);
  }

  private startCommand(ev: LexEvent): void {
    if (ev.type === 'error') return this.malformed(ev);
    if (ev.type !== 'text') return; // stray literal events after an aborted command
    if (this.relay.idling) return this.relayDone(ev.data);
    // Shutting down: a command that has not started is not started (RFC 3501 §7.1.5 BYE).
    if (this.draining) return this.bye(SHUTDOWN_TEXT);
    if (this.state === 'not-authenticated' && ++this.commandsBeforeLogin > this.config.imap.limits.maxCommandsBeforeLogin) {
      malformedCommands.inc({ reason: 'state' });
      return this.bye('Too many commands before login');
    }
    const head = commandHead(ev.data);
    if (head === undefined) {
      malformedCommands.inc({ reason: 'syntax' });
      this.tagged(guessTag(ev.data), 'BAD', 'Syntax error: expected tag and command');
      return this.discardRest();
    }
    const spec = commandSpec(head.name);
    if (spec === undefined) {
      malformedCommands.inc({ reason: 'syntax' });
      this.tagged(head.tag, 'BAD', `Unknown command ${head.name.slice(0, 32)}`);
      return this.discardRest();
    }
    if (!validInState(spec, this.state)) {
      malformedCommands.inc({ reason: 'state' });
      this.tagged(head.tag, 'BAD', `${head.name} is not valid in this state`);
      return this.discardRest();
    }
    const upstream = this.state === 'not-authenticated' ? undefined : this.upstream;
    if (upstream === undefined) return this.collect(head, ev);
    if (this.deps.lemonade.intercepts(head.name, upstream.capabilities)) {
      const start = streamedCommands.get(head.name)?.(ev.data);
      if (start !== undefined) return this.startCatenate(start);
    }
    if (this.postAuthHandler(head.name, ev.data) !== undefined) return this.collect(head, ev);
    if (!upstreamSupports(spec, upstream.capabilities)) {
      this.tagged(head.tag, 'BAD', `Unknown command ${head.name}`);
      return this.discardRest();
    }
    // An emulation may change what comes back (commands/index.ts relayHooks); its hook
    // may first have to wait (APPENDUID, for the mailbox's lock).
    const rewrite = relayHooks.get(head.name)?.(this, ev.data);
    if (!(rewrite instanceof Promise)) return this.beginRelay(head, ev, rewrite);
    this.waitFor(
      'relay-hook',
      rewrite.then((r) => {
        // The client left while the hook waited: it gives back what it got, nothing is relayed.
        if (this.closed) return r?.abandon?.();
        this.beginRelay(head, ev, r);
      }),
    );
  }

  /** Gathers the whole command for a handler of the gateway's own. */
  private collect(head: { tag: string; name: string }, ev: LexEvent): void {
    this.mode = { kind: 'collect', tag: head.tag, name: head.name };
    this.collector.reset();
    this.handleClientEvent(ev);
  }

  /** Streams the command to the upstream under a tag of ours. */
  private beginRelay(head: { tag: string; name: string; rest: number }, ev: Extract<LexEvent, { type: 'text' }>, rewrite?: ResponseRewrite): void {
    const upTag = this.relay.newTag('C');
    this.relay.register(upTag, { clientTag: head.tag, command: head.name, started: process.hrtime.bigint(), ...rewrite });
    if (head.name === 'LOGOUT') this.state = 'logout';
    const check = relayChecks.get(head.name)?.(this.upstream?.capabilities ?? []);
    this.mode = { kind: 'relay', clientTag: head.tag, upTag, sentAny: false, check };
    this.relayClientEvent(this.mode, { type: 'text', data: Buffer.concat([Buffer.from(upTag), ev.data.subarray(head.rest)]) });
  }

  /** The gateway's own handler for a command after login: CAPABILITY, and what it emulates. */
  private postAuthHandler(name: string, firstLine: Buffer | undefined): CommandHandler | undefined {
    const handler = postAuthHandlers.get(name);
    if (handler === undefined) return undefined;
    if (name === 'CAPABILITY') return handler;
    if (!this.upstream || !this.deps.lemonade.intercepts(name, this.upstream.capabilities)) return undefined;
    // RFC 7162: FETCH, STORE and SEARCH are the emulation's only in a CONDSTORE session or
    // when they enable it; otherwise they stream through untouched.
    if (CONDSTORE_ON_DEMAND.has(name) && !this.condstore.wants(firstLine ?? Buffer.alloc(0))) return undefined;
    return handler;
  }

  // ---- APPEND CATENATE (RFC 4469) --------------------------------------------------

  private startCatenate(start: CatenateStart): void {
    const command = new CatenateCommand(this.catenateHost(), start);
    this.mode = { kind: 'catenate', command };
    this.waitFor('catenate-event', command.begin());
  }

  /** Holds the client's input until work for the current command is done. */
  private waitFor(reason: string, work: Promise<void> | undefined): void {
    if (work === undefined) return;
    this.hold(reason);
    work
      .catch((err: unknown) => {
        this.log.error({ err: (err as Error).stack }, 'command failed');
        this.bye('Internal error');
      })
      .finally(() => this.release(reason));
  }

  private catenateHost(): CatenateHost {
    return {
      config: this.config,
      log: this.log,
      lemonade: this.deps.lemonade,
      authenticatedUser: this.user,
      hold: (reason) => this.hold(reason),
      release: (reason) => this.release(reason),
      continueLiteral: () => this.relay.writeLocal(continuation(READY_FOR_LITERAL)),
      refuseLiteral: () => this.lexer.abortLiteral(),
      appendUpstream: (tag, prefix, data, size) => this.appendUpstream(tag, prefix, data, size),
      answer: async (tag, status, text, code) => {
        await this.relay.quiet();
        this.tagged(tag, status, text, code);
      },
      done: () => {
        this.mode = undefined;
      },
    };
  }

  /**
   * Sends an APPEND the gateway built to the client's own upstream, as a relayed command:
   * its responses (TRYCREATE, APPENDUID, ...) reach the client under the client's tag.
   */
  private async appendUpstream(clientTag: string, prefix: string, data: Readable, size: number): Promise<void> {
    const upstream = this.upstream;
    if (!upstream || upstream.isClosed()) {
      data.destroy();
      return;
    }
    // Synchronizing even with LITERAL+ upstream: the message must never be read as commands
    // if the upstream refuses the APPEND line (see UpstreamRelay.goAhead).
    const line = `${prefix}{${size}}\r\n`;
    const rewrite = await relayHooks.get('APPEND')?.(this, Buffer.from(`${clientTag}${line}`, 'latin1'));
    if (this.closed || upstream.isClosed()) {
      rewrite?.abandon?.();
      data.destroy();
      return;
    }
    const upTag = this.relay.newTag('C');
    this.relay.register(upTag, { clientTag, command: 'APPEND', started: process.hrtime.bigint(), ...rewrite });
    this.writeUpstream(Buffer.from(`${upTag}${line}`, 'latin1'));
    if (!(await this.relay.goAhead(upTag))) {
      // The upstream answered the APPEND already (NO [TRYCREATE] ...): relayed as is.
      data.destroy();
      return;
    }
    for await (const chunk of data) {
      if (upstream.isClosed()) break;
      if (!upstream.write(chunk as Buffer)) await new Promise<void>((resolve) => upstream.onceDrain(resolve));
    }
    this.writeUpstream(Buffer.from('\r\n'));
  }

  /**
   * Runs a command of the gateway's own on the client's upstream connection, where the
   * client's selected mailbox is (UID EXPUNGE and COPYUID emulation need its view). Only
   * from a local handler, after quiet(): nothing of the client's is in flight, so untagged
   * data capture() claims is this command's; everything else (EXPUNGE, FETCH) still
   * reaches the client, whose mailbox it describes.
   */
  async internalCommand(text: string | Buffer, capture: (line: string, raw: Buffer) => boolean = () => false): Promise<{ status: string; line: string }> {
    const upstream = this.upstream;
    // After teardown nothing would ever complete (or abandon) the command.
    if (this.closed || !upstream || upstream.isClosed()) return { status: 'BYE', line: '' };
    const upTag = this.relay.newTag('I');
    const result = new Promise<{ status: string; line: string }>((resolve) => {
      this.relay.register(upTag, {
        clientTag: '',
        command: 'INTERNAL',
        started: process.hrtime.bigint(),
        internal: { capture, done: (status, line) => resolve({ status, line }) },
        abandon: () => resolve({ status: 'BYE', line: '' }),
      });
    });
    // The handler holds the upstream still; its own command's answer must be read.
    this.relay.holdForHandler(false);
    void this.sendInternal(upTag, typeof text === 'string' ? Buffer.from(text, 'utf8') : text);
    try {
      return await result;
    } finally {
      this.relay.holdForHandler(true);
    }
  }

  /** Writes an internal command, each literal in it (a client's string the handler passes on) after the upstream's "+". */
  private sendInternal(upTag: string, command: Buffer): Promise<void> {
    return sendGated(upTag, splitAtLiterals(command), {
      write: (data) => this.writeUpstream(data),
      goAhead: () => this.relay.goAhead(upTag),
      expectEcho: (echo) => this.upstream?.expectEcho(upTag, echo),
    });
  }

  /** Answered already: drop the rest of the command, including a literal the client will not send. */
  private discardRest(): void {
    this.mode = { kind: 'discard' };
  }

  private malformed(ev: Extract<LexEvent, { type: 'error' }>): void {
    const tag = guessTag(ev.text);
    if (ev.code === 'line-too-long') {
      malformedCommands.inc({ reason: 'line_too_long' });
      this.tagged(tag, 'BAD', 'Command line too long', 'TOOBIG');
    } else if (ev.code === 'literal-too-large') {
      malformedCommands.inc({ reason: 'literal_too_large' });
      // RFC 4469 §6: a CATENATE part that makes the message too big is NO [TOOBIG].
      if (catenateStart(ev.text) !== undefined) {
        this.tagged(tag, 'NO', 'Message too large', 'TOOBIG');
        commandFinished(this.log, 'APPEND', 'NO', process.hrtime.bigint()); // every CATENATE outcome is logged
      } else this.tagged(tag, 'BAD', 'Literal too large', 'TOOBIG');
      // RFC 7888 §4: a too-large non-synchronizing literal is already on its way; we cannot find the next command.
      if (ev.sync === false) return this.bye('Literal too large');
    } else {
      malformedCommands.inc({ reason: 'syntax' });
      this.tagged(tag, 'BAD', 'Malformed literal');
    }
  }

  private countBad(): void {
    if (++this.badInARow >= this.config.imap.limits.maxBadCommands) this.bye('Too many invalid commands');
  }

  // ---- relayed commands -----------------------------------------------------------

  private relayClientEvent(mode: Extract<Mode, { kind: 'relay' }>, ev: LexEvent): void {
    const upstream = this.upstream;
    if (!upstream) return;
    switch (ev.type) {
      case 'text':
        // The upstream answered already (Dovecot does, mid-line, to a bad mailbox name): it
        // now skips to the end of the line, so the rest goes on as it is, for it to skip
        // (a second answer would be one too many, and a line kept back would make it skip
        // the next command). A literal in it still waits for a "+", which will not come.
        if (!this.relay.isInFlight(mode.upTag)) {
          this.flushPendingText(mode);
          mode.pendingText = ev.data;
          return;
        }
        switch (framingFault(ev.data)) {
          case 'brace':
            return this.refuseRelayed(mode, 'Syntax error: "{" only starts a literal');
          case 'quote':
            return this.refuseRelayed(mode, 'Syntax error: unterminated quoted string');
        }
        {
          const fault = mode.check?.check(ev.data);
          if (fault !== undefined) return this.refuseRelayed(mode, `Syntax error: ${fault}`);
        }
        this.flushPendingText(mode);
        mode.pendingText = ev.data;
        return;
      case 'literal-start': {
        // Every literal goes upstream synchronizing, whatever the client's form and the
        // upstream's LITERAL+ (RFC 7888 §3 lets a client choose; we choose {n}), and the
        // client's own "+" (RFC 3501 §7.5) is only the echo of the upstream's. See UpstreamRelay.goAhead.
        const text = mode.pendingText ?? Buffer.alloc(0);
        mode.pendingText = undefined;
        this.writeUpstream(rewriteLiteralAnnouncement(text, ev.size, ev.binary, false));
        mode.sentAny = true;
        const go = this.relay.goAhead(mode.upTag).then((accepted) => {
          if (accepted) {
            mode.echo = new LiteralEchoTracker(ev.size);
            if (ev.sync) this.relay.writeLocal(continuation(READY_FOR_LITERAL));
            return;
          }
          // The upstream answered the command instead (its BAD/NO reached the client): the
          // client will not send a synchronizing literal; a non-synchronizing one is dropped.
          if (ev.sync) this.lexer.abortLiteral();
          this.mode = ev.sync ? undefined : { kind: 'discard' };
        });
        return this.waitFor('upstream-continuation', go);
      }
      case 'literal-data':
        mode.echo?.push(ev.data);
        this.writeUpstream(ev.data);
        return;
      case 'literal-end': {
        const echo = mode.echo?.result();
        mode.echo = undefined;
        if (echo !== undefined) this.upstream?.expectEcho(mode.upTag, echo);
        return;
      }
      case 'end':
        this.flushPendingText(mode);
        this.mode = undefined;
        // RFC 2177: after IDLE the client's next line is DONE, and only once the upstream
        // said "+". Nothing else is relayed before: the upstream would read a command (and
        // a literal's bytes after it) as its idle input, and a "+" could be taken for another's.
        if (this.relay.commandOf(mode.upTag) === 'IDLE') this.hold('idle-start');
        return;
      case 'error':
        if (!mode.sentAny) {
          // Nothing reached the upstream yet: answer like any malformed command.
          this.relay.forget(mode.upTag);
          this.mode = undefined;
          return this.malformed({ ...ev, text: Buffer.from(`${mode.clientTag} `) });
        }
        // Half a command is upstream and cannot be recalled: end the session cleanly.
        malformedCommands.inc({ reason: ev.code === 'line-too-long' ? 'line_too_long' : 'literal_too_large' });
        this.tagged(mode.clientTag, 'BAD', 'Command too large', 'TOOBIG');
        return this.bye('Command too large');
    }
  }

  /**
   * A relayed command found malformed by the gateway: answered BAD while nothing of it
   * went upstream (the rest of it is dropped); once part of it did, that part cannot be
   * recalled and the session ends.
   */
  private refuseRelayed(mode: Extract<Mode, { kind: 'relay' }>, text: string): void {
    malformedCommands.inc({ reason: 'syntax' });
    this.tagged(mode.clientTag, 'BAD', text);
    if (mode.sentAny) return this.bye('Command cannot be completed');
    this.relay.forget(mode.upTag);
    this.discardRest();
  }

  private flushPendingText(mode: Extract<Mode, { kind: 'relay' }>): void {
    if (mode.pendingText === undefined) return;
    this.writeUpstream(mode.pendingText);
    mode.pendingText = undefined;
    mode.sentAny = true;
  }

  /**
   * RFC 2177: the client ends IDLE with a DONE line that carries no tag. A whole line
   * other than DONE ends it too, as the upstream itself answers it (Dovecot: the IDLE's
   * tagged `BAD Expected DONE`): relayed like DONE, and the client's next lines are
   * commands again. A line that announces a literal is not relayed: its bytes would reach
   * the upstream as commands after the IDLE. It gets BAD, and the IDLE goes on.
   */
  private relayDone(line: Buffer): void {
    if (line.toString('latin1').replace(/\r?\n$/, '').toUpperCase() !== 'DONE' && parseAnnouncement(line) !== undefined) {
      malformedCommands.inc({ reason: 'state' });
      this.tagged(guessTag(line), 'BAD', 'Expected DONE to end IDLE');
      return this.discardRest();
    }
    this.relay.idleEnded();
    this.writeUpstream(line);
  }

  private writeUpstream(data: Buffer): void {
    const upstream = this.upstream;
    if (!upstream || upstream.isClosed()) return;
    if (!upstream.write(data) && !this.holds.has('upstream-backpressure')) {
      this.hold('upstream-backpressure');
      upstream.onceDrain(() => this.release('upstream-backpressure'));
    }
  }

  // ---- collected (local) commands -------------------------------------------------

  private collectClientEvent(mode: Extract<Mode, { kind: 'collect' }>, ev: LexEvent): void {
    const out = this.collector.push(ev);
    if (out === undefined) return;
    switch (out.type) {
      case 'continue':
        // RFC 3501 §7.5: the client may send the synchronizing literal now.
        return this.relay.writeLocal(continuation(READY_FOR_LITERAL));
      case 'error':
        // The rest of the command still arrives unless the lexer dropped it (its own error)
        // or the refused literal was synchronizing (the client will not send it).
        this.mode = ev.type !== 'error' && out.sync !== true ? { kind: 'discard' } : undefined;
        if (out.code === 'literal-too-large' && out.fatal === false && ev.type !== 'error') {
          // Within the lexer's bound but over what the gateway buffers for its own commands.
          malformedCommands.inc({ reason: 'literal_too_large' });
          return this.tagged(mode.tag, 'BAD', 'Literal too large for this command', 'TOOBIG');
        }
        if (out.code === 'command-too-large') {
          malformedCommands.inc({ reason: 'line_too_long' });
          return this.tagged(mode.tag, 'BAD', 'Command too large', 'TOOBIG');
        }
        return this.malformed({ type: 'error', code: out.code, size: out.size, sync: out.sync, text: Buffer.from(`${mode.tag} `) });
      case 'command':
        this.mode = undefined;
        return this.runHandler(mode, out.segments, out.literals);
    }
  }

  private runHandler(mode: Extract<Mode, { kind: 'collect' }>, segments: Buffer[], literals: Buffer[]): void {
    let line: ParsedLine;
    try {
      line = parseSegments(segments, literals);
    } catch (err) {
      malformedCommands.inc({ reason: 'syntax' });
      return this.tagged(mode.tag, 'BAD', `Syntax error: ${(err as Error).message.slice(0, 100)}`);
    }
    const handler = this.state === 'not-authenticated' ? preAuthHandlers.get(mode.name) : this.postAuthHandler(mode.name, segments[0]);
    if (handler === undefined) {
      return this.tagged(mode.tag, 'BAD', `${mode.name} is not valid in this state`);
    }
    const started = process.hrtime.bigint();
    this.hold('handler');
    this.lastLocalStatus = undefined;
    const authenticated = this.state !== 'not-authenticated';
    Promise.resolve()
      .then(async () => {
        if (authenticated) {
          // Replies keep the order of the commands (RFC 3501 §5.5): earlier relayed ones
          // finish first, and the upstream waits while the handler writes its response.
          await this.relay.quiet();
          this.relay.holdForHandler(true);
        }
        return handler(this, { ...line, tag: mode.tag });
      })
      .catch((err: unknown) => {
        // The store could not be reached: said once by store/availability.ts, and to the
        // client as a temporary condition (RFC 5530 §3 UNAVAILABLE), not a server bug.
        if (isStoreUnavailable(err)) return this.tagged(mode.tag, 'NO', STORE_UNAVAILABLE_TEXT, 'UNAVAILABLE');
        this.log.error({ err: (err as Error).message, command: mode.name }, 'command handler failed');
        this.tagged(mode.tag, 'NO', 'Internal error', 'SERVERBUG');
      })
      .finally(() => {
        if (authenticated) this.relay.holdForHandler(false);
        commandFinished(this.log, mode.name, this.lastLocalStatus, started);
        this.release('handler');
        this.afterCommand();
      });
  }

  // ---- upstream side (relay.ts) ----------------------------------------------------

  private relayHost(): RelayHost {
    return {
      log: () => this.log,
      writeClient: (data) => this.writeData(data),
      onceClientDrained: (fn) => this.client.once('drain', fn),
      capabilities: () => this.capabilities(),
      rewriteUntagged: (first, head) => this.condstore.rewriteUntagged(first, head),
      completed: (entry, status) => this.completed(entry, status),
      idleStarted: () => this.release('idle-start'),
      bye: (text) => this.bye(text),
      continuationTimeoutMs: this.config.imap.timeouts.upstreamContinuationSeconds * 1000,
    };
  }

  /** A relayed command's tagged completion reached the client (or the gateway's own ended). */
  private completed(entry: InFlight, status: string): void {
    // An IDLE refused (or ended) before its "+": the client's input goes on.
    if (entry.command === 'IDLE') this.release('idle-start');
    commandFinished(this.log, entry.command, status, entry.started);
    this.afterCommand();
    if (entry.command === 'SELECT' || entry.command === 'EXAMINE') {
      this.setSelected(status === 'OK');
    } else if ((entry.command === 'CLOSE' || entry.command === 'UNSELECT') && status === 'OK') {
      this.setSelected(false);
    }
    if (entry.command === 'LOGOUT') this.closeClient();
  }

  private onUpstreamClose(err?: Error): void {
    if (this.closed) return;
    if (this.state !== 'logout' && !this.relay.saidBye) {
      this.log.warn({ err: err?.message }, 'upstream connection lost');
      this.relay.interrupt(true);
      this.bye('Upstream server connection lost');
    } else {
      this.closeClient();
    }
  }

  // ---- lifecycle ------------------------------------------------------------------

  /**
   * Before login: the deadline from connect (imap.timeouts.preAuthSeconds), armed once.
   * After: RFC 3501 §5.4 autologout, at least 30 minutes of inactivity, re-armed by input.
   */
  private armTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    const t = this.config.imap.timeouts;
    const preAuth = this.state === 'not-authenticated';
    const seconds = preAuth ? t.preAuthSeconds : t.idleSeconds;
    const text = preAuth ? 'Autologout; no login in time' : 'Autologout; idle for too long';
    this.timer = setTimeout(() => this.bye(text), seconds * 1000);
    this.timer.unref();
  }

  /**
   * SIGTERM (gateway.ts): the session ends as soon as no command is under way. An IDLE
   * counts as none (it only waits), so an idling client gets BYE at once; a command under
   * way (an APPEND being sent, a FETCH being relayed, a local handler) finishes first, and
   * no new one starts. The gateway sends BYE to whatever is left when its grace time ends.
   */
  drain(): void {
    this.draining = true;
    this.byeIfIdle();
  }

  private draining = false;

  /** Runs once the tagged response is written; during a drain, the session may end now. */
  private afterCommand(): void {
    if (this.draining) setImmediate(() => this.byeIfIdle());
  }

  private byeIfIdle(): void {
    if (!this.draining || this.closed) return;
    if (this.mode !== undefined || this.holds.size > 0 || this.relay.busy) return;
    this.bye(SHUTDOWN_TEXT);
  }

  /** Untagged BYE (RFC 3501 §7.1.5) and close. */
  bye(text: string): void {
    if (this.closed) return;
    this.relay.interrupt(false);
    this.writeData(untaggedStatus('BYE', text));
    this.closeClient();
  }

  private closeClient(): void {
    if (this.closed) return;
    // The gateway ends this session (LOGOUT, BYE, shutdown): its upstream is not kept warm.
    this.endedHere = true;
    this.relay.interrupt(false);
    this.client.end();
    const socket = this.client;
    setTimeout(() => socket.destroy(), 2000).unref();
    this.teardown();
  }

  /**
   * The upstream connection when the session ends: parked for a reconnect when the client
   * vanished between commands (or while idling) without LOGOUT, else closed.
   */
  private releaseUpstream(): void {
    const upstream = this.upstream;
    if (upstream === undefined) return;
    const key = this.warmKey;
    const mode = this.mode;
    const relay = this.relay.parkable;
    const between = relay.ok && !(mode?.kind === 'relay' && mode.sentAny) && mode?.kind !== 'catenate';
    if (key === undefined || this.endedHere || this.state === 'logout' || upstream.isClosed() || !between) return upstream.end();
    void parkUpstream(upstream, key, this.deps.lemonade.warmUpstreams, this.state === 'selected', relay.idling);
  }

  private onClientClose(): void {
    this.teardown();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.releaseUpstream();
    const abandoned = this.relay.stop();
    // Waits for shared resources (mailbox locks) give up; the queued input is dropped.
    this.endedController.abort();
    this.queue = [];
    this.queuedBytes = 0;
    // Commands that will never complete give back what they hold (APPENDUID's mailbox
    // lock), once the upstream connection is closed: until then the upstream may still be
    // carrying out an APPEND or COPY it had read whole, and the next holder would see it.
    const abandon = () => {
      for (const entry of abandoned) entry.abandon?.();
    };
    if (this.upstream === undefined) abandon();
    else this.upstream.whenClosed(abandon);
    sessionsOpen.dec({ protocol: 'imap' });
    this.log.debug('session closed');
    this.deps.onClose(this);
  }
}
