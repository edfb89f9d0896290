/**
 * A bare IMAP client over a socket, for assertions on the exact wire (imapflow hides it).
 * Reads responses line by line, with literals taken whole.
 */
import net from 'node:net';
import tls from 'node:tls';

export class RawImap {
  private buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  readonly received: string[] = [];

  private constructor(public socket: net.Socket) {
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  static connect(port: number, opts: { tls?: boolean } = {}): Promise<RawImap> {
    return new Promise((resolve, reject) => {
      const socket = opts.tls
        ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
        : net.connect({ host: '127.0.0.1', port });
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve(new RawImap(socket)));
      socket.once('error', reject);
    });
  }

  /** Upgrades after a STARTTLS OK. */
  async starttls(): Promise<void> {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    const secure = tls.connect({ socket: this.socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Next complete line (CRLF stripped), or undefined once the connection is closed. */
  async line(timeoutMs = 10_000): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const nl = this.buffer.indexOf('\r\n');
      if (nl >= 0) {
        const line = this.buffer.subarray(0, nl).toString('utf8');
        this.buffer = this.buffer.subarray(nl + 2);
        this.received.push(line);
        return line;
      }
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for a line; got so far: ${this.received.slice(-5).join(' | ')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Reads lines until the tagged response for tag; returns all lines read (the tagged one last). */
  async until(tag: string, timeoutMs = 10_000): Promise<string[]> {
    const lines: string[] = [];
    while (true) {
      const line = await this.line(timeoutMs);
      if (line === undefined) throw new Error(`closed before ${tag} completed; got: ${lines.join(' | ')}`);
      lines.push(line);
      if (line.startsWith(`${tag} `)) return lines;
    }
  }

  async command(tag: string, text: string, timeoutMs?: number): Promise<string[]> {
    this.write(`${tag} ${text}\r\n`);
    return this.until(tag, timeoutMs);
  }

  /** Waits for the server to close the connection; lines received meanwhile are returned. */
  async closedAfter(timeoutMs = 10_000): Promise<string[]> {
    const lines: string[] = [];
    while (true) {
      const line = await this.line(timeoutMs);
      if (line === undefined) return lines;
      lines.push(line);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
