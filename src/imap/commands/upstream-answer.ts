/**
 * A command the gateway ran upstream on the client's behalf (internalCommand) answered to
 * the client as the upstream answered it: same status, code and text, under the client's tag.
 */
import type { CommandContext } from './context.js';
import { parseStatusLine } from '../protocol/status-line.js';

/** The upstream's tagged completion as the client's: status, code (or ours instead; dropCode hides the upstream's) and text. */
export function answerAsUpstream(ctx: CommandContext, tag: string, r: { status: string; line: string }, code?: string, dropCode?: RegExp): void {
  const status = parseStatusLine(r.line);
  // No line (the upstream went away) or a status that cannot complete a command (RFC 3501 §7.1).
  if (status === undefined || status.status === 'BYE' || status.status === 'PREAUTH') {
    return ctx.tagged(tag, 'NO', 'Upstream server unavailable', 'UNAVAILABLE');
  }
  const upstreamCode = status.code !== undefined && !(dropCode?.test(status.code) ?? false) ? status.code : undefined;
  ctx.tagged(tag, status.status, asSent(status.text) || 'done', code ?? (upstreamCode && asSent(upstreamCode)));
}

/**
 * internalCommand reads the upstream's line byte for byte (latin1) and ctx.tagged writes
 * UTF-8: decoded back, the upstream's UTF-8 text (RFC 6855 §3 lets servers send it) goes
 * out as the upstream sent it, not encoded twice.
 */
function asSent(text: string): string {
  return Buffer.from(text, 'latin1').toString('utf8');
}
