/**
 * Sending a command of the gateway's own whose literals wait for the server's "+" (RFC
 * 3501 §7.5): one sender for the side connections (upstream.ts) and for commands run on a
 * client's own upstream connection (session.ts internalCommand).
 *
 * Every literal is announced synchronizing, even where LITERAL+ is offered: a server that
 * refuses the line before a literal may read the literal's bytes as commands (Dovecot 2.3
 * does, even for {n+}); after its "+" they are certainly data. A command answered instead
 * of continued is not sent further.
 */
import { literalEcho, type LiteralEcho } from './echo.js';
import type { CommandPiece } from './writer.js';

export interface GatedOutput {
  write(data: Buffer): void;
  /** After an announcement: true at the server's "+", false when the command was answered (or failed) instead. */
  goAhead(): Promise<boolean>;
  /** The command's answer may quote this literal back, line breaks and all (echo.ts). */
  expectEcho(echo: LiteralEcho): void;
}

const CRLF = Buffer.from('\r\n');

/** Writes `tag SP` and the pieces, each literal after the server's go-ahead. */
export async function sendGated(tag: string, pieces: readonly CommandPiece[], out: GatedOutput): Promise<void> {
  let line: Buffer[] = [Buffer.from(`${tag} `)];
  for (const piece of pieces) {
    if ('text' in piece) {
      line.push(piece.text);
      continue;
    }
    line.push(Buffer.from(`${piece.binary ? '~' : ''}{${piece.literal.length}}\r\n`));
    out.write(Buffer.concat(line));
    line = [];
    if (!(await out.goAhead())) return;
    const echo = literalEcho(piece.literal);
    if (echo !== undefined) out.expectEcho(echo);
    out.write(piece.literal);
  }
  line.push(CRLF);
  out.write(Buffer.concat(line));
}
