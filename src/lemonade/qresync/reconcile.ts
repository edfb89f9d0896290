/**
 * Reconciling a mailbox's stored mod-sequence state with the upstream (CONDSTORE/QRESYNC,
 * RFC 7162, emulated over an upstream that has neither).
 *
 * The upstream cannot say what changed, so the gateway asks for everything (UID FETCH 1:*
 * (FLAGS)) and compares it with what it stored last time: an upstream UID not stored is
 * new, a stored UID the upstream no longer has was expunged, a UID whose flags differ
 * (canonically, see flags.ts) changed. Each difference gets a new mod-sequence
 * (RFC 7162 §3.1: a message's mod-sequence moves whenever its metadata changes and a new
 * message gets one above every other in the mailbox), and an expunge is recorded with its
 * own for VANISHED (§3.2.10). The first reconciliation of a mailbox records every message.
 *
 * Memory is bounded by a batch, not by the mailbox: the upstream rows stream in (the
 * connection's onUntagged) and are merged, both sides in ascending UID order, against the
 * stored rows read a chunk at a time (modseqRange); differences are written a batch at a
 * time (modseqRecord). Only the UID list the session needs (seq -> UID) grows with the
 * mailbox, at 4 bytes a message.
 */
import type { UpstreamConnection } from '../../imap/upstream.js';
import { fetchAttributes, numberValue } from '../../imap/protocol/responses.js';
import type { MailboxModseqState, MessageModseq, ModseqIndex } from '../../store/store.js';
import { flagsKey } from './flags.js';

export interface ReconcileResult {
  /**
   * The store's HIGHESTMODSEQ once this reconciliation's changes are recorded (with any
   * another process recorded meanwhile): what the store's later answers are consistent with.
   */
  highestModseq: number;
  /** Every current UID, ascending: the session's message sequence number -> UID map (seq n is uids[n - 1]). */
  uids: Uint32Array;
  /** Each message's mod-sequence after this reconciliation (aligned with uids). */
  modseqs: Float64Array;
  /** Each message's canonical flag key (flags.ts flagsKey; aligned with uids). */
  flags: string[];
  /** Messages in the mailbox (uids.length). */
  count: number;
  /** Differences from the stored state recorded: new messages and messages whose flags changed. */
  changed: number;
  /** Stored UIDs the upstream no longer has, recorded as vanished. */
  expunged: number;
}

export interface ReconcilerOptions {
  /** Stored rows read, and changes written, per store call (default 500). */
  batch?: number;
  /** Rows pushed and not yet merged above which `pause` is called (default 4 batches). */
  highWater?: number;
  /** Called when the queue passes highWater: stop the source (the upstream socket). */
  pause?: () => void;
  /** Called when the queue is down to one batch again after a pause. */
  resume?: () => void;
  /** Messages expected (EXISTS), to size the UID list once. */
  expectedCount?: number;
}

/** The upstream's rows broke the order the merge needs, or came after the end. */
export class ReconcileOrderError extends Error {
  override readonly name = 'ReconcileOrderError';
}

const DEFAULT_BATCH = 500;

/**
 * Compares the upstream's flags with the stored state and records the differences.
 * Upstream rows come through push() in ascending UID order; finish() records what is left
 * (stored UIDs after the last upstream one are expunged) and gives the result.
 *
 * push() is synchronous (it is called from the connection's onUntagged) while the store is
 * async: rows are queued and merged by one async loop. Any error in that loop (the store
 * failing, rows out of order) is kept and rejects finish(); later pushes are dropped.
 */
export class MailboxReconciler {
  private readonly batch: number;
  private readonly highWater: number;
  private readonly lowWater: number;

  // Pushed rows not merged yet: a queue with a moving head (no O(n) shift()).
  private queueUids: number[] = [];
  private queueFlags: string[][] = [];
  private head = 0;
  private running = false;
  private loop: Promise<void> = Promise.resolve();
  private paused = false;
  private ended = false;
  private error: unknown;
  private lastPushed = 0;
  /** The UID the loop is merging (0: none). */
  private merging = 0;

