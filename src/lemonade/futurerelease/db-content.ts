/**
 * Held content in the store itself (PostgreSQL: held_content rows, SpoolContent), so any
 * gateway instance on the database can release any held message. A message streams in as
 * chunks of at most CHUNK octets, each stored (and committed) as soon as the previous one
 * is, so memory holds at most about two chunks per message whatever its size; it streams
 * out the same way, a few chunks per query.
 */
import type { SpoolContent } from '../../store/store.js';
import type { ContentWriter, HeldContentStore } from './content.js';
import { isSpoolId, type SpoolFiles } from './spool.js';

/** Largest chunk stored in one row: big enough that a 10 MB message is 40 statements, small enough to buffer. */
export const CHUNK = 256 * 1024;
/** Chunks read per query when releasing. */
const READ_BATCH = 4;
/**
 * Content no index row names is an orphan once nothing has written to it for this long
 * (at least; open-content.ts raises it above long submission timeouts). An upload under
 * way writes whatever arrived as soon as the previous chunk is stored, so it is idle only
 * as long as its client is silent, which the submission timeouts bound to minutes.
 */
export const ORPHAN_IDLE_MS = 60 * 60 * 1000;

export class DbContent implements HeldContentStore {
  constructor(
    private readonly rows: SpoolContent,
    /** This gateway's spool directory, where an earlier build kept held content (see init). */
    private readonly onDisk?: SpoolFiles,
    private readonly orphanIdleMs = ORPHAN_IDLE_MS,
  ) {}

  /**
   * Moves into the store the content of the messages an earlier build held through this
   * gateway as files in its spool directory (rows only this gateway could release), so
   * that any instance releases them from now on. Each is copied (after clearing what an
   * interrupted move left), then its row marked, then its file removed: a crash in
   * between leaves the row this gateway's, and the next start moves it again.
   */
  async init(): Promise<void> {
    if (this.onDisk === undefined) return;
    for (const id of await this.rows.contentOnDisk()) {
      if (!isSpoolId(id)) continue;
      await this.rows.contentRemove(id);
      let seq = 0;
      try {
        for await (const chunk of this.onDisk.read(id)) await this.rows.contentAppend(id, ++seq, chunk as Buffer);
      } catch (err) {
        // No file: the row stays this gateway's (a release then fails on the size check, loudly).
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      await this.rows.contentMovedIn(id);
      await this.onDisk.remove(id);
    }
  }

  create(id: string): ContentWriter {
    if (!isSpoolId(id)) throw new Error(`not a spool id: ${id.slice(0, 80)}`);
    return new DbContentWriter(this.rows, id);
  }

  async flushCommitted(): Promise<void> {
    // Each chunk was committed as it was stored.
  }

  async *read(id: string): AsyncGenerator<Buffer> {
    for (let after = 0; ; ) {
      const chunks = await this.rows.contentRead(id, after, READ_BATCH);
      for (const c of chunks) {
        yield c.data;
        after = c.seq;
      }
      if (chunks.length < READ_BATCH) return;
    }
  }

  remove(id: string): Promise<void> {
    return this.rows.contentRemove(id);
  }

  /**
   * Another instance may be writing a message this one has no row for yet: only content
   * idle for orphanIdleMs goes (the store decides it in one statement).
   */
  removeOrphans(): Promise<number> {
    return this.rows.contentRemoveOrphans(this.orphanIdleMs);
  }

  where(id: string): string {
    return `in the store (held_content, id ${id})`;
  }
}

/**
 * Buffers what arrives while the previous chunk is being stored, and stores it as the next
 * chunk (at most CHUNK octets) when that one is done: one statement in flight per message,
 * so chunks are stored in order. write() asks the caller to wait once a full chunk is
 * waiting.
 */
class DbContentWriter implements ContentWriter {
  size = 0;
  private seq = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private storing: Promise<void> | undefined;
  private failed: Error | undefined;
  private done = false;
  private drainWaiters: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly rows: SpoolContent,
    private readonly id: string,
  ) {}

  write(chunk: Buffer): boolean {
    if (this.failed !== undefined || this.done) return true;
    this.size += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.storeNext();
    return this.pendingBytes < CHUNK;
  }

  onceDrain(fn: () => void): void {
    if (this.failed !== undefined || this.done || this.pendingBytes < CHUNK) queueMicrotask(fn);
    else this.drainWaiters.push(fn);
  }

  async commit(): Promise<number> {
    if (this.done) throw new Error('content already committed or aborted');
    await new Promise<void>((resolve) => {
      if (this.storing === undefined) resolve();
      else this.idleWaiters.push(resolve);
    });
    this.done = true;
    if (this.failed !== undefined) throw this.failed;
    return this.size;
  }

  /** Before commit(): removes what was stored. After it, the caller removes the content (as with files). */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.wakeDrain();
    if (this.seq === 0) return;
    // After the chunk being stored (if any), so none is written after the removal. A
    // removal that fails leaves an orphan for removeOrphans.
    void (this.storing ?? Promise.resolve()).then(() => this.rows.contentRemove(this.id)).catch(() => undefined);
  }

  private storeNext(): void {
    if (this.storing !== undefined || this.pendingBytes === 0 || this.failed !== undefined) return;
    // concat copies: the chunk no longer shares memory with the caller's buffers.
    const all = Buffer.concat(this.pending, this.pendingBytes);
    const data = all.subarray(0, CHUNK);
    const rest = all.subarray(CHUNK);
    // The rest copied out, so the stored chunk's memory goes once it is stored.
    this.pending = rest.length > 0 ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
    this.wakeDrain();
    this.storing = this.rows.contentAppend(this.id, ++this.seq, data).then(
      () => undefined,
      (err: unknown) => {
        this.failed = err instanceof Error ? err : new Error(String(err));
        this.pending = [];
        this.pendingBytes = 0;
      },
    );
    void this.storing.then(() => {
      this.storing = undefined;
      this.storeNext();
      this.wakeDrain();
      if (this.storing === undefined) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    });
  }

  private wakeDrain(): void {
    if (this.pendingBytes >= CHUNK && this.failed === undefined && !this.done) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
