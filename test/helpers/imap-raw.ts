/**
 * A bare IMAP client over a socket, for assertions on the exact wire (imapflow hides it).
 * Reads responses line by line, with literals taken whole.
 */
import { RawClient, openSocket, type ConnectOptions } from './raw-client.js';

export class RawImap extends RawClient {
  readonly received: string[] = [];

  static async connect(port: number, opts: ConnectOptions = {}): Promise<RawImap> {
    return new RawImap(await openSocket(port, opts));
  }

  /** Connected over implicit TLS, greeting read, logged in with LOGIN under tag "L" (throws if refused). */
  static async loggedIn(port: number, user = 'alice', password = 'password'): Promise<RawImap> {
    const c = await RawImap.connect(port, { tls: true });
    await c.line();
    const r = await c.command('L', `LOGIN ${user} ${password}`);
    if (!r.at(-1)!.startsWith('L OK')) throw new Error(r.join('\n'));
    return c;
  }

  /** Next complete line (CRLF stripped), or undefined once the connection is closed. */
  line(timeoutMs = 10_000): Promise<string | undefined> {
    return this.waitFor(
      () => {
        const nl = this.buffer.indexOf('\r\n');
        if (nl < 0) return undefined;
        const line = this.buffer.subarray(0, nl).toString('utf8');
        this.buffer = this.buffer.subarray(nl + 2);
        this.received.push(line);
        return line;
      },
      timeoutMs,
      () => `a line; got so far: ${this.received.slice(-5).join(' | ')}`,
    );
  }

  /** The next n bytes exactly (a literal's content), or throws once the connection is closed. */
  async bytes(n: number, timeoutMs = 30_000): Promise<Buffer> {
    const got = await this.waitFor(
      () => {
        if (this.buffered < n) return undefined;
        const out = this.buffer.subarray(0, n);
        this.buffer = this.buffer.subarray(n);
        return out;
      },
      timeoutMs,
      () => `${n} bytes; have ${this.buffered}`,
    );
    if (got === undefined) throw new Error(`closed before ${n} bytes arrived`);
    return got;
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

}