  // The stored side: one chunk in memory, read on demand in UID order.
  private stored: MessageModseq[] = [];
  private storedPos = 0;
  private storedAfter = 0;
  private storedDone = false;

  // Differences not recorded yet.
  /** pos: the message's index in uids, whose mod-sequence the write gives. */
  private pendingChanged: Array<{ uid: number; flags: string[]; pos: number }> = [];
  private pendingExpunged: number[] = [];

  private uids: Uint32Array;
  private modseqs: Float64Array;
  private flagKeys: string[] = [];
  private count = 0;
  private changed = 0;
  private expunged = 0;
  private highestModseq: number | undefined;

  constructor(
    private readonly index: ModseqIndex,
    private readonly state: MailboxModseqState,
    private readonly opts: ReconcilerOptions = {},
  ) {
    this.batch = Math.max(1, opts.batch ?? DEFAULT_BATCH);
    this.highWater = Math.max(this.batch, opts.highWater ?? 4 * this.batch);
    this.lowWater = Math.min(this.batch, this.highWater);
    this.uids = new Uint32Array(Math.max(16, opts.expectedCount ?? 0));
    this.modseqs = new Float64Array(this.uids.length);
  }

  private repeats = 0;

  /** Repeated reports of a UID already pushed (unsolicited FETCH), ignored. */
  get repeated(): number {
    return this.repeats;
  }

  /** Rows pushed and not merged yet. */
  get queued(): number {
    return this.queueUids.length - this.head;
  }

  /** One upstream message, in ascending UID order. Never throws: a problem rejects finish(). */
  push(uid: number, flags: string[]): void {
    if (this.error !== undefined) return;
    if (this.ended) return this.fail(new ReconcileOrderError(`row for UID ${uid} pushed after finish()`));
    if (!Number.isInteger(uid) || uid < 1 || uid > 0xffffffff) return this.fail(new ReconcileOrderError(`not a UID: ${uid}`));
    if (uid <= this.lastPushed) {
      // A second report of a message already pushed is an unsolicited flag update (RFC 3501
      // §7.4.2, another session changed it meanwhile): left to the next rescan.
      if (this.pushedBefore(uid)) {
        this.repeats++;
        return;
      }
      // RFC 3501 does not promise FETCH responses in order, only that UIDs ascend with
      // sequence numbers (§2.3.1.1); servers answer in sequence order, and the merge needs
      // it (a UID taken out of order would be recorded as expunged first).
      return this.fail(new ReconcileOrderError(`upstream UID ${uid} came after UID ${this.lastPushed}: rows must ascend`));
    }
    this.lastPushed = uid;
    this.queueUids.push(uid);
    this.queueFlags.push(flags);
    if (!this.paused && this.queued >= this.highWater && this.opts.pause) {
      this.paused = true;
      this.opts.pause();
    }
    this.kick();
  }

  /** Whether uid was pushed already: merged (in uids), being merged, or queued; all ascending. */
  private pushedBefore(uid: number): boolean {
    if (uid === this.merging) return true;
    return sortedHas(this.uids, 0, this.count, uid) || sortedHas(this.queueUids, this.head, this.queueUids.length, uid);
  }

  /** Waits for every pushed row, records the rest, and gives the result (or the first error). */
  async finish(): Promise<ReconcileResult> {
    this.ended = true;
    await this.settle();
    if (this.error !== undefined) throw this.error;
    try {
      // Stored UIDs above the last upstream one are gone upstream.
      // (A push from now on is an error: checked before each write, so a row pushed late
      // is never recorded as expunged.)
      for (;;) {
        if (this.error !== undefined) throw this.error;
        const row = await this.storedHead();
        if (row === undefined) break;
        this.storedPos++;
        await this.expunge(row.uid);
      }
      if (this.error !== undefined) throw this.error;
      await this.flush();
      const highestModseq = this.highestModseq ?? (await this.index.modseqState(this.state.id)).highestModseq;
      const uids = this.uids.length === this.count ? this.uids : this.uids.slice(0, this.count);
      const modseqs = this.modseqs.length === this.count ? this.modseqs : this.modseqs.slice(0, this.count);
      return { highestModseq, uids, modseqs, flags: this.flagKeys, count: this.count, changed: this.changed, expunged: this.expunged };
    } catch (err) {
      this.fail(err);
      throw err;
    }
  }

