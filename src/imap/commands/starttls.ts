/** STARTTLS (RFC 3501 §6.2.1). */
import type { CommandHandler } from './context.js';

export const starttls: CommandHandler = async (ctx, line) => {
  if (line.items.length > 1) return ctx.tagged(line.tag, 'BAD', 'STARTTLS takes no arguments');
  if (ctx.listener.tls !== 'starttls' || ctx.tlsActive) {
    return ctx.tagged(line.tag, 'BAD', ctx.tlsActive ? 'TLS is already active' : 'STARTTLS is not offered here');
  }
  await ctx.startTls(line.tag);
};
