/**
 * Checking a user's password for the submission front against the upstream IMAP server,
 * the one identity source (issue 3). A success is remembered briefly, keyed by an HMAC of
 * the credentials under a per-process random key, so the cache never holds a password;
 * repeated failures from one client address are slowed down.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import { UpstreamConnection, loginUpstream } from '../imap/upstream.js';
import { UpstreamUnavailable } from '../upstream/connect.js';

export type AuthOutcome = 'ok' | 'failed' | 'unavailable';

/** Failure counts are forgotten after this long without a new failure. */
const FAILURE_MEMORY_MS = 15 * 60 * 1000;
const MAX_TRACKED_ADDRESSES = 10_000;

export class ImapAuthenticator {
  private readonly key = randomBytes(32);
  private readonly successes: LRUCache<string, true> | undefined;
  private readonly failures = new LRUCache<string, number>({ max: MAX_TRACKED_ADDRESSES, ttl: FAILURE_MEMORY_MS });

  constructor(private readonly config: Config) {
    const auth = config.submission.auth;
    this.successes =
      auth.cacheSeconds > 0 ? new LRUCache<string, true>({ max: auth.cacheEntries, ttl: auth.cacheSeconds * 1000 }) : undefined;
  }

  private cacheKey(user: string, password: string): string {
    return createHmac('sha256', this.key).update(user).update('\0').update(password).digest('base64');
  }

  /** How long to wait before answering this client, given its recent failures. */
  delayFor(clientAddress: string | undefined): number {
    const n = this.failures.get(clientAddress ?? '') ?? 0;
    const auth = this.config.submission.auth;
    return Math.min(n * auth.failureDelayMs, auth.maxFailureDelayMs);
  }

  async check(user: string, password: string, clientAddress: string | undefined, authzid?: string): Promise<AuthOutcome> {
    const key = this.cacheKey(`${authzid ?? ''}\0${user}`, password);
    let outcome: AuthOutcome;
    if (this.successes?.get(key)) {
      outcome = 'ok';
    } else {
      outcome = await this.askUpstream(user, password, authzid);
      if (outcome === 'ok') this.successes?.set(key, true);
    }
    const addr = clientAddress ?? '';
    if (outcome === 'failed') {
      this.failures.set(addr, (this.failures.get(addr) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, this.delayFor(clientAddress)));
    } else if (outcome === 'ok') {
      this.failures.delete(addr);
    }
    return outcome;
  }

  private async askUpstream(user: string, password: string, authzid?: string): Promise<AuthOutcome> {
    let conn: UpstreamConnection | undefined;
    try {
      conn = await UpstreamConnection.open(this.config.imap.upstream);
      const result = await loginUpstream(conn, { user, password, authzid, mechanism: 'plain' });
      if (result.status === 'OK') {
        await conn.command(['LOGOUT']).catch(() => undefined);
        return 'ok';
      }
      // RFC 5530 UNAVAILABLE: the server could not check, which is not a wrong password.
      return result.code?.toUpperCase().startsWith('UNAVAILABLE') ? 'unavailable' : 'failed';
    } catch (err) {
      if (err instanceof UpstreamUnavailable) return 'unavailable';
      throw err;
    } finally {
      conn?.end();
    }
  }
}
