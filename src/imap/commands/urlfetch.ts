/**
 * URLFETCH (RFC 4467 §6.3), emulated: each URLAUTH-authorized URL is checked by the
 * gateway (token, expiry, access identifier; lemonade/authorize-url.ts) and its content
 * fetched from the upstream on a side connection as the mailbox owner, streamed into
 *
 *   * URLFETCH "url" {size}\r\n<content>
 *
 * A URL that fails for any reason is answered "* URLFETCH "url" NIL" and the others are
 * still served; the command itself succeeds.
 */
import type { CommandContext, CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { quoteString, responseEnd, untaggedLiteralStart } from '../protocol/writer.js';
import { authorizeForUser } from '../../lemonade/authorize-url.js';
import { fetchPart } from '../../lemonade/fetch-part.js';
import type { LiteralSink } from '../upstream.js';
import { SideLoginRefused } from '../side-pool.js';
import { UpstreamUnavailable } from '../../upstream/connect.js';
import { urlauthFetchBytes, urlauthFetches } from '../../metrics/metrics.js';

export const urlfetch: CommandHandler = async (ctx, line) => {
  const urls = line.items.slice(1).map(stringArgument);
  if (urls.length === 0 || urls.some((u) => u === undefined)) return ctx.tagged(line.tag, 'BAD', 'URLFETCH expects one or more URLs');
  const limit = ctx.config.imap.urlauth.maxUrlsPerCommand;
  if (urls.length > limit) return ctx.tagged(line.tag, 'BAD', `At most ${limit} URLs per URLFETCH`);
  for (const text of urls as string[]) {
    const ok = await fetchOne(ctx, text);
    if (ok === 'broken') return; // the session is closing
  }
  ctx.tagged(line.tag, 'OK', 'URLFETCH completed');
};

async function fetchOne(ctx: CommandContext, text: string): Promise<'served' | 'nil' | 'broken'> {
  const user = ctx.authenticatedUser!;
  const refuse = (reason: string): 'nil' => {
    urlauthFetches.inc({ by: 'urlfetch', result: 'refused', reason });
    ctx.untagged(`URLFETCH ${quoteString(text)} NIL`);
    return 'nil';
  };
  const auth = await authorizeForUser(ctx.lemonade.urlauth, ctx.config, user, text);
  if (!auth.ok) {
    ctx.log.info({ reason: auth.reason }, 'URLFETCH refused');
    return refuse(auth.reason);
  }
  let started = false;
  let streamed = 0;
  try {
    const result = await ctx.lemonade.sidePool.withConnection(auth.owner, (conn) =>
      fetchPart(conn, auth.ref, (size): LiteralSink => {
        started = true;
        // The literal's size is known before its first byte: the header can go first.
        ctx.writeData(untaggedLiteralStart(`URLFETCH ${quoteString(text)}`, size));
        return {
          write(chunk) {
            streamed += chunk.length;
            return ctx.writeData(chunk);
          },
          onceDrain(fn) {
            void ctx.clientDrained().then(fn);
          },
          end() {
            ctx.writeData(responseEnd());
          },
        };
      }),
    );
    if (!result.ok) return refuse(result.reason.replace('-', '_'));
    urlauthFetches.inc({ by: 'urlfetch', result: 'allowed', reason: 'none' });
    urlauthFetchBytes.inc({ by: 'urlfetch' }, result.size);
    return 'served';
  } catch (err) {
    if (!(err instanceof UpstreamUnavailable) && !(err instanceof SideLoginRefused)) throw err;
    ctx.log.warn({ err: err.message, streamed }, 'URLFETCH: upstream failed');
    if (!started) return refuse(err instanceof SideLoginRefused ? 'no_mailbox' : 'unavailable');
    // Mid-literal: the promised size cannot be met, and the client cannot be resynchronized.
    ctx.bye('Upstream server connection lost during URLFETCH');
    return 'broken';
  }
}
