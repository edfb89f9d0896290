/**
 * The upstream → client half of an authenticated IMAP session: the upstream's responses
 * streamed to the client under the client's tags, the gateway's own output kept out of
 * the middle of them, and the commands in flight upstream (issue 17 §1).
 *
 * Where the relay is between two upstream responses is one tagged union (RelayState);
 * why the upstream is not being read is a set of reasons, resumed when the last goes.
 * Emulations change what comes back through hooks (commands/context.ts ResponseRewrite
 * per command, the session's untagged rewriter), not through cases here.
 */
import type { Logger } from '../log/logger.js';
import type { LexEvent } from './protocol/lexer.js';
import { parseResponseHead, type ResponseHead } from './protocol/parser.js';
import { flattenLine, unguessableTagPrefix } from './protocol/echo.js';
import { untagged } from './protocol/writer.js';
import { parseCapabilityList } from './capabilities.js';
import type { UpstreamConnection } from './upstream.js';
import type { ResponseRewrite } from './commands/context.js';
import { isStoreUnavailable } from '../store/availability.js';

/** A command sent upstream under a tag of ours, until its tagged completion. */
export interface InFlight extends ResponseRewrite {
  clientTag: string;
  command: string;
  started: bigint;
  /** A command of the gateway's own on the client's connection (see ImapSession.internalCommand). */
  internal?: { capture: (line: string, raw: Buffer) => boolean; done: (status: string, line: string) => void };
}

/** What the relay needs of its session. */
export interface RelayHost {
  /** The session's logger (it gains the user at login). */
  log(): Logger;
  /** Writes to the client; false when its buffer is full (the upstream then waits for 'drain'). */
  writeClient(data: Buffer): boolean;
  onceClientDrained(fn: () => void): void;
  /** The capability list the client is shown: CAPABILITY responses are rewritten to it. */
  capabilities(): string[];
  /** An untagged response as the client should see it (CONDSTORE's MODSEQ, QRESYNC's VANISHED). */
  rewriteUntagged(first: Buffer, head: ResponseHead): Buffer | Promise<Buffer>;
  /** A relayed command's tagged completion was written (or it ended unanswered by an internal one). */
  completed(entry: InFlight, status: string): void;
  /** The upstream's "+" to an IDLE reached the client: its DONE may follow (RFC 2177). */
  idleStarted(): void;
  /** Ends the session with an untagged BYE. */
  bye(text: string): void;
  /** How long a literal's announcement may wait for the upstream's "+" or answer. */
  readonly continuationTimeoutMs: number;
}

type RelayState =
  /** Between two upstream responses: the gateway's own output may go out. */
  | { kind: 'between' }
  /** Writing an upstream response to the client; `tagged` when it completes a relayed command. */
  | { kind: 'streaming'; tagged?: { upTag: string; status: string } }
  /** Reading a response not meant for the client (an internal command's, an unknown tag's) to its end. */
  | { kind: 'skipping' }
  /** A tagged completion kept back to its end, to be rewritten (APPENDUID, HIGHESTMODSEQ). */
  | { kind: 'holding'; upTag: string; status: string; rewrite: (line: Buffer) => Promise<Buffer>; parts: Buffer[] }
  /** A rewrite is being awaited: the upstream is paused, and what it had already sent waits here in order. */
  | { kind: 'backlogged'; events: LexEvent[] };

type PauseReason = 'client-backpressure' | 'handler' | 'rewrite';

export class UpstreamRelay {
  private state: RelayState = { kind: 'between' };
  private readonly pauses = new Set<PauseReason>();
  private readonly inflight = new Map<string, InFlight>();
  private readonly tagPrefix = unguessableTagPrefix();
  private nextTag = 1;
  /** The gateway's own output waiting for the end of an upstream response. */
  private localQueue: Buffer[] = [];
  private quietWaiters: Array<() => void> = [];
  /**
   * A literal announced upstream waits for the upstream's "+" (see goAhead): resolved true
   * by it, false when that command is answered first or the relay stops.
   */
  private awaited: { upTag: string; resolve: (go: boolean) => void } | undefined;
  /** Upstream tag of an IDLE whose "+" has been relayed: the client's next line is DONE. */
  private idleTag: string | undefined;
  private upstream: UpstreamConnection | undefined;
  private stopped = false;
  /** The upstream said BYE itself: its close needs no second one. */
  saidBye = false;

