/**
 * The socket half of the bare test clients (RawImap, RawSmtp): connect with or without
 * TLS, upgrade after STARTTLS, buffer what arrives, and wait until a protocol-specific
 * parser can take something complete off the buffer.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface ConnectOptions {
  tls?: boolean;
  /** Another loopback source address (127.0.0.2, ...) to look like a different client. */
  localAddress?: string;
}

export function openSocket(port: number, opts: ConnectOptions = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const where = { host: '127.0.0.1', port, localAddress: opts.localAddress };
    const socket = opts.tls ? tls.connect({ ...where, rejectUnauthorized: false }) : net.connect(where);
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

export class RawClient {
  /** Received and not yet taken; joined only when looked at (a 10 MB literal arrives in hundreds of chunks). */
  private parts: Buffer[] = [];
  private partsLength = 0;

  protected get buffer(): Buffer {
    if (this.parts.length !== 1) this.parts = [Buffer.concat(this.parts, this.partsLength)];
    return this.parts[0]!;
  }

  protected set buffer(value: Buffer) {
    this.parts = [value];
    this.partsLength = value.length;
  }

  /** Bytes received and not yet taken. */
  protected get buffered(): number {
    return this.partsLength;
  }
  private waiters: Array<() => void> = [];
  closed = false;
  /** Application bytes written and read on this connection (after TLS, before it). */
  bytesSent = 0;
  bytesReceived = 0;

  protected constructor(public socket: net.Socket) {
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.bytesReceived += chunk.length;
      this.parts.push(chunk);
      this.partsLength += chunk.length;
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

  /** Upgrades the connection after the server's go-ahead for STARTTLS. */
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
    this.bytesSent += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    this.socket.write(data);
  }

  /**
   * Waits until take() finds something complete in the buffer (it removes what it takes);
   * undefined once the connection closed with nothing complete; throws after timeoutMs.
   */
  protected async waitFor<T>(take: () => T | undefined, timeoutMs: number, describe: () => string): Promise<T | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const got = take();
      if (got !== undefined) return got;
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${describe()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
