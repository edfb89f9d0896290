/**
 * Whether the store can be used right now, and what a failure to use it means.
 *
 * A store call fails in two ways: the call was wrong for the data (ModseqStateGone, a
 * constraint), or the store could not be reached or could not work (PostgreSQL down,
 * restarting, silent; SQLite's file locked past its busy timeout, an I/O error, a full
 * disk). The second kind says nothing about the client's command: the sessions answer it
 * `NO [UNAVAILABLE]` (RFC 5530 §3) and `451 4.3.0` (RFC 3463 §3.4: "other or undefined
 * mail system status", temporary), each in one place (imap/session.ts runHandler,
 * smtp/session.ts pump), never a generic NO/BAD/554.
 *
 * guardStore() wraps a store so every call's failure of that kind arrives as a
 * StoreUnavailableError, and StoreAvailability follows the store's state from those
 * outcomes: one log line when it goes down, one when it is back, the gauge
 * lemonade_store_up, and lemonade_store_errors_total by operation. While the store is
 * down nothing else may call it, so a probe does, with backoff, to notice its return.
 */
import type { Logger } from '../log/logger.js';
import { storeErrors, storeUp } from '../metrics/metrics.js';
import type { StoreLock } from './store.js';

/** Why a store could not be used: the label of lemonade_store_errors_total. */
export type UnavailableReason = 'connection' | 'timeout' | 'shutdown' | 'resources' | 'io' | 'busy' | 'read_only';
export const UNAVAILABLE_REASONS: readonly UnavailableReason[] = ['connection', 'timeout', 'shutdown', 'resources', 'io', 'busy', 'read_only'];

