/**
 * A command the gateway ran upstream on the client's behalf (internalCommand) answered to
 * the client as the upstream answered it: same status, code and text, under the client's tag.
 */
import type { CommandContext } from './context.js';

/** The upstream's tagged completion as the client's: status, code (or ours instead; dropCode hides the upstream's) and text. */
export function answerAsUpstream(ctx: CommandContext, tag: string, r: { status: string; line: string }, code?: string, dropCode?: RegExp): void {
  const m = /^\S+ (OK|NO|BAD) (?:\[([^\]]*)\] ?)?(.*?)\r?\n?$/is.exec(r.line);
  if (m === null) return ctx.tagged(tag, 'NO', 'Upstream server unavailable', 'UNAVAILABLE');
  const upstreamCode = m[2] !== undefined && !(dropCode?.test(m[2]) ?? false) ? m[2] : undefined;
  ctx.tagged(tag, m[1]!.toUpperCase() as 'OK' | 'NO' | 'BAD', m[3] || 'done', code ?? upstreamCode);
}
