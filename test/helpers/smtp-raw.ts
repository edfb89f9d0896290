/** A bare SMTP client for assertions on exact replies (nodemailer hides them). */
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  /** All lines joined with \n, including codes. */
  text: string;
}

export class RawSmtp {
  private buffer = '';
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(public socket: net.Socket) {
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
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

  static connect(port: number, opts: { tls?: boolean } = {}): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const socket = opts.tls ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }) : net.connect({ host: '127.0.0.1', port });
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve(new RawSmtp(socket)));
      socket.once('error', reject);
    });
  }

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

  /** The next complete reply (multi-line "250-" ... "250 "), or undefined once closed. */
  async reply(timeoutMs = 10_000): Promise<Reply | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const m = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffer);
      if (m) {
        this.buffer = this.buffer.slice(m[0].length);
        return { code: Number(m[1]), text: m[0].replace(/\r/g, '').trimEnd() };
      }
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for a reply; buffer: ${JSON.stringify(this.buffer.slice(0, 200))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async command(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    const r = await this.reply(timeoutMs);
    if (r === undefined) throw new Error(`connection closed after ${line}`);
    return r;
  }

  close(): void {
    this.socket.destroy();
  }
}