/** A store call failed because the store could not be reached or used now; the command may succeed later. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(
    /** The Store method that failed. */
    readonly operation: string,
    readonly reason: UnavailableReason,
    cause: unknown,
  ) {
    super(`store unavailable (${reason}) in ${operation}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** Socket-level failures reaching a database server (Node's / libuv's error codes). */
const NETWORK_CODES: Record<string, UnavailableReason> = {
  ECONNREFUSED: 'connection',
  ECONNRESET: 'connection',
  ECONNABORTED: 'connection',
  EPIPE: 'connection',
  EHOSTUNREACH: 'connection',
  EHOSTDOWN: 'connection',
  ENETUNREACH: 'connection',
  ENETDOWN: 'connection',
  ENOTFOUND: 'connection',
  EAI_AGAIN: 'connection',
  ETIMEDOUT: 'timeout',
};

/**
 * PostgreSQL SQLSTATEs (Appendix A, "PostgreSQL Error Codes") that say the server cannot
 * serve now, not that the statement was wrong. Class 08 (connection exception) is matched
 * by its prefix below.
 */
const SQLSTATES: Record<string, UnavailableReason> = {
  '57P01': 'shutdown', // admin_shutdown: the server is stopping (pg_ctl stop, failover)
  '57P02': 'shutdown', // crash_shutdown
  '57P03': 'shutdown', // cannot_connect_now: starting up or in recovery
  '57014': 'timeout', // query_canceled: our statement_timeout
  '55P03': 'timeout', // lock_not_available: lock_timeout
  '53000': 'resources', // insufficient_resources
  '53100': 'resources', // disk_full
  '53200': 'resources', // out_of_memory
  '53300': 'resources', // too_many_connections
  '58000': 'io', // system_error
  '58030': 'io', // io_error
  '25006': 'read_only', // read_only_sql_transaction: connected to a standby (after a failover)
};

/**
 * node-postgres reports some failures with a message only (pg/lib/client.js, pg-pool):
 * a connection that ended, a connect or query that took longer than allowed.
 */
const PG_MESSAGES: Array<[RegExp, UnavailableReason]> = [
  [/^Connection terminated due to connection timeout/, 'timeout'],
  [/^Connection terminated/, 'connection'],
  [/^Client has encountered a connection error and is not queryable/, 'connection'],
  [/^timeout exceeded when trying to connect/, 'timeout'],
  [/^Query read timeout/, 'timeout'],
];

/**
 * better-sqlite3's codes (SQLite "result codes", §1-2 of sqlite.org/rescode.html): the
 * file is locked beyond the busy timeout, cannot be read or written, or the disk is full.
 * Extended codes (SQLITE_IOERR_FSYNC, SQLITE_BUSY_SNAPSHOT, ...) share their prefix.
 */
const SQLITE_CODES: Record<string, UnavailableReason> = {
  SQLITE_BUSY: 'busy',
  SQLITE_LOCKED: 'busy',
  SQLITE_PROTOCOL: 'busy',
  SQLITE_IOERR: 'io',
  SQLITE_CANTOPEN: 'io',
  SQLITE_CORRUPT: 'io',
  SQLITE_NOTADB: 'io',
  SQLITE_FULL: 'resources',
  SQLITE_NOMEM: 'resources',
  SQLITE_READONLY: 'read_only',
};

/**
 * Why err means the store is unavailable, or undefined when it is any other failure. Looks
 * through `cause` (pg-pool wraps a connect timeout's socket error; our StoreError wraps).
 */
export function unavailableReason(err: unknown): UnavailableReason | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof StoreUnavailableError) return e.reason;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') {
      if (code in NETWORK_CODES) return NETWORK_CODES[code];
      if (/^[0-9A-Z]{5}$/.test(code)) {
        if (code.startsWith('08')) return 'connection';
        if (code in SQLSTATES) return SQLSTATES[code];
      }
      if (code.startsWith('SQLITE_')) {
        const base = /^SQLITE_[A-Z]+/.exec(code)![0];
        if (base in SQLITE_CODES) return SQLITE_CODES[base];
      }
    }
    for (const [pattern, reason] of PG_MESSAGES) if (pattern.test(e.message)) return reason;
  }
  return undefined;
}

/** Whether err says the store could not be used now (a StoreUnavailableError, or a raw error of that kind). */
export function isStoreUnavailable(err: unknown): boolean {
  return unavailableReason(err) !== undefined;
}

export interface AvailabilityOptions {
  /** The probe's first wait after the store went down, doubled after each failed probe... */
  probeMinMs?: number;
  /** ...up to this. */
  probeMaxMs?: number;
}

/**
 * The store's state as calls find it. Transitions are what is logged and exported, not
 * calls: an outage of a thousand failed queries is two log lines.
 */
export class StoreAvailability {
  private down: { since: number; operation: string; reason: UnavailableReason } | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;
  private probeDelay: number;
  private closed = false;
  private readonly probeMinMs: number;
  private readonly probeMaxMs: number;

  constructor(
    private readonly log: Logger,
    /** A cheap call of the real store (not through the guard): resolves when the store works. */
    private readonly probe: () => Promise<unknown>,
    opts: AvailabilityOptions = {},
  ) {
    this.probeMinMs = opts.probeMinMs ?? 500;
    this.probeMaxMs = opts.probeMaxMs ?? 5000;
    this.probeDelay = this.probeMinMs;
    // The store was opened (migrations ran), so it starts up.
    storeUp.set(1);
  }

  get up(): boolean {
    return this.down === undefined;
  }

  /** A call failed because the store is unavailable. */
  failed(err: StoreUnavailableError): void {
    storeErrors.inc({ operation: err.operation, reason: err.reason });
    if (this.down !== undefined || this.closed) return;
    this.down = { since: Date.now(), operation: err.operation, reason: err.reason };
    storeUp.set(0);
    this.log.error(
      { operation: err.operation, reason: err.reason, err: err.message },
      'store unavailable: commands that need it get NO [UNAVAILABLE] / 451 4.3.0 until it is back',
    );
    this.probeDelay = this.probeMinMs;
    this.scheduleProbe();
  }

  /** A call completed (or failed for a reason of its own): the store answers. */
  succeeded(): void {
    if (this.down === undefined) return;
    const { since, reason } = this.down;
    this.down = undefined;
    storeUp.set(1);
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.log.info({ downSeconds: Math.round((Date.now() - since) / 100) / 10, reason }, 'store available again');
  }

  /** Stops probing (the store is being closed). */
  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private scheduleProbe(): void {
    if (this.closed || this.probing || this.probeTimer !== undefined) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.runProbe();
    }, this.probeDelay);
    // A probe never keeps the process alive on its own.
    this.probeTimer.unref();
  }

  private async runProbe(): Promise<void> {
    if (this.closed || this.down === undefined) return;
    this.probing = true;
    let answered: boolean;
    try {
      await this.probe();
      answered = true;
    } catch (err) {
      // Another kind of failure still means the server answered.
      answered = !isStoreUnavailable(err);
    } finally {
      this.probing = false;
    }
    // Closed meanwhile: the probe's failure is the closed pool's, not news about the server.
    if (this.closed) return;
    if (answered) this.succeeded();
    if (this.down !== undefined) {
      this.probeDelay = Math.min(this.probeDelay * 2, this.probeMaxMs);
      this.scheduleProbe();
    }
  }
}

/**
 * The store with every method's failure classified: an unavailable-kind failure is
 * reported to `availability` and thrown as a StoreUnavailableError; any outcome that shows
 * the store answering tells availability it is up. A Proxy rather than a class that lists
 * the methods, so a method added to the Store interface is covered without an edit here.
 * Locks a method returns (mailboxLock) have their release() guarded the same way.
 */
export function guardStore<S extends object>(store: S, availability: StoreAvailability): S {
  const wrapped = new Map<PropertyKey, unknown>();
  /** The error to throw for a failed call, with availability told what it shows. */
  const classify = (operation: string, err: unknown): unknown => {
    const reason = unavailableReason(err);
    if (reason === undefined) {
      availability.succeeded();
      return err;
    }
    const unavailable = err instanceof StoreUnavailableError ? err : new StoreUnavailableError(operation, reason, err);
    availability.failed(unavailable);
    return unavailable;
  };
  const settle = <T>(operation: string, result: Promise<T>): Promise<T> =>
    result.then(
      (value) => {
        availability.succeeded();
        return operation === 'mailboxLock' ? (guardLock(value as StoreLock | undefined) as T) : value;
      },
      (err: unknown) => {
        throw classify(operation, err);
      },
    );
  // A lock's release() is a store call too.
  const guardLock = (lock: StoreLock | undefined): StoreLock | undefined =>
    lock === undefined ? undefined : { release: () => settle('mailboxLockRelease', lock.release()) };
  return new Proxy(store, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function' || prop === 'constructor') return value;
      let fn = wrapped.get(prop);
      if (fn === undefined) {
        const operation = String(prop);
        const method = value as (...args: unknown[]) => unknown;
        fn = (...args: unknown[]): unknown => {
          if (operation === 'close') availability.close();
          let out: unknown;
          try {
            out = method.apply(target, args);
          } catch (err) {
            throw classify(operation, err);
          }
          return out instanceof Promise ? settle(operation, out) : out;
        };
        wrapped.set(prop, fn);
      }
      return fn;
    },
  });
}

/** The meta key the probe reads: any cheap read that needs the store to answer. */
export const STORE_PROBE_KEY = 'availability-probe';

/** What a client is told when its command needed the store and the store is unavailable (IMAP NO [UNAVAILABLE], SMTP 451 4.3.0). */
export const STORE_UNAVAILABLE_TEXT = 'Temporary storage failure, try again later';
