/**
 * Side connections: upstream IMAP sessions the gateway opens on its own behalf (fetching a
 * part for CATENATE, URLFETCH of another user's message for a submit server, BURL), so
 * the client's own connection and its selected mailbox are never disturbed.
 *
 * Each logs in with the configured master identity and the user as authorization
 * identity (SASL PLAIN authzid, RFC 4616 §2), which Dovecot and Cyrus accept: one
 * credential the operator configures, no user passwords kept. Idle ones are kept per user
 * in an LRU with a TTL; an evicted or expired one logs out.
 */
import { LRUCache } from 'lru-cache';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { UpstreamConnection, loginUpstream } from './upstream.js';
import { UpstreamUnavailable } from '../upstream/connect.js';
import { sideConnections } from '../metrics/metrics.js';

export interface SidePoolOptions {
  /** Idle connections kept at most, over all users. */
  maxIdle: number;
  /** An idle connection is logged out after this long. */
  idleMs: number;
  /** Connections open at most (idle and in use); more requests wait for one. */
  maxOpen: number;
}

/** Thrown when the upstream refuses the master login for a user (unknown user, no master configured). */
export class SideLoginRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SideLoginRefused';
  }
}

interface Idle {
  user: string;
  conn: UpstreamConnection;
}

export class SidePool {
  private readonly idle: LRUCache<number, Idle>;
  private readonly idleByUser = new Map<string, Set<number>>();
  private nextId = 1;
  private open = 0;
  private readonly waiting: Array<() => void> = [];
  private closed = false;
  /** Set while acquire() takes an idle connection out: that removal is not its end. */
  private taking = false;

  constructor(
    private readonly config: Config,
    private readonly opts: SidePoolOptions,
    private readonly log: Logger,
  ) {
    this.idle = new LRUCache<number, Idle>({
      max: Math.max(1, opts.maxIdle),
      ttl: opts.idleMs,
      ttlAutopurge: true,
      dispose: (entry, id) => {
        this.forget(entry.user, id);
        sideConnections.dec({ state: 'idle' });
        if (!this.taking) this.retire(entry.conn);
      },
    });
  }

  /** Whether side connections are possible at all: they need the master identity. */
  get available(): boolean {
    return this.config.imap.master !== undefined && !this.closed;
  }

  /** Runs fn on a connection logged in as user; the connection goes back to the pool after, if still sound. */
  async withConnection<T>(user: string, fn: (conn: UpstreamConnection) => Promise<T>): Promise<T> {
    const conn = await this.acquire(user);
    try {
      return await fn(conn);
    } finally {
      // A command still running (fn gave up on it) leaves the connection in no known state.
      this.release(user, conn, !conn.busy);
    }
  }

  async acquire(user: string): Promise<UpstreamConnection> {
    if (!this.available) throw new SideLoginRefused('no master identity configured for side connections');
    for (const id of [...(this.idleByUser.get(user) ?? [])]) {
      const entry = this.idle.get(id);
      this.taking = true;
      try {
        this.idle.delete(id);
      } finally {
        this.taking = false;
      }
      if (entry === undefined) continue;
      if (!entry.conn.isClosed()) {
        sideConnections.inc({ state: 'in_use' });
        return entry.conn;
      }
      this.dropped();
    }
    await this.slot();
    try {
      const conn = await this.login(user);
      sideConnections.inc({ state: 'in_use' });
      return conn;
    } catch (err) {
      this.dropped();
      throw err;
    }
  }

  /** Back to the pool when reusable (not mid-command, not closed); logged out otherwise. */
  release(user: string, conn: UpstreamConnection, reusable: boolean): void {
    sideConnections.dec({ state: 'in_use' });
    if (!reusable || conn.isClosed() || this.closed || this.opts.maxIdle === 0) {
      this.retire(conn);
      return;
    }
    const id = this.nextId++;
    let ids = this.idleByUser.get(user);
    if (ids === undefined) this.idleByUser.set(user, (ids = new Set()));
    ids.add(id);
    sideConnections.inc({ state: 'idle' });
    this.idle.set(id, { user, conn });
  }

  /** Idle connections now. */
  get idleCount(): number {
    return this.idle.size;
  }

  /** Connections open now, idle or in use. */
  get openCount(): number {
    return this.open;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.idle.clear();
  }

  private async login(user: string): Promise<UpstreamConnection> {
    const master = this.config.imap.master!;
    const conn = await UpstreamConnection.open(this.config.imap.upstream);
    try {
      const result = await loginUpstream(conn, { user: master.user, password: master.password, authzid: user, mechanism: 'plain' });
      if (result.status !== 'OK') {
        if (result.code?.toUpperCase().startsWith('UNAVAILABLE')) throw new UpstreamUnavailable('other', `side login: ${result.text}`);
        this.log.info({ user, code: result.code }, 'upstream refused a side login');
        throw new SideLoginRefused(`upstream refused the master login for ${user}: ${result.text}`);
      }
      return conn;
    } catch (err) {
      conn.destroy();
      throw err;
    }
  }

  /** Waits until fewer than maxOpen connections exist, then counts one more. */
  private async slot(): Promise<void> {
    while (this.open >= this.opts.maxOpen) {
      // The least recently used idle connection of another user gives way first.
      const oldest = this.idle.rkeys().next();
      if (!oldest.done) {
        this.idle.delete(oldest.value);
        continue;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.open++;
  }

  private dropped(): void {
    this.open--;
    this.waiting.shift()?.();
  }

  private retire(conn: UpstreamConnection): void {
    this.dropped();
    if (conn.isClosed()) return;
    conn.command(['LOGOUT']).then(
      () => conn.end(),
      () => conn.destroy(),
    );
  }

  private forget(user: string, id: number): void {
    const ids = this.idleByUser.get(user);
    if (ids === undefined) return;
    ids.delete(id);
    if (ids.size === 0) this.idleByUser.delete(user);
  }
}
