/**
 * A scripted IMAP upstream for tests of relay ordering and faults (issue 17 §7): a tiny
 * server on 127.0.0.1 that a test drives line by line (expect this command, answer these
 * lines, stream this much, wait), so the order in which the gateway sees the upstream's
 * bytes is fixed by the test, not left to timing. Real Dovecot stays the upstream for
 * everything else (DESIGN.md: a fake upstream only for ordering and fault cases).
 *
 * What it does on its own, so a test scripts only the session it cares about:
 *   - greets every connection with `* OK [CAPABILITY <capabilities>]` (the gateway then
 *     sends no CAPABILITY of its own, src/imap/upstream.ts handshake);
 *   - answers CAPABILITY, and LOGOUT (the gateway's capability probe);
 *   - answers LOGIN with OK [CAPABILITY ...] for any credentials, and from then on hands
 *     the connection to the test (nextSession()), every later line going to its script.
 *
 * Commands with literals are not supported (nothing the ordering tests send has one): a
 * line ending in a literal announcement fails the connection's next expect().
 */
import net from 'node:net';
import type { UpstreamLike } from './gateway.js';

/** A legacy server's list: no UIDPLUS, CONDSTORE, ENABLE, so the gateway emulates them. */
export const LEGACY_CAPABILITIES = 'IMAP4rev1 LITERAL+ ID IDLE NAMESPACE';

export interface ScriptedCommand {
  tag: string;
  /** The line without its tag and CRLF, e.g. `UID FETCH 1:* (FLAGS)`. */
  command: string;
}

/** One logged-in upstream connection, scripted by the test. */
export class ScriptedSession {
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;
  /** Resolves when the gateway (or the test) closed this connection. */
  readonly closedPromise: Promise<void>;

  constructor(
    readonly socket: net.Socket,
    readonly user: string,
  ) {
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Called by the server with each line the gateway sends after LOGIN. */
  pushLine(line: string): void {
    this.lines.push(line);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /**
   * The gateway's next command; it must match `pattern` (tested against the line without
   * its tag), or this throws with what came instead.
   */
  async expect(pattern: RegExp, timeoutMs = 10_000): Promise<ScriptedCommand> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.closed) throw new Error(`upstream connection closed while expecting ${pattern}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout expecting ${pattern} from the gateway`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const line = this.lines.shift()!;
    if (/\{\d+\+?\}$/.test(line)) throw new Error(`literals are not scripted here: ${JSON.stringify(line)}`);
    const m = /^(\S+) (.*)$/s.exec(line);
    if (m === null || !pattern.test(m[2]!)) throw new Error(`expected ${pattern} from the gateway, got ${JSON.stringify(line)}`);
    return { tag: m[1]!, command: m[2]! };
  }

  /** Lines the gateway sent that no expect() took yet. */
  get unread(): readonly string[] {
    return this.lines;
  }

  /** Writes these lines (CRLF added to each) in one write; resolves once the socket took them. */
  send(...lines: string[]): Promise<void> {
    return this.write(Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'latin1'));
  }

