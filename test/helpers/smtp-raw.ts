/** A bare SMTP client for assertions on exact replies (nodemailer hides them). */
import { RawClient, openSocket, type ConnectOptions } from './raw-client.js';

export interface Reply {
  code: number;
  /** All lines joined with \n, including codes. */
  text: string;
}

export class RawSmtp extends RawClient {
  static async connect(port: number, opts: ConnectOptions = {}): Promise<RawSmtp> {
    return new RawSmtp(await openSocket(port, opts));
  }

  /**
   * A session past EHLO and AUTH PLAIN (RFC 4954) as user (alice by default); throws
   * unless the AUTH got 235.
   */
  static async authenticated(port: number, opts: ConnectOptions & { user?: string; password?: string; ehlo?: string } = {}): Promise<RawSmtp> {
    const c = await RawSmtp.connect(port, opts);
    await c.reply();
    await c.command(`EHLO ${opts.ehlo ?? 'client.example.org'}`);
    const plain = Buffer.from(`\0${opts.user ?? 'alice'}\0${opts.password ?? 'password'}`).toString('base64');
    const a = await c.command(`AUTH PLAIN ${plain}`);
    if (a.code !== 235) throw new Error(a.text);
    return c;
  }

  /** The next complete reply (multi-line "250-" ... "250 "), or undefined once closed. */
  reply(timeoutMs = 10_000): Promise<Reply | undefined> {
    return this.waitFor(
      () => {
        const m = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffer.toString('latin1'));
        if (m === null) return undefined;
        this.buffer = this.buffer.subarray(m[0].length);
        return { code: Number(m[1]), text: m[0].replace(/\r/g, '').trimEnd() };
      },
      timeoutMs,
      () => `a reply; buffer: ${JSON.stringify(this.buffer.subarray(0, 200).toString('latin1'))}`,
    );
  }

  async command(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    const r = await this.reply(timeoutMs);
    if (r === undefined) throw new Error(`connection closed after ${line}`);
    return r;
  }
}