  /**
   * Stops: pushed rows are dropped and nothing more is written once the write in progress
   * (if any) is done. Differences already recorded stay: each is true of the upstream.
   */
  async abort(reason: unknown = new Error('reconciliation aborted')): Promise<void> {
    this.ended = true;
    this.fail(reason);
    await this.settle();
  }

  private fail(err: unknown): void {
    this.error ??= err;
    this.queueUids = [];
    this.queueFlags = [];
    this.head = 0;
    this.resumeSource();
  }

  private resumeSource(): void {
    if (!this.paused) return;
    this.paused = false;
    this.opts.resume?.();
  }

  /** Starts the merge loop unless it runs. */
  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Until the loop has nothing left (it may be restarted by pushes while awaited). */
  private async settle(): Promise<void> {
    while (this.running) await this.loop;
  }

  private async run(): Promise<void> {
    try {
      while (this.error === undefined && this.head < this.queueUids.length) {
        const uid = this.queueUids[this.head]!;
        const flags = this.queueFlags[this.head]!;
        this.head++;
        this.compactQueue();
        if (this.paused && this.queued <= this.lowWater) this.resumeSource();
        this.merging = uid;
        await this.merge(uid, flags);
        this.merging = 0;
      }
    } catch (err) {
      this.fail(err);
    }
    // Synchronously after the last look at the queue: a push from now on starts a new loop.
    this.running = false;
  }

  private compactQueue(): void {
    if (this.head < 1024 || this.head * 2 < this.queueUids.length) return;
    this.queueUids = this.queueUids.slice(this.head);
    this.queueFlags = this.queueFlags.slice(this.head);
    this.head = 0;
  }

  private async merge(uid: number, flags: string[]): Promise<void> {
    // Stored UIDs below this upstream one are not upstream any more.
    let row = await this.storedHead();
    while (row !== undefined && row.uid < uid) {
      this.storedPos++;
      await this.expunge(row.uid);
      row = await this.storedHead();
    }
    const key = flagsKey(flags);
    if (row !== undefined && row.uid === uid) {
      this.storedPos++;
      // Stored flags are canonical already (the store keeps flagsKey's form).
      const stored = row.flags.join(' ');
      if (key === stored) return this.keepUid(uid, row.modseq, stored);
    }
    this.keepUid(uid, 0, key);
    await this.change(uid, flags, this.count - 1);
  }

  /**
   * The next stored row not merged yet, reading the next chunk when the one in memory is
   * used up. Chunks are read on demand: when a chunk is read after UID X, every upstream
   * UID merged so far is <= X (merging one above X needed this read first), so the rows
   * this reconciliation writes never show up in a later chunk as if they had been stored.
   */
  private async storedHead(): Promise<MessageModseq | undefined> {
    if (this.storedPos < this.stored.length) return this.stored[this.storedPos];
    if (this.storedDone) return undefined;
    const rows = await this.index.modseqRange(this.state.id, this.storedAfter, this.batch);
    this.stored = rows;
    this.storedPos = 0;
    if (rows.length < this.batch) this.storedDone = true;
    if (rows.length === 0) return undefined;
    this.storedAfter = rows[rows.length - 1]!.uid;
    return rows[0];
  }

  private async change(uid: number, flags: string[], pos: number): Promise<void> {
    this.pendingChanged.push({ uid, flags, pos });
    if (this.pendingChanged.length + this.pendingExpunged.length >= this.batch) await this.flush();
  }