  /** Writes raw bytes; resolves once handed to the kernel (the write callback). */
  write(data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /**
   * Streams `total` bytes of `fill` through the socket with back-pressure: one chunk at a
   * time, waiting for 'drain' whenever write() says the buffer is full. If no 'drain' comes
   * within stallMs, the reader (the gateway) has stopped reading: resolves with
   * { stalled: true, written } where written counts the bytes handed to the kernel so far,
   * and keeps streaming once 'drain' does come (finished resolves at the end).
   */
  stream(total: number, opts: { chunk?: number; stallMs?: number; fill?: number } = {}): { firstStall: Promise<{ stalled: boolean; written: number }>; finished: Promise<void> } {
    const chunkSize = opts.chunk ?? 64 * 1024;
    const stallMs = opts.stallMs ?? 1500;
    const chunk = Buffer.alloc(chunkSize, opts.fill ?? 0x61);
    let written = 0;
    let reportStall: (v: { stalled: boolean; written: number }) => void = () => undefined;
    const firstStall = new Promise<{ stalled: boolean; written: number }>((resolve) => (reportStall = resolve));
    const finished = (async () => {
      while (written < total) {
        const n = Math.min(chunkSize, total - written);
        const ok = this.socket.write(n === chunkSize ? chunk : chunk.subarray(0, n));
        written += n;
        if (ok) continue;
        const drained = new Promise<void>((resolve) => this.socket.once('drain', resolve));
        const timer = new Promise<'stall'>((resolve) => setTimeout(() => resolve('stall'), stallMs).unref());
        if ((await Promise.race([drained, timer])) === 'stall') {
          // What the kernel took: everything written minus what still waits in user space.
          reportStall({ stalled: true, written: written - this.socket.writableLength });
          await drained;
        }
        if (this.closed) throw new Error('upstream connection closed while streaming');
      }
      reportStall({ stalled: false, written });
    })();
    return { firstStall, finished };
  }

  close(): void {
    this.socket.destroy();
  }
}

export class ScriptedUpstream {
  private sessions: ScriptedSession[] = [];
  private sessionWaiters: Array<(s: ScriptedSession) => void> = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly capabilities: string,
  ) {}

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  static async start(capabilities = LEGACY_CAPABILITIES): Promise<ScriptedUpstream> {
    const server = net.createServer();
    const upstream = new ScriptedUpstream(server, capabilities);
    server.on('connection', (socket) => upstream.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    return upstream;
  }

  /** The next connection that logged in (in the order they did), for the test to script. */
  nextSession(timeoutMs = 10_000): Promise<ScriptedSession> {
    const ready = this.sessions.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no upstream login in time')), timeoutMs);
      this.sessionWaiters.push((s) => {
        clearTimeout(t);
        resolve(s);
      });
    });
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write(`* OK [CAPABILITY ${this.capabilities}] scripted upstream ready\r\n`);
    let session: ScriptedSession | undefined;
    let buffered = '';
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      let nl: number;
      while ((nl = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 2);
        if (session !== undefined) {
          session.pushLine(line);
          continue;
        }
        session = this.beforeLogin(socket, line);
      }
    });
  }

  /** The automatic part of a connection; returns the session once LOGIN succeeded. */
  private beforeLogin(socket: net.Socket, line: string): ScriptedSession | undefined {
    const m = /^(\S+) (\S+)(?: (.*))?$/.exec(line);
    const tag = m?.[1] ?? '*';
    const verb = m?.[2]?.toUpperCase();
    if (verb === 'CAPABILITY') {
      socket.write(`* CAPABILITY ${this.capabilities}\r\n${tag} OK CAPABILITY completed\r\n`);
    } else if (verb === 'LOGOUT') {
      socket.end(`* BYE scripted upstream logging out\r\n${tag} OK LOGOUT completed\r\n`);
    } else if (verb === 'LOGIN') {
      socket.write(`${tag} OK [CAPABILITY ${this.capabilities}] Logged in\r\n`);
      const session = new ScriptedSession(socket, (m?.[3] ?? '').split(' ')[0]!.replace(/"/g, ''));
      const waiter = this.sessionWaiters.shift();
      if (waiter !== undefined) waiter(session);
      else this.sessions.push(session);
      return session;
    } else {
      socket.write(`${tag} BAD scripted upstream: ${verb ?? 'nothing'} before LOGIN\r\n`);
    }
    return undefined;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * The upstream as startGateway's: with a master identity, so side connections count as
 * available and UIDPLUS is emulated (they log in with AUTHENTICATE, which this upstream
 * refuses: an emulation then goes on without its side lookup).
 */
export function scriptedUpstreamInfo(upstream: ScriptedUpstream): UpstreamLike {
  return { imapHost: '127.0.0.1', imapPort: upstream.port, master: { user: 'gateway', password: 'masterpw' } };
}
