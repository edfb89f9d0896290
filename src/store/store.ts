/**
 * What the gateway keeps across restarts, behind one interface so the embedded SQLite
 * store (sqlite.ts) can be joined by a PostgreSQL one for clusters without touching
 * callers: every method is async even where SQLite is not.
 */

export interface Store {
  /**
   * The 128-bit mailbox access key of (user, mailbox) (RFC 4467 §5), created at random on
   * first use. Two first uses at once, in one process or several, end with one key.
   * Names are compared exactly, except INBOX (see normalizeMailbox).
   */
  mailboxAccessKey(user: string, mailbox: string): Promise<Buffer>;
  /**
   * RESETKEY (RFC 4467 §6.2): with a mailbox, that mailbox's key; without one, "all
   * mailbox access keys for the user". Tokens made with the old keys fail from the moment
   * this resolves.
   */
  resetAccessKeys(user: string, mailbox?: string): Promise<void>;
  /** A server-wide value (a persistent secret, say), or undefined when never set. */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * The stored value of key, storing `value` first if there is none: for a secret made
   * once (several processes starting at once all end up with the first one stored).
   */
  initMeta(key: string, value: string): Promise<string>;
  /** Idempotent; no method may be called after it. */
  close(): Promise<void>;
}

/** A store that cannot be opened or used, with the file or server it concerns. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
}

/**
 * The one place mailbox names are normalized for the store. RFC 3501 §5.1: the name
 * INBOX is case-insensitive; every other name is exact (and compared as given, in the
 * wire's modified UTF-7 or not, as long as callers are consistent).
 */
export function normalizeMailbox(name: string): string {
  return name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}

/** RFC 4467 §5 asks for at least 128 bits. */
export const ACCESS_KEY_BYTES = 16;
