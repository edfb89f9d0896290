/**
 * A message being put together from parts (CATENATE, RFC 4469 §5; later BURL, RFC 4468):
 * held in memory while small, spilled to a temporary file under dataDir once it passes
 * a threshold, never unbounded in memory. Bounded in total: past maxBytes it refuses
 * more and says so ([TOOBIG], RFC 4469 §6).
 */
import { createReadStream, mkdirSync, openSync, closeSync, writeSync, unlinkSync, fsyncSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';

export interface AssemblyOptions {
  /** Where spill files go (created if missing, mode 0700). */
  dir: string;
  /** Above this many bytes the content moves to a file. */
  spillBytes: number;
  /** The whole message may not exceed this. */
  maxBytes: number;
}

export class AssemblyTooBig extends Error {
  constructor(readonly maxBytes: number) {
    super(`assembled message would exceed ${maxBytes} bytes`);
    this.name = 'AssemblyTooBig';
  }
}

export class Assembly {
  private chunks: Buffer[] = [];
  private fd: number | undefined;
  private file: string | undefined;
  private length = 0;
  private disposed = false;

  constructor(private readonly opts: AssemblyOptions) {}

  get size(): number {
    return this.length;
  }

  /** Whether `more` bytes still fit under maxBytes (check before fetching a part of known size). */
  fits(more: number): boolean {
    return this.length + more <= this.opts.maxBytes;
  }

  /** Appends bytes; throws AssemblyTooBig past maxBytes (nothing of that chunk is kept). */
  write(chunk: Buffer): void {
    if (this.disposed) throw new Error('assembly already disposed');
    if (!this.fits(chunk.length)) throw new AssemblyTooBig(this.opts.maxBytes);
    this.length += chunk.length;
    if (this.fd !== undefined) {
      writeAll(this.fd, chunk);
      return;
    }
    // A copy: the chunk may be a slice of a socket buffer that is reused.
    this.chunks.push(Buffer.from(chunk));
    if (this.length > this.opts.spillBytes) this.spill();
  }

  /** The content, once complete: a stream from memory or from the spill file. */
  open(): Readable {
    if (this.fd === undefined) {
      return Readable.from([Buffer.concat(this.chunks, this.length)], { objectMode: false });
    }
    fsyncSync(this.fd);
    return createReadStream(this.file!, { highWaterMark: 64 * 1024 });
  }

  /** Whether it went to disk (for metrics and tests). */
  get spilled(): boolean {
    return this.fd !== undefined;
  }

  /** Frees memory and removes the spill file; safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.chunks = [];
    if (this.fd !== undefined) {
      closeSync(this.fd);
      try {
        unlinkSync(this.file!);
      } catch {
        // Already gone: nothing to clean.
      }
    }
  }

  private spill(): void {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
    this.file = path.join(this.opts.dir, `assembly-${randomBytes(8).toString('hex')}.tmp`);
    this.fd = openSync(this.file, 'wx+', 0o600);
    for (const c of this.chunks) writeAll(this.fd, c);
    this.chunks = [];
  }
}

function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off);
}

