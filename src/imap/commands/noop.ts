/** NOOP before login (RFC 3501 §6.1.2); after login it is passed through to the upstream. */
import type { CommandHandler } from './context.js';

export const noop: CommandHandler = (ctx, line) => {
  if (line.items.length > 1) return ctx.tagged(line.tag, 'BAD', 'NOOP takes no arguments');
  ctx.tagged(line.tag, 'OK', 'NOOP completed');
};
