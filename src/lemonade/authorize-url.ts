/**
 * Deciding whether a URLAUTH-authorized URL may be served, and what it names upstream:
 * the one check URLFETCH (RFC 4467 §6.3) and BURL (RFC 4468 §3.2, "as URLFETCH would")
 * share. Every failure is a reason, never an exception, so one bad URL among several
 * gives NIL for that URL only.
 */
import { ImapUrlError, expireTime, parseImapUrl, rumpUrl, type ImapUrl } from '../imap/protocol/url.js';
import { encodeMutf7 } from '../imap/protocol/mutf7.js';
import type { PartFailure, PartRef } from './fetch-part.js';
import type { Config } from '../config/schema.js';
import { admits, expired, type Fetcher, type UrlAuthority } from './urlauth.js';

export type AuthorizeFailure =
  | 'syntax' // not an absolute, authorized message URL
  | 'not_ours' // names another host (RFC 4467 §6.3: only this server's URLs)
  | 'no_token' // a rump URL without ":mech:token"
  | 'mechanism'
  | 'token'
  | 'expired'
  | 'access'
  | 'anonymous_disabled';

export type Authorization = { ok: true; owner: string; url: ImapUrl; ref: PartRef } | { ok: false; reason: AuthorizeFailure };

export interface AuthorizeOptions {
  hostname: string;
  allowAnonymous: boolean;
  now?: Date;
}

/** Whether host names this gateway (RFC 3986 §6.2.2.1: host names compare case-insensitively). */
export function isOurHost(host: string, hostname: string): boolean {
  return host.toLowerCase() === hostname.toLowerCase();
}

export async function authorizeUrl(
  authority: UrlAuthority,
  text: string,
  fetcher: Fetcher,
  opts: AuthorizeOptions,
): Promise<Authorization> {
  let url: ImapUrl;
  try {
    const parsed = parseImapUrl(text);
    if (parsed.form !== 'absolute') return { ok: false, reason: 'syntax' };
    url = parsed.url;
  } catch (err) {
    if (err instanceof ImapUrlError) return { ok: false, reason: 'syntax' };
    throw err;
  }
  const auth = url.urlauth;
  const owner = url.server?.user;
  if (url.server === undefined || owner === undefined || url.mailbox === undefined || url.uid === undefined || auth === undefined) {
    return { ok: false, reason: 'syntax' };
  }
  if (!isOurHost(url.server.host, opts.hostname)) return { ok: false, reason: 'not_ours' };
  if (auth.mechanism === undefined || auth.token === undefined) return { ok: false, reason: 'no_token' };
  // The token first: nothing about the URL's validity is told to someone without it.
  const refusal = await authority.verify({ owner, mailbox: url.mailbox, rump: rumpUrl(url) }, auth.mechanism, auth.token);
  if (refusal !== undefined) return { ok: false, reason: refusal };
  if (auth.expire !== undefined && expired(new Date(expireTime(auth.expire)), opts.now)) return { ok: false, reason: 'expired' };
  const denied = admits(auth.access, fetcher, opts.allowAnonymous);
  if (denied !== undefined) return { ok: false, reason: denied === 'anonymous-disabled' ? 'anonymous_disabled' : denied };
  return { ok: true, owner, url, ref: partRefOf(url as ImapUrl & { mailbox: string; uid: number }) };
}

/** What a message URL names upstream: the mailbox's wire name (RFC 3501 §5.1.3) and the part. */
export function partRefOf(url: ImapUrl & { mailbox: string; uid: number }): PartRef {
  const ref: PartRef = { mailbox: encodeMutf7(url.mailbox), uid: url.uid };
  if (url.uidValidity !== undefined) ref.uidValidity = url.uidValidity;
  if (url.section !== undefined) ref.section = url.section;
  if (url.partial !== undefined) ref.partial = url.partial;
  return ref;
}

/** authorizeUrl for a logged-in IMAP user, with the config's submit identities and anonymous policy. */
export function authorizeForUser(authority: UrlAuthority, config: Config, user: string, text: string): Promise<Authorization> {
  const cfg = config.imap.urlauth;
  return authorizeUrl(authority, text, { user, submitServer: cfg.submitUsers.includes(user) }, {
    hostname: config.hostname,
    allowAnonymous: cfg.allowAnonymousFetch,
  });
}

/**
 * Why a URL was not served, in words a requester may read (CATENATE's NO [BADURL] text):
 * as precise as the checks above and fetchPart know it, without telling anything about
 * another user's mail. The token is checked before anything else (authorizeUrl), so only
 * a holder of a valid token learns about expiry or the access identifier, both of which
 * the URL shows anyway. What is in another user's mailbox is never told: there a missing
 * mailbox, a changed UIDVALIDITY, a missing message or section and an owner who cannot
 * log in read exactly as a wrong token does (`crossUser`), since the token of a URL
 * naming a mailbox without a key, or another user's key, is simply wrong.
 */
export function describeRefusal(reason: AuthorizeFailure | PartFailure | 'plain_other_user', crossUser: boolean): string {
  switch (reason) {
    case 'syntax':
      return 'not a valid IMAP URL for this server';
    case 'not_ours':
      return 'the URL names another server';
    case 'plain_other_user':
      // RFC 4469 §5: a URL without URLAUTH is resolved as the user's own FETCH would be.
      return "another user's mail needs a URLAUTH-authorized URL";
    case 'no_token':
    case 'mechanism':
    case 'token':
      return INVALID;
    case 'expired':
      return 'URL expired'; // RFC 4467 §3 ;EXPIRE=
    case 'access':
      return 'URL access identifier does not permit this user'; // RFC 4467 §3
    case 'anonymous_disabled':
      return 'anonymous URL access is not permitted here';
    case 'no-mailbox':
      return crossUser ? INVALID : 'no such mailbox';
    case 'uidvalidity':
      return crossUser ? INVALID : 'mailbox UIDVALIDITY has changed'; // RFC 5092 §6
    case 'no-message':
      return crossUser ? INVALID : 'no such message';
    case 'no-section':
      return crossUser ? INVALID : 'no such section';
  }
}

/** One text for a token that does not verify and for anything missing in another user's mailbox. */
const INVALID = 'URL authorization token invalid or no such message';
