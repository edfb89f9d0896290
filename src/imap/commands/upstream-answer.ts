/**
 * A command the gateway ran upstream on the client's behalf (internalCommand) answered to
 * the client as the upstream answered it: same status, code and text, under the client's tag.
 */
import type { CommandContext } from './context.js';
import { parseStatusLine, sentText } from '../protocol/status-line.js';

/** The upstream's tagged completion as the client's: status, code (or ours instead; dropCode hides the upstream's) and text. */
export function answerAsUpstream(ctx: CommandContext, tag: string, r: { status: string; line: string }, code?: string, dropCode?: RegExp): void {
  const status = parseStatusLine(r.line);
  // No line (the upstream went away) or a status that cannot complete a command (RFC 3501 §7.1).
  if (status === undefined || status.status === 'BYE' || status.status === 'PREAUTH') {
    return ctx.tagged(tag, 'NO', 'Upstream server unavailable', 'UNAVAILABLE');
  }
  const upstreamCode = status.code !== undefined && !(dropCode?.test(status.code) ?? false) ? status.code : undefined;
  ctx.tagged(tag, status.status, sentText(status.text) || 'done', code ?? (upstreamCode && sentText(upstreamCode)));
}
