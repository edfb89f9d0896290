/**
 * One SMTP client connection to the upstream MTA, driven command by command so the
 * submission front can hand each client command's verdict straight from the MTA back to
 * the client (per-recipient replies, per-recipient DSN parameters): nothing is
 * acknowledged that the MTA did not accept.
 */
import type net from 'node:net';
import type { Config } from '../config/schema.js';
import { UpstreamUnavailable, classifySocketError, connectSocket, upgradeToTls } from '../upstream/connect.js';
import { smtpRelayDuration, upstreamConnectFailures, upstreamConnectionsOpen } from '../metrics/metrics.js';
import { ReplyParseError, ReplyReader, type ParsedReply } from './protocol/reply.js';
import { ContentStager } from './content-staging.js';

export type UpstreamConfig = Config['submission']['upstream'];

/** A reply of the MTA: code, RFC 3463 enhanced code when it gave one, text lines. */
export type SmtpReply = ParsedReply;

export interface UpstreamSmtpOptions {
  heloName: string;
  replyTimeoutMs: number;
  /** Use BDAT (RFC 3030) when the MTA offers it; false forces DATA. Default true. */
  preferChunking?: boolean;
}

export type SmtpParams = Array<[string, string | true]>;

// Content queued toward the MTA before the client is paused. The socket's own mark (16 KiB)
// would stop the client after every chunk and serialize the two links; this keeps both
// moving while still bounding what one session holds.
const MAX_WRITE_BUFFER = 1024 * 1024;

const QUIT_WAIT_MS = 5_000;
const EMPTY = Buffer.alloc(0);

interface Waiter {
  resolve(reply: SmtpReply): void;
  reject(err: Error): void;
}

interface QueuedCommand {
  payload: Array<string | Buffer>;
  waiter: Waiter;
  onWritten?: () => void;
}

function checkArg(what: string, value: string): void {
  // A CR or LF here would let envelope data inject commands into the upstream session.
  if (/[\r\n\0]/.test(value)) throw new Error(`${what} contains a line break or NUL`);
}

function formatParams(params: SmtpParams): string {
  let out = '';
  for (const [key, value] of params) {
    checkArg('parameter', key);
    if (value !== true) checkArg('parameter', value);
    out += value === true ? ` ${key}` : ` ${key}=${value}`;
  }
  return out;
}

/** What message content a relay carries: CRLF-terminated lines, or octets that may end anywhere. */
export type ContentForm = 'lines' | 'octets';

export class UpstreamSmtp {
  readonly extensions = new Map<string, string>();
  private socket: net.Socket;
  private readonly replies = new ReplyReader();
  /** Sent, reply not yet read; in order. */
  private awaiting: Waiter[] = [];
  /** Not yet sent because PIPELINING is off and a reply is outstanding. */
  private queued: QueuedCommand[] = [];
  private replyTimer: NodeJS.Timeout | undefined;
  private broken = false;
  private counted = false;
  private drainFns: Array<() => void> = [];
  private closedFns: Array<() => void> = [];
  private pipelining = false;

  // Content phase.
  private content: 'none' | 'data' | 'bdat' = 'none';
  private stager: ContentStager | undefined;
  private chunkReplies: Array<Promise<SmtpReply>> = [];
  private contentStarted = 0;

  private readonly onData = (data: Buffer): void => this.read(data);
  private readonly onError = (err: NodeJS.ErrnoException): void =>
    this.fail(new UpstreamUnavailable(classifySocketError(err), `upstream MTA: ${err.message}`));
  private readonly onClose = (): void => this.fail(new UpstreamUnavailable('closed', 'upstream MTA closed the connection'));
  private readonly onDrain = (): void => this.runDrain();

  private constructor(
    socket: net.Socket,
    private readonly cfg: UpstreamConfig,
    private readonly opts: UpstreamSmtpOptions,
  ) {
    this.socket = socket;
    this.attach(socket);
    this.counted = true;
    upstreamConnectionsOpen.inc({ protocol: 'submission' });
  }

  static async open(cfg: UpstreamConfig, opts: UpstreamSmtpOptions): Promise<UpstreamSmtp> {
    let conn: UpstreamSmtp | undefined;
    try {
      const socket = await connectSocket(cfg);
      conn = new UpstreamSmtp(socket, cfg, opts);
      await conn.handshake();
      return conn;
    } catch (err) {
      conn?.destroy();
      const failure =
        err instanceof UpstreamUnavailable ? err : new UpstreamUnavailable('other', `upstream MTA: ${(err as Error).message}`);
      upstreamConnectFailures.inc({ protocol: 'submission', reason: failure.reason });
      throw failure;
    }
  }

