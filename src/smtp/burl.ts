/**
 * BURL (RFC 4468) resolved inside the gateway: a URL naming this gateway is checked exactly
 * as URLFETCH checks it (lemonade/authorize-url.ts), with the gateway acting as the
 * submission server for the SMTP-authenticated user, and its content fetched on a side
 * connection as the mailbox owner, streamed into the message being relayed. A URL naming
 * a server the operator listed (submission.burl.allowedHosts) is resolved there with
 * URLFETCH (burl-remote.ts); any other host is refused without contacting it (no SSRF).
 */
import type { Lemonade } from '../lemonade/services.js';
import type { Config } from '../config/schema.js';
import { authorizeUrl, type AuthorizeFailure } from '../lemonade/authorize-url.js';
import { fetchPart } from '../lemonade/fetch-part.js';
import type { LiteralSink } from '../imap/upstream.js';
import { SideLoginRefused } from '../imap/side-pool.js';
import { UpstreamUnavailable } from '../upstream/connect.js';
import { fetchRemote, parseAbsoluteUrl, submitAccessMatches, trustedHostFor, type RemoteRefusal } from './burl-remote.js';
import { burlResolutionDuration, urlauthFetchBytes, urlauthFetches } from '../metrics/metrics.js';
import type { CodedReply } from './protocol/reply.js';
import { Replies } from './protocol/replies.js';

/** RFC 4468 §3.5: burl-param = "BURL" SP absolute-URI [SP end-marker]; end-marker = "LAST". */
export function parseBurlArgs(args: string): { url: string; last: boolean } | undefined {
  const m = /^(\S+)(?: +(LAST))?$/i.exec(args.trim());
  if (m === null) return undefined;
  return { url: m[1]!, last: m[2] !== undefined };
}

export type BurlOutcome =
  | { ok: true; size: number }
  | { ok: false; reply: CodedReply; reason: string };

/** Where the content goes, and whether `size` more octets may be added (SIZE limit). */
export interface BurlTarget {
  fits(size: number): boolean;
  sink(): LiteralSink;
}

const refused = (reply: CodedReply, reason: string, by = 'burl'): BurlOutcome => {
  urlauthFetches.inc({ by, result: 'refused', reason });
  return { ok: false, reply, reason };
};

/** RFC 4468 §6 / RFC 3463: how each reason a URL is not served reads to the client. */
function refusal(reason: AuthorizeFailure): BurlOutcome {
  switch (reason) {
    case 'syntax':
      return refused(Replies.burlInvalidUrl, reason);
    case 'not_ours':
      // RFC 4468 §6: "554 5.7.8 URL resolution requires trust relationship".
      return refused(Replies.burlTrustRequired, reason);
    case 'access':
    case 'anonymous_disabled':
      // RFC 4468 §3.3, RFC 4467 §3: the token is good, the access identifier is not for us.
      return refused(Replies.burlAccessDenied, reason);
    default:
      // RFC 4468 §6: 554 5.7.0 when the URL is not authorized for this submission.
      return refused(Replies.burlNotAuthorized, reason);
  }
}

/** Takes the bytes of content refused for its size, so the IMAP exchange can end cleanly. */
const discard: LiteralSink = { write: () => true, onceDrain: (fn) => fn(), end: () => undefined };

export async function resolveBurl(lemonade: Lemonade, config: Config, smtpUser: string, url: string, target: BurlTarget): Promise<BurlOutcome> {
  const started = performance.now();
  const outcome = await resolve(lemonade, config, smtpUser, url, target);
  burlResolutionDuration.observe({ result: outcome.ok ? 'allowed' : 'refused' }, (performance.now() - started) / 1000);
  return outcome;
}

async function resolve(lemonade: Lemonade, config: Config, smtpUser: string, url: string, target: BurlTarget): Promise<BurlOutcome> {
  const auth = await authorizeUrl(
    lemonade.urlauth,
    url,
    // The gateway is the submission server, acting for the SMTP-authenticated user: as one
    // logged in with submit credentials (RFC 4468 §3.3), so by RFC 4467 §3 it may use
    // "submit+<that user>", "authuser" and (where enabled) "anonymous" URLs; never "user+"
    // ones, not even the user's own, nor another user's "submit+" ones.
    { submitServer: true, onBehalfOf: smtpUser },
    { hostname: config.hostname, allowAnonymous: config.imap.urlauth.allowAnonymousFetch },
  );
  if (!auth.ok && auth.reason === 'not_ours') return resolveRemote(config, smtpUser, url, target);
  if (!auth.ok) return refusal(auth.reason);
  let tooBig = false;
  try {
    const result = await lemonade.sidePool.withConnection(auth.owner, (conn) =>
      fetchPart(conn, auth.ref, (size) => {
        tooBig = !target.fits(size);
        return tooBig ? discard : target.sink();
      }),
    );
    if (tooBig) return refused(Replies.messageTooBig, 'size');
    if (!result.ok) return refused(Replies.burlFailed(result.reason.replace('-', ' ')), result.reason.replace('-', '_'));
    urlauthFetches.inc({ by: 'burl', result: 'allowed', reason: 'none' });
    urlauthFetchBytes.inc({ by: 'burl' }, result.size);
    return { ok: true, size: result.size };
  } catch (err) {
    if (err instanceof SideLoginRefused) return refused(Replies.burlFailed(), 'no_mailbox');
    if (err instanceof UpstreamUnavailable) return refused(Replies.imapUnavailable, 'unavailable');
    throw err;
  }
}

/** What each reason a trusted server's URL was not resolved reads to the client (RFC 4468 §6). */
const REMOTE_REPLIES: Record<RemoteRefusal, CodedReply> = {
  untrusted_host: Replies.burlTrustRequired,
  access: Replies.burlNotAuthorized,
  login: Replies.burlSubmitLoginRefused,
  unavailable: Replies.imapUnavailable,
  no_data: Replies.burlFailed(),
};

const remoteRefused = (reason: RemoteRefusal): BurlOutcome => refused(REMOTE_REPLIES[reason], reason, 'burl_remote');

/** A URL naming another server: resolved there only if the operator listed it (RFC 4468 §3.3). */
async function resolveRemote(config: Config, smtpUser: string, url: string, target: BurlTarget): Promise<BurlOutcome> {
  const parsed = parseAbsoluteUrl(url);
  if (parsed === undefined) return refusal('syntax');
  // An unlisted host is refused before anything else is looked at, and never contacted.
  const entry = trustedHostFor(parsed, config.submission.burl.allowedHosts);
  if (entry === undefined) return remoteRefused('untrusted_host');
  if (!submitAccessMatches(parsed, smtpUser)) return remoteRefused('access');
  let tooBig = false;
  const result = await fetchRemote(entry, url, (size) => {
    tooBig = !target.fits(size);
    return tooBig ? discard : target.sink();
  });
  if (tooBig) return refused(Replies.messageTooBig, 'size', 'burl_remote');
  if (!result.ok) return remoteRefused(result.reason);
  urlauthFetches.inc({ by: 'burl_remote', result: 'allowed', reason: 'none' });
  urlauthFetchBytes.inc({ by: 'burl_remote' }, result.size);
  return { ok: true, size: result.size };
}
