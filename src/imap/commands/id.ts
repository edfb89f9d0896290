/**
 * ID before login (RFC 2971 §3.1): there is no upstream session yet, so the gateway
 * answers for itself. After login ID is passed through when the upstream advertises it.
 */
import type { CommandHandler } from './context.js';

export const id: CommandHandler = (ctx, line) => {
  const arg = line.items[1];
  if (line.items.length !== 2 || arg === undefined || (arg.type !== 'list' && arg.type !== 'nil')) {
    return ctx.tagged(line.tag, 'BAD', 'ID expects a parameter list or NIL');
  }
  ctx.untagged('ID ("name" "lemonade-gateway")');
  ctx.tagged(line.tag, 'OK', 'ID completed');
};
