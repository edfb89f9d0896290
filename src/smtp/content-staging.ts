/**
 * Message content on its way to the MTA is copied into reusable staging buffers instead of
 * being queued as slices of the client's socket reads.
 *
 * Why: Node.js allocates a fresh 64 KiB buffer for every socket read, and V8 counts those
 * as external memory. Queued toward a slower MTA they outlive a young-generation
 * collection or two, get promoted, and can then only be freed by a full mark-compact.
 * Copied at once, a read buffer dies young; the staging buffers live long and are reused,
 * and what one session holds is a bounded number of them. The copy costs a memcpy, ~0.1 ms
 * per MB. (This alone did not stop V8's mark-compacts every few hundred ms under load: the
 * old-generation floor in main.ts's shebang did, bench/RESULTS.md.)
 */

/** Size of one staging buffer: also the largest BDAT chunk the relay sends. */
export const STAGING_SIZE = 256 * 1024;
// Free buffers kept for the next message (8 MiB at most); more are left to the collector.
const KEEP_FREE = 32;

const free: Buffer[] = [];

function takeBuffer(): Buffer {
  // Slow: its own memory, not a slice of Node's shared pool, so it can be handed back whole.
  return free.pop() ?? Buffer.allocUnsafeSlow(STAGING_SIZE);
}

function giveBack(buffer: Buffer): void {
  if (free.length < KEEP_FREE) free.push(buffer);
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/**
 * Fills staging buffers with content and hands each full one to `emit`, which must call
 * the release function it gets once the bytes are written (the socket write's callback):
 * until then the buffer is the socket's.
 */
export class ContentStager {
  private buffer: Buffer | undefined;
  private filled = 0;
  private atLineStart = true;
  private lastByte = LF;
  private wroteAny = false;

  /** stuffDots: RFC 5321 §4.5.2 transparency for DATA; off for BDAT, which sends bytes as they are. */
  constructor(
    private readonly stuffDots: boolean,
    private readonly emit: (bytes: Buffer, release: () => void) => void,
  ) {}

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.stuffDots) this.writeStuffed(chunk);
    else this.copy(chunk, 0, chunk.length);
    this.lastByte = chunk[chunk.length - 1]!;
    this.wroteAny = true;
  }

  /**
   * For DATA: what must follow the content so that it ends in CRLF before the terminator
   * (RFC 5321 §4.1.1.4), completing a lone CR; and the terminator itself.
   */
  terminator(): string {
    if (!this.wroteAny || this.lastByte === LF) return '.\r\n';
    return this.lastByte === CR ? '\n.\r\n' : '\r\n.\r\n';
  }

  /** Hands what is staged to `emit`, full or not (the end of DATA content). */
  flush(): void {
    const rest = this.takeRest();
    if (rest !== undefined) this.emit(rest.bytes, rest.release);
  }

  /** The end of the content: what is staged and not yet emitted, for the caller to send last (BDAT LAST). */
  takeRest(): { bytes: Buffer; release: () => void } | undefined {
    const buffer = this.buffer;
    if (buffer === undefined || this.filled === 0) return undefined;
    const bytes = buffer.subarray(0, this.filled);
    this.buffer = undefined;
    this.filled = 0;
    return { bytes, release: () => giveBack(buffer) };
  }

  /** Drops what is staged (the message was abandoned). */
  discard(): void {
    if (this.buffer !== undefined) giveBack(this.buffer);
    this.buffer = undefined;
    this.filled = 0;
  }

  private copy(chunk: Buffer, from: number, to: number): void {
    while (from < to) {
      this.buffer ??= takeBuffer();
      const n = Math.min(to - from, STAGING_SIZE - this.filled);
      chunk.copy(this.buffer, this.filled, from, from + n);
      this.filled += n;
      from += n;
      if (this.filled === STAGING_SIZE) this.flush();
    }
  }

  private writeStuffed(chunk: Buffer): void {
    // RFC 5321 §4.5.2: a line starting with "." gets one more, across chunk boundaries. A
    // bare LF counts as a line end too: MTAs differ, and stuffing after it is harmless.
    let from = 0;
    if (this.atLineStart && chunk[0] === DOT) this.copy(DOT_BYTE, 0, 1);
    for (let lf = chunk.indexOf(LF); lf !== -1 && lf + 1 < chunk.length; lf = chunk.indexOf(LF, lf + 1)) {
      if (chunk[lf + 1] !== DOT) continue;
      this.copy(chunk, from, lf + 1);
      this.copy(DOT_BYTE, 0, 1);
      from = lf + 1;
    }
    this.copy(chunk, from, chunk.length);
    this.atLineStart = chunk[chunk.length - 1] === LF;
  }
}

const DOT_BYTE = Buffer.from('.');
