/**
 * Where held messages' content lives, behind one interface so the spool, the release and
 * the queue commands never ask which: files in dataDir/spool (spool.ts, the SQLite store's
 * one host) or chunks in the PostgreSQL store (db-content.ts), which every instance on
 * the database can read, so any of them releases any held message.
 *
 * Either way a message's content is written and made durable before its index row
 * (SpoolIndex.spoolInsert) and before the client's 250 (RFC 4865 / DESIGN.md), and
 * removed after its row is gone: what a crash leaves between the two is an orphan, never
 * a row without content. open-content.ts picks the one that goes with the store.
 */
/** One message being written, with back-pressure; commit() makes it durable. */
export interface ContentWriter {
  /** Octets written so far. */
  readonly size: number;
  /** false: wait for onceDrain before writing more. */
  write(chunk: Buffer): boolean;
  onceDrain(fn: () => void): void;
  /** Resolves with the size once all of it is durable (rejects on any write error). */
  commit(): Promise<number>;
  /** Drops what was written (the transaction failed or the client went away). */
  abort(): void;
}

export interface HeldContentStore {
  init(): Promise<void>;
  create(id: string): ContentWriter;
  /** Makes every commit()ed writer's content part of the spool (a directory fsync for files), before their rows are written. */
  flushCommitted(): Promise<void>;
  /** The content in order, in chunks; breaking out of the loop stops reading. */
  read(id: string): AsyncIterable<Buffer>;
  remove(id: string): Promise<void>;
  /** After a start: drops content no index row names and that no upload is still writing. */
  removeOrphans(indexed: (id: string) => Promise<boolean>): Promise<number>;
  /** Where the content of id is, for operators (queue show). */
  where(id: string): string;
}
