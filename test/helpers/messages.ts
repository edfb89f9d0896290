/** Test messages: a two-part message whose second part is a base64 attachment of random bytes. */
import { randomBytes } from 'node:crypto';

export interface WithAttachment {
  raw: Buffer;
  /** The attachment's MIME header (BODY[2.MIME]). */
  mime: string;
  /** The attachment's encoded body (BODY[2]). */
  body: string;
}

export function withAttachment(bytes: number, from = 'bob@example.org', to = 'alice@example.org'): WithAttachment {
  const body = randomBytes(bytes).toString('base64').replace(/.{76}/g, '$&\r\n');
  const mime = 'Content-Type: application/octet-stream; name="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n';
  const raw = Buffer.from(
    `From: ${from}\r\nTo: ${to}\r\nSubject: the data\r\nMIME-Version: 1.0\r\n` +
      'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n' +
      `--outer\r\n${mime}${body}\r\n--outer--\r\n`,
  );
  return { raw, mime, body };
}
