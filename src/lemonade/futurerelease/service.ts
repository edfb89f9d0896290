/**
 * FUTURERELEASE (RFC 4865) as the submission front sees it: the policy it advertises and
 * applies to HOLDFOR / HOLDUNTIL, the spool a held message's content goes to, the
 * scheduler that releases it, and cancellation by its sender.
 */
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import type { RelayPool } from '../../smtp/relay-pool.js';
import type { HeldMessage, Store } from '../../store/store.js';
import { futureReleaseEvents } from '../../metrics/metrics.js';
import { systemClock, type Clock } from './clock.js';
import { futureReleaseKeyword, parseHold, type HoldPolicy, type HoldResult } from './hold-params.js';
import { HeldContent, type HeldEnvelope } from './held-content.js';
import { ReleaseScheduler, newSpoolId } from './scheduler.js';
import type { HeldContentStore } from './content.js';
import { heldContentStore } from './open-content.js';
import { SpoolCommitter, isSpoolId } from './spool.js';

export type CancelOutcome = 'cancelled' | 'unknown';

export class FutureRelease {
  /** Files in dataDir/spool, or the PostgreSQL store's own rows (content.ts). */
  readonly content: HeldContentStore;
  readonly scheduler: ReleaseScheduler;
  private readonly policy: HoldPolicy;
  private readonly committer: SpoolCommitter;

  constructor(
    private readonly config: Config,
    private readonly store: Store,
    pool: RelayPool,
    private readonly log: Logger,
    readonly clock: Clock = systemClock,
  ) {
    const fr = config.submission.futureRelease;
    this.policy = { maxIntervalSeconds: fr.enabled ? fr.maxHoldSeconds : 0 };
    this.content = heldContentStore(config, store);
    this.committer = new SpoolCommitter(this.content, store);
    this.scheduler = new ReleaseScheduler(
      store,
      this.content,
      pool,
      clock,
      { ...fr, hostname: config.hostname, leaseMs: config.store.releaseLeaseSeconds * 1000 },
      log,
    );
  }

  start(): Promise<void> {
    return this.scheduler.start();
  }

  stop(): Promise<void> {
    return this.scheduler.stop();
  }

  /** The EHLO keyword with its parameters (RFC 4865 §3); undefined when disabled by policy. */
  keyword(): string | undefined {
    return futureReleaseKeyword(this.policy, this.clock.now());
  }

  /** HOLDFOR / HOLDUNTIL of a MAIL command; undefined when it asks for no hold. */
  parse(params: ReadonlyMap<string, string | true>): HoldResult | undefined {
    const holdfor = params.get('HOLDFOR');
    const holduntil = params.get('HOLDUNTIL');
    return parseHold({ ...(holdfor !== undefined ? { holdfor } : {}), ...(holduntil !== undefined ? { holduntil } : {}) }, this.policy, this.clock.now());
  }

  /** Whether the spool has room for one more message of about `size` octets. */
  async hasRoom(size: number): Promise<boolean> {
    const fr = this.config.submission.futureRelease;
    const usage = this.scheduler.spoolUsage();
    return usage.count < fr.maxMessages && usage.bytes + size <= fr.maxBytes;
  }

  /** The content target of a held transaction. */
  holdContent(envelope: () => HeldEnvelope): HeldContent {
    return new HeldContent(
      newSpoolId(),
      {
        content: this.content,
        now: () => this.clock.now(),
        commit: async (message: HeldMessage) => {
          await this.committer.commit(message);
          futureReleaseEvents.inc({ event: 'held' });
          this.log.info({ id: message.id, user: message.user, releaseAt: new Date(message.releaseAt).toISOString(), size: message.size }, 'message held for future release');
          this.scheduler.held(message);
        },
      },
      envelope,
    );
  }

  /** Cancels a held message: only its submitter's own, when user is given (undefined: an operator). */
  async cancel(id: string, user?: string): Promise<CancelOutcome> {
    if (!isSpoolId(id)) return 'unknown';
    const removed = await this.store.spoolCancel(id, user);
    if (removed === undefined) return 'unknown';
    await this.content.remove(id);
    futureReleaseEvents.inc({ event: 'cancelled' });
    this.log.info({ id, by: user ?? 'operator' }, 'held message cancelled');
    this.scheduler.removed(removed);
    return 'cancelled';
  }
}
