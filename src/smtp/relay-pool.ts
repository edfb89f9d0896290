/**
 * Idle connections to the upstream MTA kept for the next transaction: a new one costs a
 * TCP (and maybe TLS) handshake plus greeting and EHLO round trips per message.
 *
 * The pool's two sets are the only record of its connections, and they follow the
 * connections themselves: one lent out leaves `inUse` when it is handed back (release)
 * or when it closes, whichever comes first (UpstreamSmtp.onClosed), so a transaction
 * that ends by destroying its connection (a refused BURL, a 552, a client gone mid-DATA,
 * the MTA gone) cannot leave it counted. lemonade_smtp_relay_connections_open is read
 * from these sets (metrics.ts trackRelayPool).
 */
import { trackRelayPool } from '../metrics/metrics.js';
import { UpstreamSmtp, type UpstreamConfig, type UpstreamSmtpOptions } from './upstream.js';

export interface RelayPoolOptions extends UpstreamSmtpOptions {
  /** Idle connections kept at most; 0 keeps none. */
  poolSize: number;
  /** Idle longer than this and a connection is checked with NOOP before reuse. */
  checkAfterMs?: number;
  /** Idle longer than this and a connection is closed. */
  idleCloseMs?: number;
}

interface Idle {
  conn: UpstreamSmtp;
  since: number;
  timer: NodeJS.Timeout;
}

// MTAs drop idle clients after their command timeout (RFC 5321 §4.5.3.2.7: at least
// 5 minutes; Postfix's smtpd_timeout is 300 s); closing ours well before stays polite.
const CHECK_AFTER_MS = 30_000;
const IDLE_CLOSE_MS = 60_000;

export class RelayPool {
  private readonly idle: Idle[] = [];
  private readonly inUse = new Set<UpstreamSmtp>();
  private readonly closing = new Set<Promise<void>>();
  private closed = false;
  private readonly untrack: () => void;

  constructor(
    private readonly cfg: UpstreamConfig,
    private readonly opts: RelayPoolOptions,
  ) {
    this.untrack = trackRelayPool(this);
  }

  /** An idle connection that still answers, or a new one; rejects with UpstreamUnavailable. */
  async acquire(): Promise<UpstreamSmtp> {
    if (this.closed) throw new Error('relay pool is closed');
    for (let entry = this.takeIdle(); entry !== undefined; entry = this.takeIdle()) {
      if (!entry.conn.usable) {
        entry.conn.destroy();
        continue;
      }
      if (Date.now() - entry.since > (this.opts.checkAfterMs ?? CHECK_AFTER_MS)) {
        // The MTA may have timed us out and closed without our noticing yet.
        const ok = await entry.conn.noop().then(
          (r) => r.code === 250,
          () => false,
        );
        if (!ok || !entry.conn.usable) {
          entry.conn.destroy();
          continue;
        }
      }
      return this.lend(entry.conn);
    }
    const conn = await UpstreamSmtp.open(this.cfg, this.opts);
    if (this.closed) {
      void conn.quit();
      throw new Error('relay pool is closed');
    }
    conn.onClosed(() => this.forget(conn));
    return this.lend(conn);
  }

  /** Hands a connection back; kept when reusable and there is room, closed otherwise. */
  release(conn: UpstreamSmtp, reusable: boolean): void {
    this.inUse.delete(conn);
    if (!reusable || !conn.usable || this.closed || this.idle.length >= this.opts.poolSize) {
      this.retire(conn);
      return;
    }
    const entry: Idle = {
      conn,
      since: Date.now(),
      timer: setTimeout(() => {
        const i = this.idle.indexOf(entry);
        if (i === -1) return;
        this.idle.splice(i, 1);
        this.retire(conn);
      }, this.opts.idleCloseMs ?? IDLE_CLOSE_MS),
    };
    entry.timer.unref();
    this.idle.push(entry);
  }

  /** Idle connections now. */
  get idleCount(): number {
    return this.idle.length;
  }

  /** Connections lent out now (acquired, neither released nor closed). */
  get inUseCount(): number {
    return this.inUse.size;
  }

  /** QUITs idle connections; ones still lent out are closed when released. */
  async close(): Promise<void> {
    this.closed = true;
    for (let entry = this.takeIdle(); entry !== undefined; entry = this.takeIdle()) this.retire(entry.conn);
    await Promise.all([...this.closing]);
    this.untrack();
  }

  /** The most recently used first: the oldest then age out instead of all staying warm. */
  private takeIdle(): Idle | undefined {
    const entry = this.idle.pop();
    if (entry === undefined) return undefined;
    clearTimeout(entry.timer);
    return entry;
  }

  private lend(conn: UpstreamSmtp): UpstreamSmtp {
    this.inUse.add(conn);
    return conn;
  }

  /** A connection closed: it is no longer the pool's, lent out or idle (an MTA may close an idle one, RFC 5321 §4.5.3.2.7). */
  private forget(conn: UpstreamSmtp): void {
    this.inUse.delete(conn);
    const i = this.idle.findIndex((e) => e.conn === conn);
    if (i === -1) return;
    clearTimeout(this.idle[i]!.timer);
    this.idle.splice(i, 1);
  }

  private retire(conn: UpstreamSmtp): void {
    const done = conn.quit().finally(() => this.closing.delete(done));
    this.closing.add(done);
  }
}
