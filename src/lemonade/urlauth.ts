/**
 * URLAUTH (RFC 4467): the gateway's own authorization of IMAP URLs. It issues tokens for
 * GENURLAUTH and checks them for URLFETCH and BURL, with one code path for both (BURL,
 * RFC 4468 §3.1, resolves URLs "as URLFETCH would").
 *
 * The INTERNAL mechanism (RFC 4467 §7): the token is an HMAC-SHA256 of the rump URL,
 * keyed by the access key of the owner's mailbox, written as 64 hex digits (256 bits;
 * the RFC asks for at least 128). Keys live in the store, one per (user, mailbox), so
 * RESETKEY (§6.2) invalidates every URL of a mailbox at once.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/store.js';

/** RFC 4467 §3 access identifiers: who may fetch an authorized URL. */
export type Access =
  | { kind: 'submit'; user: string } // "submit+" userid: a submission server acting for userid
  | { kind: 'user'; user: string } // "user+" userid: that user only
  | { kind: 'authuser' } // any user authenticated to this server
  | { kind: 'anonymous' }; // anyone, if the server allows anonymous fetches

/** The only mechanism (RFC 4467 §7: INTERNAL is the one every server has). */
export const MECHANISM = 'INTERNAL';

/** RFC 4467 §9: access = ("submit+" / "user+") enc-user / "authuser" / "anonymous". */
export function parseAccess(text: string): Access | undefined {
  const lower = text.toLowerCase();
  if (lower === 'authuser') return { kind: 'authuser' };
  if (lower === 'anonymous') return { kind: 'anonymous' };
  const m = /^(submit|user)\+(.+)$/i.exec(text);
  if (m === null) return undefined;
  return { kind: m[1]!.toLowerCase() as 'submit' | 'user', user: m[2]! };
}

/** Who is fetching: a logged-in user, and whether that user is a submission server. */
export interface Fetcher {
  /**
   * The IMAP session's authorization identity. None for the gateway's own BURL: a submit
   * server resolves URLAUTH URLs logged in with submit credentials (RFC 4468 §3.3), never
   * as the user it submits for, so no "user+" URL is ever its to fetch.
   */
  user?: string;
  /** A configured submit-server identity, or the gateway's own BURL acting for `onBehalfOf`. */
  submitServer: boolean;
  /** For the gateway's own BURL: the SMTP-authenticated user it submits for (RFC 4468 §3.2). */
  onBehalfOf?: string;
}

export type Refusal =
  | 'mechanism' // not INTERNAL
  | 'token' // does not verify
  | 'expired' // past ;EXPIRE= (RFC 4467 §3)
  | 'access' // the access identifier does not admit the fetcher
  | 'anonymous-disabled';

/** RFC 4467 §3: whether the access identifier lets this fetcher use the URL. */
export function admits(access: Access, fetcher: Fetcher, allowAnonymous: boolean): Refusal | undefined {
  switch (access.kind) {
    case 'anonymous':
      return allowAnonymous ? undefined : 'anonymous-disabled';
    case 'authuser':
      // Any non-anonymous session, a submit server's included (RFC 4467 §3).
      return undefined;
    case 'user':
      return fetcher.user !== undefined && sameUser(access.user, fetcher.user) ? undefined : 'access';
    case 'submit':
      if (!fetcher.submitServer) return 'access';
      // The gateway's own BURL only resolves URLs made out for the user it submits for
      // (RFC 4468 §3.3: it MUST refuse a "submit+" userid other than the client's).
      if (fetcher.onBehalfOf !== undefined && !sameUser(access.user, fetcher.onBehalfOf)) return 'access';
      return undefined;
  }
}

function sameUser(a: string, b: string): boolean {
  return a === b;
}

export interface TokenSubject {
  /** The mailbox owner: the URL's iuserinfo user (RFC 4467 §3). */
  owner: string;
  mailbox: string;
  /** The rump URL, through ";URLAUTH=access" (RFC 4467 §3), as the token covers it. */
  rump: string;
}

export class UrlAuthority {
  constructor(private readonly store: Store) {}

  /**
   * The INTERNAL token for a rump URL, hex (RFC 4467 §7). Makes the mailbox's key on first
   * use: only for a mailbox the caller has seen exists (GENURLAUTH checks it upstream).
   */
  async token(subject: TokenSubject): Promise<string> {
    const key = await this.store.mailboxAccessKey(subject.owner, subject.mailbox);
    return createHmac('sha256', key).update(subject.rump, 'utf8').digest('hex');
  }

  /**
   * Whether a presented token is the one for this rump URL; compared in constant time.
   * Only against a key that exists: no key means no token was ever issued with one (or
   * RESETKEY removed it), and a URL naming a mailbox that has none, real or not, must not
   * leave one behind. A random key stands in then, so the answer takes as long either way.
   */
  async verify(subject: TokenSubject, mechanism: string, presented: string): Promise<'mechanism' | 'token' | undefined> {
    if (mechanism.toUpperCase() !== MECHANISM) return 'mechanism';
    const key = (await this.store.existingMailboxAccessKey(subject.owner, subject.mailbox)) ?? randomBytes(16);
    const expected = createHmac('sha256', key).update(subject.rump, 'utf8').digest();
    // Hex is case-insensitive (RFC 4467 §9 enc-urlauth = 32*HEXDIG); a wrong length or
    // a non-hex digit cannot match, and says nothing about the expected token.
    const given = /^[0-9a-f]+$/i.test(presented) && presented.length === expected.length * 2 ? Buffer.from(presented, 'hex') : undefined;
    if (given === undefined) return 'token';
    return timingSafeEqual(given, expected) ? undefined : 'token';
  }

  /** RESETKEY (RFC 4467 §6.2): new keys, so every URL issued before stops working. */
  async reset(owner: string, mailbox?: string): Promise<void> {
    await this.store.resetAccessKeys(owner, mailbox);
  }
}

/** RFC 4467 §3: an ;EXPIRE= in the past makes the URL invalid. */
export function expired(expire: Date | undefined, now: Date = new Date()): boolean {
  return expire !== undefined && expire.getTime() <= now.getTime();
}