  constructor(private readonly host: RelayHost) {}

  /** From login on: every upstream response comes here. */
  start(upstream: UpstreamConnection, onClose: (err?: Error) => void): void {
    this.upstream = upstream;
    upstream.startRelay({ onEvent: (ev) => this.onEvent(ev), onClose });
  }

  /** The session ended: nothing more is relayed, a literal still waiting is not sent. Returns the commands that will never complete. */
  stop(): InFlight[] {
    this.stopped = true;
    this.awaited?.resolve(false);
    return [...this.inflight.values()];
  }

  // ---- commands in flight -----------------------------------------------------------

  /** A fresh upstream tag: the connection's random prefix (protocol/echo.ts), a kind letter, a number. */
  newTag(kind: 'C' | 'I'): string {
    return `${this.tagPrefix}${kind}${this.nextTag++}`;
  }

  register(upTag: string, entry: InFlight): void {
    this.inflight.set(upTag, entry);
  }

  isInFlight(upTag: string): boolean {
    return this.inflight.has(upTag);
  }

  commandOf(upTag: string): string | undefined {
    return this.inflight.get(upTag)?.command;
  }

  /** A command refused before any of it went upstream: it gives back what it holds. */
  forget(upTag: string): void {
    this.inflight.get(upTag)?.abandon?.();
    this.inflight.delete(upTag);
    this.wakeQuiet();
  }

  /** The IDLE being relayed, once its "+" reached the client. */
  get idling(): boolean {
    return this.idleTag !== undefined;
  }

  /** The client's DONE (or a line the upstream will answer in its place) went upstream. */
  idleEnded(): void {
    this.idleTag = undefined;
  }

  /** Some command other than an IDLE, or a response, is under way. */
  get busy(): boolean {
    if (this.state.kind !== 'between') return true;
    for (const entry of this.inflight.values()) if (entry.command !== 'IDLE') return true;
    return false;
  }

  /**
   * Nothing is half-read or awaited, and at most an IDLE is in flight: the connection can
   * be handed on once that IDLE is ended (warm-upstreams.ts parkUpstream).
   */
  get parkable(): { ok: boolean; idling: boolean } {
    const ok = this.state.kind === 'between' && this.awaited === undefined && [...this.inflight.values()].every((e) => e.command === 'IDLE');
    return { ok, idling: this.inflight.size > 0 };
  }

