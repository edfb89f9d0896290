/** CAPABILITY (RFC 3501 §6.1.1): answered by the gateway from its own computed list. */
import type { CommandHandler } from './context.js';

export const capability: CommandHandler = (ctx, line) => {
  if (line.items.length > 1) return ctx.tagged(line.tag, 'BAD', 'CAPABILITY takes no arguments');
  ctx.untagged(`CAPABILITY ${ctx.capabilities().join(' ')}`);
  ctx.tagged(line.tag, 'OK', 'Capability completed');
};