  has(keyword: string): boolean {
    return this.extensions.has(keyword.toUpperCase());
  }

  /** Connected, not failed, and between transactions (not in the middle of message content). */
  get usable(): boolean {
    return !this.broken && !this.socket.destroyed && this.content === 'none' && this.awaiting.length === 0 && this.queued.length === 0;
  }

  /** Which content mode startContent will use. */
  get usesChunking(): boolean {
    // Without PIPELINING each BDAT would need its reply before the next could go
    // (RFC 3030 §4.2), which a synchronous writeContent cannot honour: DATA then.
    return (this.opts.preferChunking ?? true) && this.has('CHUNKING') && this.has('PIPELINING');
  }

  mail(from: string, params: SmtpParams): Promise<SmtpReply> {
    return this.guarded(() => {
      checkArg('reverse-path', from);
      return `MAIL FROM:<${from}>${formatParams(params)}\r\n`;
    });
  }

  rcpt(to: string, params: SmtpParams): Promise<SmtpReply> {
    return this.guarded(() => {
      checkArg('forward-path', to);
      return `RCPT TO:<${to}>${formatParams(params)}\r\n`;
    });
  }

  rset(): Promise<SmtpReply> {
    return this.command(['RSET\r\n']);
  }

  noop(): Promise<SmtpReply> {
    return this.command(['NOOP\r\n']);
  }

  /**
   * Opens the content phase. `lines`: the content is CRLF-terminated text (a client's
   * DATA), so DATA is used even where BDAT is offered: Postfix answers a message sent as
   * several pipelined BDAT chunks tens of ms later than the same message by DATA (1 MB:
   * ~50 ms against ~16 ms, bench/RESULTS.md, issue 16). `octets`: the content may end
   * anywhere (a client's BDAT, BURL pieces, a spool file): BDAT where offered.
   */
  async startContent(content: ContentForm = 'octets'): Promise<SmtpReply> {
    if (this.content !== 'none') throw new Error('message content already started');
    this.contentStarted = performance.now();
    this.chunkReplies = [];
    if (this.usesChunking && content === 'octets') {
      if (this.broken) throw new UpstreamUnavailable('closed', 'upstream MTA connection is closed');
      this.content = 'bdat';
      // Small client writes are coalesced into chunks of the staging size: one BDAT per
      // client packet would multiply round-trip replies for nothing.
      this.stager = new ContentStager(false, (bytes, release) => this.sendChunk(bytes, false, release));
      // BDAT has no go-ahead reply (RFC 3030 §2); a 354 keeps one meaning for the caller.
      return { code: 354, lines: ['Send BDAT chunks'] };
    }
    let reply: SmtpReply;
    try {
      reply = await this.command(['DATA\r\n']);
    } catch (err) {
      this.observe('data', 'error');
      throw err;
    }
    if (reply.code === 354) {
      this.content = 'data';
      this.stager = new ContentStager(true, (bytes, release) => this.socket.write(bytes, release));
    } else this.observe('data', 'rejected');
    return reply;
  }

  writeContent(chunk: Buffer): boolean {
    if (chunk.length === 0 || this.broken) return !this.broken;
    if (this.stager === undefined) throw new Error('writeContent before startContent');
    this.stager.write(chunk);
    return this.socket.writableLength < MAX_WRITE_BUFFER;
  }

  onceDrain(fn: () => void): void {
    if (this.broken || this.socket.writableLength < MAX_WRITE_BUFFER) {
      queueMicrotask(fn);
      return;
    }
    this.drainFns.push(fn);
  }

  async endContent(): Promise<SmtpReply> {
    const mode = this.content;
    const stager = this.stager;
    if (mode === 'none' || stager === undefined) throw new Error('endContent before startContent');
    let reply: SmtpReply;
    try {
      if (mode === 'data') {
        stager.flush();
        reply = await this.command([stager.terminator()]);
      } else {
        const rest = stager.takeRest();
        const last = this.sendChunk(rest?.bytes ?? EMPTY, true, rest?.release);
        const replies = await Promise.all(this.chunkReplies);
        // RFC 3030 §2: a failed chunk fails the whole message; report the first failure.
        reply = replies.find((r) => r.code >= 300) ?? (await last);
      }
    } catch (err) {
      this.observe(mode, 'error');
      throw err;
    } finally {
      this.content = 'none';
      this.stager = undefined;
      this.chunkReplies = [];
    }
    this.observe(mode, reply.code < 300 ? 'accepted' : 'rejected');
    return reply;
  }