  /**
   * After a literal's announcement went upstream: true at the upstream's "+", false when
   * the upstream answers command `upTag` instead (or the session ends). A literal is only
   * ever sent after true. Were it sent regardless, an upstream that refused the command
   * line (a bad flag or date in an APPEND, a bad STATUS item) would read the literal's
   * bytes as commands: Dovecot 2.3 does, even for {n+}, so lines of a message would run
   * under the user's account.
   */
  goAhead(upTag: string): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      // An upstream that neither says "+" nor answers (Dovecot, after some malformed
      // APPEND lines, waits in silence) would hold this session, and the mailbox lock of
      // its APPEND, for good: past the bound the session ends.
      const timer = setTimeout(() => {
        this.host.log().warn({ command: this.commandOf(upTag) }, 'upstream neither continued nor answered a literal');
        this.host.bye('Upstream server did not answer');
      }, this.host.continuationTimeoutMs);
      timer.unref();
      this.awaited = {
        upTag,
        resolve: (go) => {
          clearTimeout(timer);
          this.awaited = undefined;
          resolve(go);
        },
      };
    });
  }

  /** Resolves once no relayed command is in flight and no upstream response is half-written. */
  quiet(): Promise<void> {
    if (this.inflight.size === 0 && this.state.kind === 'between') return Promise.resolve();
    return new Promise((resolve) => this.quietWaiters.push(resolve));
  }

  private wakeQuiet(): void {
    if (this.inflight.size > 0 || this.state.kind !== 'between' || this.quietWaiters.length === 0) return;
    const waiters = this.quietWaiters;
    this.quietWaiters = [];
    for (const fn of waiters) fn();
  }

  // ---- reading the upstream ---------------------------------------------------------

  /** While a local handler answers, the upstream is not read (its output would interleave). */
  holdForHandler(hold: boolean): void {
    if (hold) this.pause('handler');
    else this.resume('handler');
  }

  private pause(reason: PauseReason): void {
    this.pauses.add(reason);
    this.upstream?.pause();
  }

  private resume(reason: PauseReason): void {
    this.pauses.delete(reason);
    if (this.pauses.size === 0) this.upstream?.resume();
  }

  private onEvent(ev: LexEvent): void {
    if (this.stopped) return;
    const state = this.state;
    if (state.kind === 'backlogged') return void state.events.push(ev);
    switch (ev.type) {
      case 'text':
        if (state.kind === 'between') return this.startResponse(ev.data);
        return this.continueResponse(ev.data);
      case 'literal-data':
        return this.continueResponse(ev.data);
      case 'literal-start':
      case 'literal-end':
        return;
      case 'end':
        return this.endResponse();
      case 'error':
        this.host.log().warn({ code: ev.code }, 'upstream sent an unparseable response');
        this.upstream?.destroy();
        return;
    }
  }

  private continueResponse(data: Buffer): void {
    const state = this.state;
    if (state.kind === 'holding') state.parts.push(Buffer.from(data));
    else if (state.kind !== 'skipping') this.send(data);
  }

  private startResponse(response: Buffer): void {
    // One line, even where the upstream quoted a client's literal back (protocol/echo.ts).
    const first = flattenLine(response);
    const head = parseResponseHead(first);
    // A continuation is one line, and leaves the relay between responses.
    if (head.tag === '+') return this.onContinuation(first);
    this.state = { kind: 'streaming' };
    if (head.tag === '*') return this.startUntagged(first, head);
    this.startTagged(first, head);
  }

  private startUntagged(first: Buffer, head: ResponseHead): void {
    // The gateway's own command runs alone, so the untagged data it asked for is its own.
    for (const entry of this.inflight.values()) {
      if (entry.internal?.capture(first.toString('latin1'), first)) {
        this.state = { kind: 'skipping' };
        return;
      }
    }
    let out = first;
    if (head.kind === 'CAPABILITY') {
      this.upstream!.capabilities = parseCapabilityList(first.toString('latin1').replace(/^\* CAPABILITY /i, ''));
      out = untagged(`CAPABILITY ${this.host.capabilities().join(' ')}`);
    } else if (head.kind === 'BYE') {
      // Relayed as is; the close that follows needs no second BYE.
      this.saidBye = true;
    } else {
      const rewritten = this.host.rewriteUntagged(first, head);
      if (rewritten instanceof Promise) return this.awaitUntagged(rewritten, first);
      out = rewritten;
    }
    this.send(this.withOurCapabilities(out, first, head));
  }

  private startTagged(first: Buffer, head: ResponseHead): void {
    const entry = this.inflight.get(head.tag);
    if (entry === undefined) {
      // Not a tag we sent: never shown to the client.
      this.host.log().warn({ tag: head.tag.slice(0, 40) }, 'upstream answered an unknown tag');
      this.state = { kind: 'skipping' };
      return;
    }
    if (entry.internal) {
      // Never shown to the client; the caller gets the result.
      this.inflight.delete(head.tag);
      if (this.awaited?.upTag === head.tag) this.awaited.resolve(false);
      entry.internal.done(head.kind, first.toString('latin1'));
      this.state = { kind: 'skipping' };
      return;
    }
    const out = Buffer.concat([Buffer.from(entry.clientTag), first.subarray(head.tag.length)]);
    if (entry.rewriteTagged) {
      this.state = { kind: 'holding', upTag: head.tag, status: head.kind, rewrite: entry.rewriteTagged, parts: [out] };
      return;
    }
    this.state = { kind: 'streaming', tagged: { upTag: head.tag, status: head.kind } };
    this.send(this.withOurCapabilities(out, first, head));
  }

  /** A [CAPABILITY ...] response code shows the client's list, not the upstream's. */
  private withOurCapabilities(out: Buffer, first: Buffer, head: ResponseHead): Buffer {
    const code = head.code;
    if (code?.name !== 'CAPABILITY') return out;
    this.upstream!.capabilities = parseCapabilityList(code.raw.replace(/^CAPABILITY\s*/i, ''));
    const shift = out.length - first.length; // the tag was replaced
    return Buffer.concat([out.subarray(0, code.start + shift), Buffer.from(`[CAPABILITY ${this.host.capabilities().join(' ')}]`), out.subarray(code.end + shift)]);
  }

  private onContinuation(first: Buffer): void {
    // An IDLE waiting for its "+" was sent before any command now in flight: the "+" is its.
    for (const [upTag, entry] of this.inflight) {
      if (entry.command === 'IDLE' && this.idleTag === undefined) {
        this.idleTag = upTag;
        this.send(first);
        this.host.idleStarted();
        return;
      }
    }
    if (this.awaited) return this.awaited.resolve(true);
    // Not asked for by anything in flight: never passed on (the client would take it as
    // leave to send data nobody expects).
    this.host.log().warn('upstream sent a continuation request nothing asked for');
  }

  private endResponse(): void {
    const state = this.state;
    this.state = { kind: 'between' };
    if (state.kind === 'holding') return this.finishHeld(state);
    if (state.kind === 'streaming' && state.tagged) this.complete(state.tagged.upTag, state.tagged.status);
    this.flushLocal();
    this.wakeQuiet();
  }

  /** Writes a kept-back tagged completion once rewritten; the upstream is not read meanwhile. */
  private finishHeld(held: Extract<RelayState, { kind: 'holding' }>): void {
    const line = Buffer.concat(held.parts);
    this.afterRewrite(held.rewrite(line), line, 'tagged', (out) => {
      this.state = { kind: 'between' };
      this.send(out);
      this.complete(held.upTag, held.status);
    });
  }

  /**
   * The first segment of an untagged response whose rewrite waits for the store (a
   * mod-sequence being assigned): the upstream is not read meanwhile, and the rest of the
   * response follows the rewritten segment in order.
   */
  private awaitUntagged(rewrite: Promise<Buffer>, first: Buffer): void {
    this.afterRewrite(rewrite, first, 'untagged', (out) => {
      // Still mid-response: the rest of it (and its end) is in the backlog.
      this.state = { kind: 'streaming' };
      this.send(out);
    });
  }

  /**
   * Pauses the upstream while a rewrite is awaited, its events kept in order; then writes
   * the result (the line as it was if the rewrite failed) and replays them.
   */
  private afterRewrite(rewrite: Promise<Buffer>, original: Buffer, kind: 'tagged' | 'untagged', write: (out: Buffer) => void): void {
    const state: RelayState = { kind: 'backlogged', events: [] };
    this.state = state;
    this.pause('rewrite');
    rewrite
      .catch((err: unknown) => {
        // A store outage is logged once, by store/availability.ts, not per response.
        if (!isStoreUnavailable(err)) this.host.log().warn({ err: (err as Error).message }, `${kind} response rewrite failed`);
        return original;
      })
      .then((out) => {
        write(out);
        this.replay(state.events);
      });
  }

  /** Feeds the upstream events kept back during a rewrite, in order (behind a further rewrite, if one starts), then reads on. */
  private replay(events: LexEvent[]): void {
    for (const ev of events) this.onEvent(ev);
    if (this.state.kind === 'backlogged') return;
    this.resume('rewrite');
    if (this.state.kind === 'between') {
      this.flushLocal();
      this.wakeQuiet();
    }
  }

  private complete(upTag: string, status: string): void {
    const entry = this.inflight.get(upTag);
    if (!entry) return;
    this.inflight.delete(upTag);
    if (this.idleTag === upTag) this.idleTag = undefined;
    // The upstream answered a command whose literal it never asked for.
    if (this.awaited?.upTag === upTag) this.awaited.resolve(false);
    this.host.completed(entry, status);
  }

  // ---- writing to the client ----------------------------------------------------------

  private send(data: Buffer): void {
    if (this.host.writeClient(data) || this.upstream === undefined || this.pauses.has('client-backpressure')) return;
    // Back-pressure: the upstream is not read until the client has taken what we sent.
    this.pause('client-backpressure');
    this.host.onceClientDrained(() => this.resume('client-backpressure'));
  }

  /** Gateway-made output: written now, or after the upstream response being written. */
  writeLocal(data: Buffer): void {
    if (this.state.kind === 'between') this.send(data);
    else this.localQueue.push(data);
  }

  private flushLocal(): void {
    const queued = this.localQueue;
    this.localQueue = [];
    for (const data of queued) this.send(data);
  }

  /**
   * The session ends mid-stream (BYE): the gateway's queued output goes out now. When the
   * upstream was lost in the middle of a response, that response's line is ended first.
   */
  interrupt(endLine: boolean): void {
    if (endLine && this.state.kind === 'streaming') this.send(Buffer.from('\r\n'));
    this.state = { kind: 'between' };
    this.flushLocal();
  }
}
