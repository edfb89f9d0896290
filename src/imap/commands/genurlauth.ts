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
 *
 * Only for messages that exist (README: "for the user's own messages"): every URL's
 * mailbox, UIDVALIDITY (when given) and UID are looked up on a side connection before any
 * token is made, because making one stores the mailbox's access key, and a key must never
 * be stored for a name that is not a real mailbox (a name with CR LF in it, say).
 */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { ImapUrlError, appendAuthorization, parseImapUrl, rumpUrl, type ImapUrl } from '../protocol/url.js';
import { badUrlCode, quoteString } from '../protocol/writer.js';
import { MECHANISM } from '../../lemonade/urlauth.js';
import { isOurHost, partRefOf } from '../../lemonade/authorize-url.js';
import { messageExists } from '../../lemonade/fetch-part.js';
import { SideLoginRefused } from '../side-pool.js';
import { UpstreamUnavailable } from '../../upstream/connect.js';
import type { CommandContext } from './context.js';
import { urlauthIssued } from '../../metrics/metrics.js';

export const genurlauth: CommandHandler = async (ctx, line) => {
  const args = line.items.slice(1);
  if (args.length === 0 || args.length % 2 !== 0) {
    return ctx.tagged(line.tag, 'BAD', 'GENURLAUTH expects pairs of URL and mechanism');
  }
  const user = ctx.authenticatedUser!;
  const wanted: Array<{ text: string; url: ImapUrl & { mailbox: string; uid: number }; kind: string }> = [];
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
      return ctx.tagged(line.tag, 'NO', `Bad URL: ${err.message.slice(0, 120)}`, badUrlCode(text));
    }
    const url = parsed.url;
    if (parsed.rumpText !== text || url.urlauth === undefined || url.urlauth.token !== undefined) {
      return ctx.tagged(line.tag, 'NO', 'Not a rump URL: it must end with ;URLAUTH=access', badUrlCode(text));
    }
    if (url.uid === undefined || url.mailbox === undefined || url.server === undefined) {
      return ctx.tagged(line.tag, 'NO', 'Only a message URL (with ;UID=) can be authorized', badUrlCode(text));
    }
    if (!isOurHost(url.server.host, ctx.config.hostname)) {
      return ctx.tagged(line.tag, 'NO', `URL must name this server (${ctx.config.hostname})`, badUrlCode(text));
    }
    if (url.server.user !== user) {
      return ctx.tagged(line.tag, 'NO', 'URL must name the logged-in user as owner', badUrlCode(text));
    }
    wanted.push({ text, url: url as ImapUrl & { mailbox: string; uid: number }, kind: url.urlauth.access.kind });
  }
  // Only for the user's own messages, and no key for a mailbox that is not there: each
  // URL's mailbox, UIDVALIDITY and UID are looked up first; a miss is NO [BADURL url]
  // (the response code of RFC 4469 §6, which RFC 4467 §6.1 failures carry here too).
  const refusal = await firstMissing(ctx, user, wanted);
  if (refusal !== undefined) return ctx.tagged(line.tag, 'NO', refusal.text, refusal.code);
  const issued: string[] = [];
  for (const { text, url } of wanted) {
    const token = await ctx.lemonade.urlauth.token({ owner: user, mailbox: url.mailbox, rump: rumpUrl(url) });
    issued.push(appendAuthorization(text, MECHANISM, token));
  }
  const kinds = wanted.map((w) => w.kind);
  ctx.untagged(`GENURLAUTH ${issued.map((u) => quoteString(u)).join(' ')}`);
  for (const kind of kinds) urlauthIssued.inc({ access: kind });
  ctx.tagged(line.tag, 'OK', 'GENURLAUTH completed');
};

const MISSING: Record<'no-mailbox' | 'uidvalidity' | 'no-message', string> = {
  'no-mailbox': 'No such mailbox',
  uidvalidity: 'The mailbox has another UIDVALIDITY',
  'no-message': 'No such message',
};

/** The first URL whose message is not there, as the refusal to send; undefined when all are. */
async function firstMissing(
  ctx: CommandContext,
  user: string,
  wanted: ReadonlyArray<{ text: string; url: ImapUrl & { mailbox: string; uid: number } }>,
): Promise<{ text: string; code?: string } | undefined> {
  try {
    return await ctx.lemonade.sidePool.withConnection(user, async (conn) => {
      for (const { text, url } of wanted) {
        // The wire name (modified UTF-7, RFC 3501 §5.1.3): a CR or LF in the name cannot reach the upstream as a line end.
        const found = await messageExists(conn, partRefOf(url));
        if (found !== 'ok') return { text: `${MISSING[found]}: URL not authorized`, code: badUrlCode(text) };
      }
      return undefined;
    });
  } catch (err) {
    // The side login failing means no URL could be checked: the first is the one named.
    if (err instanceof SideLoginRefused) return { text: 'URL not authorized', code: badUrlCode(wanted[0]?.text ?? '') };
    if (err instanceof UpstreamUnavailable) return { text: 'Upstream server unavailable, try again later', code: 'UNAVAILABLE' };
    throw err;
  }
}