  /**
   * Runs fn once the connection is closed, however that happens (destroy, QUIT, the MTA
   * closing or timing out): at once when it already is. The relay pool's count of open
   * connections follows the connections themselves this way (relay-pool.ts).
   */
  onClosed(fn: () => void): void {
    if (this.broken) queueMicrotask(fn);
    else this.closedFns.push(fn);
  }

  destroy(): void {
    this.fail(new UpstreamUnavailable('closed', 'upstream MTA connection closed by the gateway'));
  }

  async quit(): Promise<void> {
    if (this.broken) return;
    if (this.content !== 'none') {
      // Mid-message QUIT would be read as message text: only closing aborts (RFC 5321 §4.1.1.4).
      this.destroy();
      return;
    }
    // A polite goodbye is not worth a full reply timeout when the pool is shutting down.
    const cap = setTimeout(() => this.destroy(), Math.min(this.opts.replyTimeoutMs, QUIT_WAIT_MS));
    try {
      await this.command(['QUIT\r\n']);
    } catch {
      // Closed or timed out either way: nothing left to do.
    } finally {
      clearTimeout(cap);
    }
    this.destroy();
  }

  // ---- internals ----------------------------------------------------------------------

  private async handshake(): Promise<void> {
    const greeting = await this.expectReply();
    // RFC 5321 §3.1: 554 (or 421) instead of 220 refuses service.
    if (greeting.code !== 220) throw new UpstreamUnavailable('other', `upstream MTA greeting: ${greeting.code} ${greeting.lines.join(' ')}`);
    await this.ehlo();
    if (this.cfg.tls !== 'starttls') return;
    if (!this.has('STARTTLS')) throw new UpstreamUnavailable('tls', 'upstream MTA does not offer STARTTLS');
    const answer = await this.command(['STARTTLS\r\n']);
    if (answer.code !== 220) throw new UpstreamUnavailable('tls', `upstream MTA refused STARTTLS: ${answer.code} ${answer.lines.join(' ')}`);
    // Anything the MTA sent after its 220 was sent in the clear and would be taken as
    // protected: refuse it (the STARTTLS command-injection class, RFC 3207 §5).
    if (this.replies.buffered > 0) throw new UpstreamUnavailable('tls', 'upstream MTA sent data after its STARTTLS reply');
    const plain = this.socket;
    this.detach(plain);
    plain.on('error', () => undefined);
    this.socket = await upgradeToTls(plain, this.cfg);
    this.attach(this.socket);
    // RFC 3207 §4.2: everything learned before TLS is forgotten; ask again.
    await this.ehlo();
  }

  private async ehlo(): Promise<void> {
    this.extensions.clear();
    this.pipelining = false;
    checkArg('EHLO name', this.opts.heloName);
    const answer = await this.command([`EHLO ${this.opts.heloName}\r\n`]);
    if (answer.code !== 250) throw new UpstreamUnavailable('other', `upstream MTA refused EHLO: ${answer.code} ${answer.lines.join(' ')}`);
    // RFC 5321 §4.1.1.1: the first line names the server, each further one is an extension.
    for (const line of answer.lines.slice(1)) {
      const [keyword, ...rest] = line.trim().split(/\s+/);
      if (keyword) this.extensions.set(keyword.toUpperCase(), rest.join(' '));
    }
    this.pipelining = this.has('PIPELINING');
  }

  /** Waits for an unsolicited reply (the greeting). */
  private expectReply(): Promise<SmtpReply> {
    return new Promise((resolve, reject) => {
      this.awaiting.push({ resolve, reject });
      this.armTimer();
    });
  }

