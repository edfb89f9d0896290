/**
 * Keyed locks for work the gateway serializes per mailbox (APPENDUID and COPYUID for an
 * upstream without UIDPLUS: UIDNEXT before, the new UIDs after). State: per process.
 *
 * Every way a lock could be kept forever is closed here rather than in each caller:
 * - a waiter whose session ended (its AbortSignal fired) leaves the queue and is never
 *   granted the lock;
 * - a lease is held at most `maxHoldMs`; then it is taken back (the holder learns it from
 *   `lease.expired` and must not claim what only the lock made certain) and the next
 *   waiter goes on;
 * - release() is idempotent, so "release on every way a command ends" needs no care
 *   about releasing twice.
 */
import { mailboxLockEvents } from '../metrics/metrics.js';

export interface MailboxLease {
  /** Gives the lock back (again: no effect). */
  release(): void;
  /** True once the hold bound took the lock back before release(). */
  readonly expired: boolean;
}

interface Waiter {
  grant(lease: MailboxLease): void;
  aborted: boolean;
}

export class MailboxLocks {
  /** Per key: whether a lease is out, and who waits, in order. Absent = free, no one waiting. */
  private readonly keys = new Map<string, { held: boolean; waiters: Waiter[] }>();

  constructor(
    private readonly maxHoldMs: number,
    private readonly onExpired: (key: string) => void = () => {},
  ) {}

  /**
   * Resolves with a lease once every earlier holder is done, or with undefined when
   * `signal` fires first (the caller's session is gone: it must not get the lock).
   */
  acquire(key: string, signal?: AbortSignal): Promise<MailboxLease | undefined> {
    if (signal?.aborted) return Promise.resolve(undefined);
    let entry = this.keys.get(key);
    if (entry === undefined) {
      entry = { held: false, waiters: [] };
      this.keys.set(key, entry);
    }
    if (!entry.held) {
      entry.held = true;
      mailboxLockEvents.inc({ event: 'acquired' });
      return Promise.resolve(this.lease(key));
    }
    const queue = entry;
    return new Promise((resolve) => {
      const waiter: Waiter = {
        aborted: false,
        grant: (lease) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(lease);
        },
      };
      const onAbort = () => {
        waiter.aborted = true;
        const i = queue.waiters.indexOf(waiter);
        if (i >= 0) queue.waiters.splice(i, 1);
        mailboxLockEvents.inc({ event: 'abandoned' });
        resolve(undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      queue.waiters.push(waiter);
    });
  }

  /** Number of keys with a holder or waiters (for tests: 0 once everything is released). */
  get size(): number {
    return this.keys.size;
  }

  private lease(key: string): MailboxLease {
    let done = false;
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      mailboxLockEvents.inc({ event: 'expired' });
      this.onExpired(key);
      finish();
    }, this.maxHoldMs);
    timer.unref();
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.handOn(key);
    };
    return {
      release: finish,
      get expired() {
        return expired;
      },
    };
  }

  /** The lock passes to the first waiter still there, or the key is forgotten. */
  private handOn(key: string): void {
    const entry = this.keys.get(key);
    if (entry === undefined) return;
    let next = entry.waiters.shift();
    while (next?.aborted === true) next = entry.waiters.shift();
    if (next === undefined) {
      this.keys.delete(key);
      return;
    }
    mailboxLockEvents.inc({ event: 'acquired' });
    next.grant(this.lease(key));
  }
}
