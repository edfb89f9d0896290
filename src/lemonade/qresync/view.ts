/**
 * One session's view of its selected mailbox for the CONDSTORE/QRESYNC emulation (RFC 7162
 * over an upstream without mod-sequences): message number -> UID, flags and mod-sequence,
 * kept in step with what the session's own upstream connection reports, and every change
 * it sees recorded in the store (which hands out the mod-sequences, so every process and
 * session sharing the store agrees on them).
 *
 * The arrays follow the client's message numbers exactly: built from the UID FETCH 1:*
 * (FLAGS) the gateway runs on the client's own connection right after its SELECT, then
 * moved by the EXPUNGE and EXISTS responses the client is shown (RFC 3501 §7.4.1: an
 * expunge renumbers every later message). A message announced by EXISTS and not fetched
 * yet has UID 0 until a FETCH response names it (the session adds UID and FLAGS to every
 * FETCH it sends upstream, so the first one does) or catchUp() asks for it.
 *
 * Memory: 16 bytes a message plus one shared string per distinct flag set.
 */
import type { MailboxModseqState, ModseqIndex } from '../../store/store.js';
import { flagsKey, flagsFromKey } from './flags.js';
import { qresyncChanges } from '../../metrics/metrics.js';

export class MailboxView {
  /** seq n -> uids[n - 1]; 0 while the message is known only from EXISTS. */
  uids: Uint32Array;
  modseqs: Float64Array;
  /** Canonical flag keys (flags.ts), interned. */
  flags: string[];
  count: number;
  highestModseq: number;
  private readonly interned = new Map<string, string>();
  /** Store writes, one at a time and in the order the session saw the changes. */
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly index: ModseqIndex,
    readonly state: MailboxModseqState,
    readonly mailbox: string,
    readonly uidValidity: number,
    uids: Uint32Array,
  ) {
    this.count = uids.length;
    this.uids = new Uint32Array(Math.max(16, uids.length));
    this.uids.set(uids);
    this.modseqs = new Float64Array(this.uids.length);
    this.flags = new Array<string>(this.uids.length).fill('');
    this.highestModseq = state.highestModseq;
    this.unknownFrom = this.count;
  }

  /**
   * The view of a mailbox just reconciled (reconcile.ts): its messages in order, each with
   * the mod-sequence and canonical flag key the reconciliation left in the store.
   */
  static create(
    index: ModseqIndex,
    state: MailboxModseqState,
    mailbox: string,
    uidValidity: number,
    messages: { uids: Uint32Array; modseqs: Float64Array; flags: readonly string[]; highestModseq: number },
  ): MailboxView {
    const view = new MailboxView(index, state, mailbox, uidValidity, messages.uids);
    view.highestModseq = messages.highestModseq;
    view.modseqs.set(messages.modseqs.subarray(0, view.count));
    for (let i = 0; i < view.count; i++) view.flags[i] = view.intern(messages.flags[i] ?? '');
    return view;
  }

  private intern(key: string): string {
    let k = this.interned.get(key);
    if (k === undefined) {
      if (this.interned.size < 10_000) this.interned.set(key, key);
      k = key;
    }
    return k;
  }

  /** The message number of uid, or undefined: binary search over the known prefix, then the (short) tail. */
  seqOf(uid: number): number | undefined {
    let lo = 0;
    let hi = this.unknownFrom - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.uids[mid]!;
      if (v === uid) return mid + 1;
      if (v < uid) lo = mid + 1;
      else hi = mid - 1;
    }
    for (let i = this.unknownFrom; i < this.count; i++) if (this.uids[i] === uid) return i + 1;
    return undefined;
  }

  /** The known UIDs, ascending (entries not known yet left out). */
  knownUids(): Uint32Array {
    if (this.unknownFrom === this.count) return this.uids.slice(0, this.count);
    const out: number[] = [];
    for (let i = 0; i < this.count; i++) if (this.uids[i] !== 0) out.push(this.uids[i]!);
    return Uint32Array.from(out);
  }

  /** First message number whose UID is not known yet, or undefined. */
  firstUnknown(): number | undefined {
    return this.unknownFrom < this.count ? this.unknownFrom + 1 : undefined;
  }

  /** Index of the first entry with UID 0 (count when none): every entry below it is known. */
  private unknownFrom: number;

  private advanceKnown(): void {
    while (this.unknownFrom < this.count && this.uids[this.unknownFrom] !== 0) this.unknownFrom++;
  }

  /** `* n EXISTS` (RFC 3501 §7.3.1): messages above the known count are new. */
  exists(n: number): void {
    if (n <= this.count) return;
    if (n > this.uids.length) {
      const size = Math.max(n, this.uids.length * 2);
      const uids = new Uint32Array(size);
      uids.set(this.uids.subarray(0, this.count));
      const modseqs = new Float64Array(size);
      modseqs.set(this.modseqs.subarray(0, this.count));
      this.uids = uids;
      this.modseqs = modseqs;
    }
    for (let i = this.count; i < n; i++) {
      this.uids[i] = 0;
      this.modseqs[i] = 0;
      this.flags[i] = '';
    }
    this.unknownFrom = Math.min(this.unknownFrom, this.count);
    this.count = n;
  }

  /**
   * `* n EXPUNGE` (RFC 3501 §7.4.1): the message leaves the view and, when its UID is
   * known, is recorded as vanished (RFC 7162 §3.2.10). Returns its UID (0 if unknown).
   */
  expunge(seq: number): number {
    if (seq < 1 || seq > this.count) return 0;
    const uid = this.uids[seq - 1]!;
    this.uids.copyWithin(seq - 1, seq, this.count);
    this.modseqs.copyWithin(seq - 1, seq, this.count);
    this.flags.splice(seq - 1, 1);
    this.count--;
    if (seq - 1 < this.unknownFrom) this.unknownFrom--;
    this.advanceKnown();
    if (uid !== 0) {
      this.write(async () => {
        const r = await this.index.modseqRecord(this.state.id, { changed: [], expunged: [uid] });
        this.highestModseq = Math.max(this.highestModseq, r.highestModseq);
        qresyncChanges.inc({ kind: 'expunged' });
      });
    }
    return uid;
  }

  /**
   * What a FETCH response says of message seq (UID and FLAGS when it has them): the
   * message's mod-sequence for the MODSEQ item (RFC 7162 §3.1.4.2), at once when nothing
   * changed, or once the change is recorded (a new mod-sequence, §3.1).
   */
  observe(seq: number, uid: number | undefined, flags: string[] | undefined): number | Promise<number> {
    if (seq > this.count) this.exists(seq);
    const i = seq - 1;
    if (i < 0) return this.highestModseq;
    if (uid !== undefined && this.uids[i] !== uid) {
      if (this.uids[i] !== 0 || !this.fits(i, uid)) return this.highestModseq;
      this.uids[i] = uid;
      this.advanceKnown();
      if (flags === undefined) return this.highestModseq;
    }
    const known = this.uids[i]!;
    if (known === 0) {
      // Not told which message this is (an unsolicited FETCH of a message not fetched
      // yet): the mailbox's highest is the best bound there is; catchUp() fixes the view.
      return this.highestModseq;
    }
    if (flags === undefined) return this.modseqs[i] || this.highestModseq;
    const key = flagsKey(flags);
    if (key === this.flags[i] && this.modseqs[i]! > 0) return this.modseqs[i]!;
    return this.record([{ uid: known, flags }]).then((m) => m[0] ?? this.highestModseq);
  }

  /** A FETCH named message seq's UID: learnt if the view did not know it yet. */
  place(seq: number, uid: number): void {
    if (seq > this.count) this.exists(seq);
    const i = seq - 1;
    if (i < 0 || this.uids[i] !== 0 || !this.fits(i, uid)) return;
    this.uids[i] = uid;
    this.advanceKnown();
  }

  /** Whether the upstream's flags for uid are news to the view (a new message, or a change). */
  differs(uid: number, flags: string[]): boolean {
    const seq = this.seqOf(uid);
    if (seq === undefined) return true;
    return this.modseqs[seq - 1] === 0 || flagsKey(flags) !== this.flags[seq - 1];
  }

  /** Whether uid can sit at index i (UIDs ascend with message numbers, RFC 3501 §2.3.1.1). */
  private fits(i: number, uid: number): boolean {
    for (let k = i - 1; k >= 0; k--) {
      const v = this.uids[k]!;
      if (v !== 0) {
        if (v >= uid) return false;
        break;
      }
    }
    for (let k = i + 1; k < this.count; k++) {
      const v = this.uids[k]!;
      if (v !== 0) return v > uid;
    }
    return true;
  }

  /**
   * Records flag sets the upstream reported (new messages or changed flags) and updates
   * the view; resolves with each one's mod-sequence, in order.
   */
  record(changes: Array<{ uid: number; flags: string[] }>): Promise<number[]> {
    return this.write(async () => {
      if (changes.length === 0) return [];
      const r = await this.index.modseqRecord(this.state.id, { changed: changes, expunged: [] });
      this.highestModseq = Math.max(this.highestModseq, r.highestModseq);
      for (let k = 0; k < changes.length; k++) {
        const seq = this.seqOf(changes[k]!.uid);
        const modseq = r.modseqs[k]!;
        if (seq === undefined || modseq === 0) continue;
        const key = this.intern(flagsKey(changes[k]!.flags));
        if (key !== this.flags[seq - 1] || this.modseqs[seq - 1] === 0) qresyncChanges.inc({ kind: 'changed' });
        this.modseqs[seq - 1] = modseq;
        this.flags[seq - 1] = key;
      }
      return r.modseqs.map((m) => m || this.highestModseq);
    });
  }

  /** Resolves when every store write queued so far is done. */
  settled(): Promise<void> {
    return this.write(async () => undefined);
  }

  private write<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    // A failed write is logged by its caller's promise; the chain goes on.
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The flags of message seq as a list (canonical; no \Recent). */
  flagsOf(seq: number): string[] {
    return flagsFromKey(this.flags[seq - 1] ?? '');
  }
}