  private guarded(build: () => string): Promise<SmtpReply> {
    let line: string;
    try {
      line = build();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.command([line]);
  }

  /** onWritten: called once the payload is written (a staging buffer in it is free again). */
  private command(payload: Array<string | Buffer>, onWritten?: () => void): Promise<SmtpReply> {
    if (this.broken) return Promise.reject(new UpstreamUnavailable('closed', 'upstream MTA connection is closed'));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      // RFC 2920 §3.1: without PIPELINING the client waits for each reply before the next command.
      if (!this.pipelining && (this.awaiting.length > 0 || this.queued.length > 0)) {
        this.queued.push({ payload, waiter, ...(onWritten ? { onWritten } : {}) });
        return;
      }
      this.transmit(payload, waiter, onWritten);
    });
  }

  private transmit(payload: Array<string | Buffer>, waiter: Waiter, onWritten?: () => void): void {
    this.awaiting.push(waiter);
    if (this.awaiting.length === 1) this.armTimer();
    // One TCP segment train for a command and its data (a BDAT header and its chunk).
    this.socket.cork();
    payload.forEach((part, i) => this.socket.write(part, i === payload.length - 1 ? onWritten : undefined));
    this.socket.uncork();
  }

  /** RFC 3030 §2: one chunk, its size announced; its bytes are a staging buffer's until written. */
  private sendChunk(bytes: Buffer, last: boolean, release?: () => void): Promise<SmtpReply> {
    const reply = this.command([`BDAT ${bytes.length}${last ? ' LAST' : ''}\r\n`, bytes], release);
    // Awaited together at the end; until then a failure must not count as unhandled.
    reply.catch(() => undefined);
    if (!last) this.chunkReplies.push(reply);
    return reply;
  }

  private read(data: Buffer): void {
    let replies: SmtpReply[];
    try {
      replies = this.replies.push(data);
    } catch (err) {
      if (!(err instanceof ReplyParseError)) throw err;
      return this.fail(new UpstreamUnavailable('other', `upstream MTA: ${err.message}`));
    }
    for (const reply of replies) {
      if (this.broken) return;
      this.answer(reply);
    }
  }

  private answer(reply: SmtpReply): void {
    const waiter = this.awaiting.shift();
    if (waiter === undefined) {
      // Unsolicited: in practice a 421 before the MTA closes (RFC 5321 §3.8).
      return this.fail(new UpstreamUnavailable('closed', `upstream MTA: ${reply.code} ${reply.lines.join(' ')}`));
    }
    this.armTimer();
    waiter.resolve(reply);
    // RFC 5321 §3.8: after 421 the MTA closes; the reply is still the caller's answer.
    if (reply.code === 421) return this.fail(new UpstreamUnavailable('closed', `upstream MTA closing: ${reply.lines.join(' ')}`));
    if (this.awaiting.length === 0) {
      const next = this.queued.shift();
      if (next !== undefined) this.transmit(next.payload, next.waiter, next.onWritten);
    }
  }

  private armTimer(): void {
    if (this.replyTimer !== undefined) clearTimeout(this.replyTimer);
    this.replyTimer = undefined;
    if (this.awaiting.length === 0 || this.broken) return;
    this.replyTimer = setTimeout(() => {
      this.fail(new UpstreamUnavailable('timeout', `upstream MTA did not reply within ${this.opts.replyTimeoutMs} ms`));
    }, this.opts.replyTimeoutMs);
  }

  private fail(err: UpstreamUnavailable): void {
    if (this.broken) return;
    this.broken = true;
    if (this.replyTimer !== undefined) clearTimeout(this.replyTimer);
    this.replyTimer = undefined;
    if (!this.socket.destroyed) this.socket.destroy();
    this.stager?.discard();
    if (this.counted) {
      this.counted = false;
      upstreamConnectionsOpen.dec({ protocol: 'submission' });
    }
    const waiters = [...this.awaiting, ...this.queued.map((q) => q.waiter)];
    this.awaiting = [];
    this.queued = [];
    for (const w of waiters) w.reject(err);
    this.runDrain();
    const closed = this.closedFns;
    this.closedFns = [];
    for (const fn of closed) fn();
  }

  private runDrain(): void {
    const fns = this.drainFns;
    this.drainFns = [];
    for (const fn of fns) fn();
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
  }

  private detach(socket: net.Socket): void {
    socket.off('data', this.onData);
    socket.off('error', this.onError);
    socket.off('close', this.onClose);
    socket.off('drain', this.onDrain);
  }

  private observe(mode: 'data' | 'bdat', result: 'accepted' | 'rejected' | 'error'): void {
    smtpRelayDuration.observe({ mode, result }, (performance.now() - this.contentStarted) / 1000);
  }
}
