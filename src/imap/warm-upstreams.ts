/**
 * Upstream IMAP connections kept logged in for a short while after their client went
 * away without LOGOUT (a phone that lost its network), so the reconnect that follows skips
 * the upstream connect, TLS and login (the quick reconnect of RFC 5550 §5, on the gateway's
 * side of the link).
 *
 * A connection is found again only by the same credentials: the key is an HMAC (with a
 * secret of this process) of the mechanism, user, authorization identity and password, so
 * neither the password nor anything that can be tested against it offline is kept. The
 * cost of the shortcut is that a password changed upstream keeps working for a parked
 * connection until it expires (warmUpstream.seconds; 0 turns the feature off).
 *
 * Bounded in count and time (lru-cache); an evicted or expired connection is logged out.
 * Each is parked with no mailbox selected and no command in flight, so the reusing session
 * starts in the authenticated state as if it had just logged in.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Credentials } from './credentials.js';
import type { UpstreamConnection } from './upstream.js';
import { warmUpstreamReuses } from '../metrics/metrics.js';

export interface WarmUpstreamOptions {
  /** Seconds a parked connection waits for its user; 0: never park. */
  seconds: number;
  /** Parked connections at most, over all users. */
  max: number;
}

export class WarmUpstreams {
  private readonly secret = randomBytes(32);
  private readonly cache: LRUCache<string, UpstreamConnection> | undefined;
  private closed = false;

  constructor(readonly options: WarmUpstreamOptions) {
    if (options.seconds <= 0 || options.max <= 0) return;
    this.cache = new LRUCache<string, UpstreamConnection>({
      max: options.max,
      ttl: options.seconds * 1000,
      ttlAutopurge: true,
      dispose: (conn, _key, reason) => {
        // Taken by a session ('delete' from take()) stays open; anything else is closed.
        if (reason === 'delete') return;
        warmUpstreamReuses.inc({ outcome: 'expired' });
        conn.end();
      },
    });
  }

  get enabled(): boolean {
    return this.cache !== undefined;
  }

  key(creds: Credentials): string {
    return createHmac('sha256', this.secret)
      .update(`${creds.mechanism}\0${creds.user}\0${creds.authzid ?? ''}\0${creds.password}`)
      .digest('hex');
  }

  /** Keeps conn for a later login with the same credentials (a connection parked before under the key is closed). */
  park(key: string, conn: UpstreamConnection): void {
    if (this.cache === undefined || this.closed || conn.isClosed()) return conn.end();
    const old = this.cache.get(key);
    if (old !== undefined) {
      this.cache.delete(key);
      old.end();
    }
    this.cache.set(key, conn);
    warmUpstreamReuses.inc({ outcome: 'kept' });
  }

  /** The parked connection for these credentials, still open, or undefined. */
  take(key: string): UpstreamConnection | undefined {
    const conn = this.cache?.get(key);
    if (conn === undefined) return undefined;
    this.cache!.delete(key);
    if (conn.isClosed() || conn.busy) {
      conn.destroy();
      return undefined;
    }
    warmUpstreamReuses.inc({ outcome: 'reused' });
    return conn;
  }

  get size(): number {
    return this.cache?.size ?? 0;
  }

  /** Logs every parked connection out (shutdown). */
  close(): void {
    this.closed = true;
    if (this.cache === undefined) return;
    const conns = [...this.cache.values()];
    this.cache.clear();
    for (const conn of conns) conn.end();
  }
}

/**
 * Makes a connection whose client vanished fit for another session of the same user: an
 * IDLE ended, no mailbox selected (UNSELECT, RFC 3691, or else a failed EXAMINE, which
 * closes the mailbox without expunging, RFC 3501 §6.3.1), then parked. Only between
 * responses (relay.ts parkable), when nothing of the relay is half-read.
 */
export async function parkUpstream(upstream: UpstreamConnection, key: string, warm: WarmUpstreams, selected: boolean, idling: boolean): Promise<void> {
  try {
    upstream.stopRelay();
    // The IDLE's own tagged OK comes back under a tag internal mode does not wait for.
    if (idling) upstream.write(Buffer.from('DONE\r\n'));
    if (selected) {
      if (upstream.has('UNSELECT')) await upstream.command(['UNSELECT']);
      else await upstream.command([`EXAMINE "lemonade-gateway/${randomBytes(8).toString('hex')}/unselect"`]);
    } else if (idling) {
      await upstream.command(['NOOP']);
    }
    warm.park(key, upstream);
  } catch {
    upstream.destroy();
  }
}
