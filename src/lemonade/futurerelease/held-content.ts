/**
 * Where a held message's content goes instead of the MTA: the spool. The submission
 * session treats it like the MTA connection (start, write with back-pressure, end with a
 * reply), so DATA, BDAT and BURL messages are held alike.
 *
 * RFC 4865 / DESIGN.md: 250 only after the content is durable (a file fsynced, or its
 * chunks committed in the database) and its index row committed.
 */
import type { SmtpReply } from '../../smtp/upstream.js';
import { asParsedReply } from '../../smtp/protocol/reply.js';
import { Replies } from '../../smtp/protocol/replies.js';
import type { HeldMessage } from '../../store/store.js';
import { isStoreUnavailable } from '../../store/availability.js';
import type { ContentWriter, HeldContentStore } from './content.js';

/** What the session knows at the end of the content, apart from the content itself. */
export type HeldEnvelope = Pick<HeldMessage, 'user' | 'sender' | 'mailParams' | 'recipients' | 'releaseAt' | 'holdRequest'>;

export interface HoldSink {
  readonly content: HeldContentStore;
  /** Indexes the message (durably) and wakes the scheduler. */
  commit(message: HeldMessage): Promise<void>;
  now(): number;
}

export class HeldContent {
  private writer: ContentWriter | undefined;

  constructor(
    readonly id: string,
    private readonly sink: HoldSink,
    private readonly envelope: () => HeldEnvelope,
  ) {}

  async startContent(): Promise<SmtpReply> {
    this.writer = this.sink.content.create(this.id);
    return { code: 354, lines: ['Send content'] };
  }

  writeContent(chunk: Buffer): boolean {
    return this.writer!.write(chunk);
  }

  onceDrain(fn: () => void): void {
    this.writer!.onceDrain(fn);
  }

  async endContent(): Promise<SmtpReply> {
    const envelope = this.envelope();
    try {
      const size = await this.writer!.commit();
      const now = this.sink.now();
      await this.sink.commit({
        id: this.id,
        ...envelope,
        size,
        createdAt: now,
        nextAttemptAt: envelope.releaseAt,
        attempts: 0,
        state: 'held',
      });
    } catch (err) {
      this.writer?.abort();
      await this.sink.content.remove(this.id).catch(() => undefined);
      // RFC 3463 X.3.0: a local system problem; the client keeps the message and retries.
      // A store outage is told as such (store/availability.ts), never with its address.
      return asParsedReply(isStoreUnavailable(err) ? Replies.storeUnavailable : Replies.localError((err as Error).message));
    }
    return asParsedReply(Replies.held(this.id, new Date(envelope.releaseAt)));
  }

  destroy(): void {
    this.writer?.abort();
  }
}
