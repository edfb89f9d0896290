/**
 * GENURLAUTH (RFC 4467 §6.1; URL grammar RFC 5092 §6.1.2, §11), emulated:
 *
 *   C: a GENURLAUTH "imap://joe@host/INBOX/;UID=20/;SECTION=1.2;URLAUTH=submit+fred" INTERNAL
 *   S: * GENURLAUTH "imap://joe@host/INBOX/;UID=20/;SECTION=1.2;URLAUTH=submit+fred:INTERNAL:91354a..."
 *   S: a OK GENURLAUTH completed
 *
 * Only URLs that name this gateway and the logged-in user as owner are authorized (a
 * user can grant access to their own mail, nobody else's); the answer is each rump URL
 * exactly as given plus ":mechanism:token". All or nothing: one bad URL fails the command.
 */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { ImapUrlError, appendAuthorization, parseImapUrl, rumpUrl } from '../protocol/url.js';
import { quoteString } from '../protocol/writer.js';
import { MECHANISM } from '../../lemonade/urlauth.js';
import { isOurHost } from '../../lemonade/authorize-url.js';
import { urlauthIssued } from '../../metrics/metrics.js';

export const genurlauth: CommandHandler = async (ctx, line) => {
  const args = line.items.slice(1);
  if (args.length === 0 || args.length % 2 !== 0) {
    return ctx.tagged(line.tag, 'BAD', 'GENURLAUTH expects pairs of URL and mechanism');
  }
  const user = ctx.authenticatedUser!;
  const issued: string[] = [];
  const kinds: string[] = [];
  for (let i = 0; i < args.length; i += 2) {
    const text = stringArgument(args[i]);
    const mechanism = args[i + 1]?.type === 'atom' ? (args[i + 1] as { value: string }).value : undefined;
    if (text === undefined || mechanism === undefined) return ctx.tagged(line.tag, 'BAD', 'GENURLAUTH expects pairs of URL and mechanism');
    // RFC 4467 §7: INTERNAL is the mechanism every URLAUTH server has, and ours is the only one.
    if (mechanism.toUpperCase() !== MECHANISM) return ctx.tagged(line.tag, 'NO', `Unsupported URLAUTH mechanism ${mechanism.slice(0, 40)}`);
    let parsed;
    try {
      parsed = parseImapUrl(text);
    } catch (err) {
      if (!(err instanceof ImapUrlError)) throw err;
      return ctx.tagged(line.tag, 'NO', `Bad URL: ${err.message.slice(0, 120)}`, badUrl(text));
    }
    const url = parsed.url;
    if (parsed.rumpText !== text || url.urlauth === undefined || url.urlauth.token !== undefined) {
      return ctx.tagged(line.tag, 'NO', 'Not a rump URL: it must end with ;URLAUTH=access', badUrl(text));
    }
    if (url.uid === undefined || url.mailbox === undefined || url.server === undefined) {
      return ctx.tagged(line.tag, 'NO', 'Only a message URL (with ;UID=) can be authorized', badUrl(text));
    }
    if (!isOurHost(url.server.host, ctx.config.hostname)) {
      return ctx.tagged(line.tag, 'NO', `URL must name this server (${ctx.config.hostname})`, badUrl(text));
    }
    if (url.server.user !== user) {
      return ctx.tagged(line.tag, 'NO', 'URL must name the logged-in user as owner', badUrl(text));
    }
    const token = await ctx.lemonade.urlauth.token({ owner: user, mailbox: url.mailbox, rump: rumpUrl(url) });
    issued.push(appendAuthorization(text, MECHANISM, token));
    kinds.push(url.urlauth.access.kind);
  }
  ctx.untagged(`GENURLAUTH ${issued.map((u) => quoteString(u)).join(' ')}`);
  for (const kind of kinds) urlauthIssued.inc({ access: kind });
  ctx.tagged(line.tag, 'OK', 'GENURLAUTH completed');
};

/** RFC 4469 §6 BADURL response code naming the URL (an atom or quoted string of it). */
function badUrl(text: string): string | undefined {
  // A URL that cannot go in a response code as is is not echoed.
  return /^[\x21-\x7e]+$/.test(text) && !/[\]"\\]/.test(text) && text.length <= 1000 ? `BADURL ${text}` : undefined;
}
