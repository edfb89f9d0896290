/** LOGOUT before login (RFC 3501 §6.1.3); after login it is passed through so the upstream session ends cleanly. */
import type { CommandHandler } from './context.js';

export const logout: CommandHandler = (ctx, line) => {
  if (line.items.length > 1) return ctx.tagged(line.tag, 'BAD', 'LOGOUT takes no arguments');
  ctx.logout(line.tag);
};
