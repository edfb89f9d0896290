/** LOGIN (RFC 3501 §6.2.3): the client's own credentials open its upstream session. */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';

export const login: CommandHandler = async (ctx, line) => {
  if (!ctx.plaintextAllowed) {
    // RFC 3501 §6.2.3 + §7.1: LOGINDISABLED is advertised, so refuse with PRIVACYREQUIRED (RFC 5530).
    return ctx.tagged(line.tag, 'NO', 'Use STARTTLS or the TLS port before LOGIN', 'PRIVACYREQUIRED');
  }
  const user = stringArgument(line.items[1]);
  const password = stringArgument(line.items[2]);
  if (user === undefined || password === undefined || line.items.length !== 3) {
    return ctx.tagged(line.tag, 'BAD', 'LOGIN expects a user name and a password');
  }
  await ctx.login(line.tag, { user, password, mechanism: 'login' });
};
