/**
 * What the gateway keeps across restarts, behind one interface so the embedded SQLite
 * store (sqlite.ts) can be joined by a PostgreSQL one for clusters without touching
 * callers: every method is async even where SQLite is not.
 */

export interface Store {
  /**
   * The 128-bit mailbox access key of (user, mailbox) (RFC 4467 §5), created at random on
   * first use. Two first uses at once end with one key.
   */
  mailboxAccessKey(user: string, mailbox: string): Promise<Buffer>;
  /** RESETKEY (RFC 4467 §6.2): forget the key of one mailbox, or all of the user's. */
  resetAccessKeys(user: string, mailbox?: string): Promise<void>;
  close(): Promise<void>;
}

/** RFC 3501 §5.1: INBOX is case-insensitive; every other name is exact. */
export function normalizeMailbox(name: string): string {
  return name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}
