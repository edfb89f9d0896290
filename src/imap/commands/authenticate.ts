/**
 * AUTHENTICATE (RFC 3501 §6.2.2) with the PLAIN mechanism (RFC 4616), initial response
 * included (SASL-IR, RFC 4959). The gateway needs the password to log in upstream, so
 * only PLAIN is offered.
 */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';

/** RFC 4648 base64 without whitespace; Buffer.from would silently skip junk. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function decodePlain(response: string): { authzid: string; user: string; password: string } | undefined {
  if (!BASE64.test(response)) return undefined;
  const fields = Buffer.from(response, 'base64').toString('utf8').split('\0');
  if (fields.length !== 3) return undefined;
  const [authzid, user, password] = fields as [string, string, string];
  if (user === '' || password === '') return undefined;
  return { authzid, user, password };
}

export const authenticate: CommandHandler = async (ctx, line) => {
  const mechanism = stringArgument(line.items[1])?.toUpperCase();
  if (mechanism === undefined || line.items.length > 3) {
    return ctx.tagged(line.tag, 'BAD', 'AUTHENTICATE expects a mechanism name');
  }
  if (mechanism !== 'PLAIN') return ctx.tagged(line.tag, 'NO', 'Unsupported authentication mechanism', 'CANNOT');
  if (!ctx.plaintextAllowed) {
    return ctx.tagged(line.tag, 'NO', 'Use STARTTLS or the TLS port before AUTHENTICATE', 'PRIVACYREQUIRED');
  }
  let response = stringArgument(line.items[2]);
  // RFC 4959 §3: "=" is an empty initial response.
  if (response === '=') response = '';
  if (response === undefined) response = await ctx.continuation('');
  if (response === '*') return ctx.tagged(line.tag, 'BAD', 'Authentication cancelled');
  const plain = decodePlain(response);
  if (plain === undefined) return ctx.tagged(line.tag, 'BAD', 'Malformed PLAIN response');
  await ctx.login(line.tag, {
    user: plain.user,
    password: plain.password,
    authzid: plain.authzid !== '' && plain.authzid !== plain.user ? plain.authzid : undefined,
    mechanism: 'plain',
  });
};