  private async expunge(uid: number): Promise<void> {
    this.pendingExpunged.push(uid);
    if (this.pendingChanged.length + this.pendingExpunged.length >= this.batch) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pendingChanged.length === 0 && this.pendingExpunged.length === 0) return;
    const changed = this.pendingChanged;
    const expunged = this.pendingExpunged;
    this.pendingChanged = [];
    this.pendingExpunged = [];
    const result = await this.index.modseqRecord(this.state.id, { changed: changed.map(({ uid, flags }) => ({ uid, flags })), expunged });
    this.highestModseq = result.highestModseq;
    // 0: another process recorded the UID as vanished meanwhile; the next rescan settles it.
    for (let k = 0; k < changed.length; k++) this.modseqs[changed[k]!.pos] = result.modseqs[k] || result.highestModseq;
    this.changed += changed.length;
    this.expunged += expunged.length;
  }

  private keepUid(uid: number, modseq: number, key: string): void {
    if (this.count === this.uids.length) {
      const grown = new Uint32Array(this.uids.length * 2);
      grown.set(this.uids);
      this.uids = grown;
      const modseqs = new Float64Array(grown.length);
      modseqs.set(this.modseqs);
      this.modseqs = modseqs;
    }
    this.uids[this.count] = uid;
    this.modseqs[this.count] = modseq;
    this.flagKeys[this.count] = key;
    this.count++;
  }
}

/** What a rescan saw besides the rows it merged. */
export interface RescanNotes {
  /**
   * Unsolicited FETCH responses (RFC 3501 §7.4.2: another session changed a message while
   * the rescan ran) without UID or FLAGS, or for a UID already seen: left to the next rescan.
   */
  ignored: number;
}

/**
 * Runs UID FETCH 1:* (FLAGS) on conn (the mailbox already selected or examined there,
 * preferably EXAMINEd on a side connection) and feeds the answers to a MailboxReconciler
 * as they arrive (command's onUntagged: no response is collected). The upstream socket is
 * paused while the store falls behind.
 */
export async function reconcileMailbox(
  conn: UpstreamConnection,
  index: ModseqIndex,
  state: MailboxModseqState,
  opts: Omit<ReconcilerOptions, 'pause' | 'resume'> & { notes?: RescanNotes } = {},
): Promise<ReconcileResult> {
  const reconciler = new MailboxReconciler(index, state, { ...opts, pause: () => conn.pause(), resume: () => conn.resume() });
  const notes = opts.notes ?? { ignored: 0 };
  let result;
  try {
    result = await conn.command(['UID FETCH 1:* (FLAGS)'], {
      onUntagged: (line) => {
        const attrs = fetchAttributes(line);
        if (attrs === undefined) return false; // EXISTS and the like: few, collected as usual
        const uid = numberValue(attrs.get('UID'));
        const flags = attrs.get('FLAGS');
        if (uid === undefined || flags?.type !== 'list') {
          notes.ignored++;
          return true;
        }
        const names: string[] = [];
        for (const item of flags.items) if (item.type === 'atom') names.push(item.value);
        reconciler.push(uid, names);
        return true;
      },
    });
  } catch (err) {
    await reconciler.abort(err);
    throw err;
  }
  if (result.status !== 'OK') {
    const err = new Error(`upstream UID FETCH 1:* (FLAGS) failed: ${result.status} ${result.text}`);
    await reconciler.abort(err);
    throw err;
  }
  const done = await reconciler.finish();
  notes.ignored += reconciler.repeated;
  return done;
}

/** Whether the ascending list holds value between from (inclusive) and to (exclusive). */
function sortedHas(list: ArrayLike<number>, from: number, to: number, value: number): boolean {
  let lo = from;
  let hi = to - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = list[mid]!;
    if (v === value) return true;
    if (v < value) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}
