/**
 * Releases held messages when due (RFC 4865 §5: "the message is released ... at the
 * requested time"). The spool index is the only queue: each pass reads at most
 * `concurrency` due rows, relays them, and reads again, so 100,000 held messages cost
 * rows on disk and never a list in memory. A pass runs when the next message is due and
 * at least once a second, which also picks up `queue release` from another process.
 *
 * After a temporary failure a message waits (retryInitialSeconds, doubling up to
 * retryMaxSeconds) and stays in the spool; giveUpSeconds after its release time, or at a
 * permanent failure, its failed recipients are reported to the sender by a delivery status
 * notification (RFC 3464) that is itself spooled, so it survives a crash and is retried
 * the same way.
 *
 * Crash recovery (spoolRecover): every release under way when the process died is done
 * again, so no acknowledged message is ever lost. One still "sending" cannot have been
 * delivered: the MTA never got the end of its content, and drops a transaction whose
 * connection closes before it (RFC 5321 §4.1.1.4). One "committing" may have been: the
 * row says so durably before the end is written (release.ts), and the end, once written,
 * reaches the MTA even if the process dies the next instant (the kernel sends it). It is
 * released again, as a release whose connection breaks after the content end is while
 * the gateway runs (RFC 5321 §6.1: a second copy rather than a lost one), and counted
 * (resent_after_crash). So a message is delivered twice only when the gateway dies
 * after writing the end of its content and before the MTA's reply to it is recorded
 * (spoolDelete, or spoolReschedule); the 4xx to that end is not lost either.
 *
 * Several instances on one shared store (PostgreSQL) release from one index: a claim
 * (spoolClaim) makes each release one instance's, with a lease the claimant renews every
 * third of it while the release runs (keepClaim), so a slow release is never taken over.
 * When an instance dies, its claims' leases run out and every other instance's passes
 * take those messages back (spoolExpired), by the rule above: one still sending is
 * released again; one committing too, as a possible second copy (resent_after_crash).
 * A claimant that lost its claim all the same (stalled past its lease) finds out before
 * sending the end of the content (spoolCommitting throws ReleaseClaimLost) and drops its
 * MTA transaction, so the instance that took over is the one that delivers.
 */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../log/logger.js';
import type { RelayPool } from '../../smtp/relay-pool.js';
import { ReleaseClaimLost, type HeldMessage, type HeldRecipient, type Store } from '../../store/store.js';
import { futureReleaseDsns, futureReleaseEvents, heldBytes, heldMessages, heldOldestRelease, releaseLag } from '../../metrics/metrics.js';
import type { Clock } from './clock.js';
import { buildDsn, type DsnRecipient } from './dsn.js';
import { releaseMessage } from './release.js';
import { isStoreUnavailable } from '../../store/availability.js';
import type { HeldContentStore } from './content.js';

export interface SchedulerOptions {
  concurrency: number;
  retryInitialSeconds: number;
  retryMaxSeconds: number;
  giveUpSeconds: number;
  /** Our name in generated DSNs (Reporting-MTA, From: MAILER-DAEMON@...). */
  hostname: string;
  /** The store's release lease (store.releaseLeaseSeconds): a claim is renewed every third of it, when the store has leases. */
  leaseMs?: number;
}

/** Passes run at least this often, to notice rows changed by another process (the queue CLI). */
const POLL_MS = 1000;
/** While the store is unavailable, passes back off from POLL_MS to this. */
const STORE_RETRY_MAX_MS = 15_000;
/** The spool's size is counted (a scan of the index) at most this often; in between it is kept up to date here. */
const STATS_MS = 1000;
/** Content no row names is looked for this often while running (a store shared with instances that may die mid-upload). */
const ORPHANS_MS = 10 * 60 * 1000;
/** The largest original a DSN carries whole (RET=FULL); larger ones get their headers only. */
const DSN_MAX_RETURNED = 1024 * 1024;

/**
 * Start-time recovery: releases under way when their process died go back to held, and
 * files no index row refers to are removed. The cluster primary (src/cluster/) runs it
 * whole before forking; a worker, started next to running siblings, leaves the files
 * alone: a sibling's message written but not yet indexed looks just like an orphan.
 */
export async function recoverSpool(store: Store, content: HeldContentStore, log: Logger, opts: { removeOrphans: boolean }): Promise<void> {
  await content.init();
  for (const mayBeDelivered of await store.spoolRecover()) {
    futureReleaseEvents.inc({ event: 'resent_after_crash' });
    log.warn({ id: mayBeDelivered.id }, 'held message was being handed to the MTA when the gateway stopped: released again (a second copy is possible)');
  }
  if (opts.removeOrphans) await removeOrphanContent(store, content, log);
}

async function removeOrphanContent(store: Store, content: HeldContentStore, log: Logger): Promise<void> {
  const orphans = await content.removeOrphans(async (id) => (await store.spoolGet(id)) !== undefined);
  if (orphans > 0) log.info({ messages: orphans }, 'removed held content no held message refers to (never acknowledged, or left by a removal that did not finish)');
}

export function newSpoolId(): string {
  return randomBytes(12).toString('hex');
}

export class ReleaseScheduler {
  private timer: { cancel(): void } | undefined;
  private timerAt = Infinity;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** The spool's size as last counted, plus what this process added and removed since. */
  private usage = { count: 0, bytes: 0, oldestRelease: undefined as number | undefined };
  private usageAt = -Infinity;
  /** The wait before the next pass while the store is unavailable (0: it is not). */
  private storeRetryMs = 0;
  private orphansAt = -Infinity;
  /**
   * Releases the MTA took whose end the store could not record (it went away in between):
   * recorded first thing in every later pass, before a lease can run out and the message
   * be taken for one cut short and sent a second time.
   */
  private readonly unrecorded = new Map<string, () => Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly content: HeldContentStore,
    private readonly pool: RelayPool,
    private readonly clock: Clock,
    private readonly opts: SchedulerOptions,
    private readonly log: Logger,
  ) {}

  /** Recovers from a crash, drops orphan content (not in a worker: see recoverSpool), and starts releasing. */
  async start(): Promise<void> {
    await recoverSpool(this.store, this.content, this.log, { removeOrphans: !cluster.isWorker });
    this.orphansAt = this.clock.now();
    await this.countUsage(true);
    this.wake(0);
  }

  private async removeOrphans(): Promise<void> {
    this.orphansAt = this.clock.now();
    await removeOrphanContent(this.store, this.content, this.log);
  }

  /** Records the releases done while the store was away; throws (the pass backs off) while it still is. */
  private async recordPending(): Promise<void> {
    for (const [id, record] of this.unrecorded) {
      await record();
      this.unrecorded.delete(id);
      this.log.info({ id }, 'held message release recorded now that the store is back');
    }
  }

  /** Takes back the releases whose claimant's lease ran out (another instance died): a store with leases only. */
  private async takeOverExpired(): Promise<void> {
    if (this.store.spoolExpired === undefined) return;
    for (const mayBeDelivered of await this.store.spoolExpired()) {
      futureReleaseEvents.inc({ event: 'resent_after_crash' });
      this.log.warn({ id: mayBeDelivered.id }, 'held message was being handed to the MTA by an instance whose release lease ran out: released again (a second copy is possible)');
    }
    if (this.store.spoolContent() !== undefined && this.clock.now() - this.orphansAt >= ORPHANS_MS) await this.removeOrphans();
  }

  /** Messages and octets in the spool (counted at most once a second; kept current in between). */
  spoolUsage(): { count: number; bytes: number } {
    return this.usage;
  }

  /** A message was just held: count it, and run a pass by its time. */
  held(message: Pick<HeldMessage, 'size' | 'releaseAt' | 'nextAttemptAt'>): void {
    this.adjustUsage(1, message.size, message.releaseAt);
    this.wake(Math.max(0, message.nextAttemptAt - this.clock.now()));
  }

  /** A held message left the spool without a release (cancelled). */
  removed(message: Pick<HeldMessage, 'size'>): void {
    this.adjustUsage(-1, -message.size);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
    await this.running;
  }

  private wake(inMs: number, atMost = POLL_MS): void {
    if (this.stopped) return;
    const at = this.clock.now() + Math.min(inMs, atMost);
    if (this.timer !== undefined && this.timerAt <= at) return;
    this.timer?.cancel();
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      // The pass reads the clock when it runs, not at the instant the timer was due.
      queueMicrotask(() => this.pass());
    }, at - this.clock.now());
  }

  private pass(): void {
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      try {
        await this.recordPending();
        await this.takeOverExpired();
        await this.releaseDue();
        if (this.again) {
          this.again = false;
          this.wake(0);
        } else {
          await this.countUsage();
          const nextDue = await this.store.spoolNextDue();
          this.wake(nextDue === undefined ? POLL_MS : Math.max(0, nextDue - this.clock.now()));
        }
        this.storeRetryMs = 0;
      } catch (err) {
        if (!isStoreUnavailable(err)) {
          this.log.error({ err: (err as Error).stack }, 'release pass failed');
          return this.wake(POLL_MS);
        }
        // The store is away (logged once by store/availability.ts): releases pause and the
        // passes back off, up to STORE_RETRY_MAX_MS apart, until one finds it back.
        this.storeRetryMs = Math.min(Math.max(POLL_MS, this.storeRetryMs * 2), STORE_RETRY_MAX_MS);
        this.wake(this.storeRetryMs, this.storeRetryMs);
      }
    })().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves once no pass is running (tests step a manual clock, then wait for this). */
  async settled(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /** Relays due messages, `concurrency` at a time, until none is due. */
  private async releaseDue(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      const due = await this.store.spoolDue(this.clock.now(), this.opts.concurrency);
      if (due.length === 0) return;
      await Promise.all(due.map((m) => this.release(m)));
    }
  }

  private async release(message: HeldMessage): Promise<void> {
    if (!(await this.store.spoolClaim(message.id))) return;
    const claim = this.keepClaim(message.id);
    let result: Awaited<ReturnType<typeof releaseMessage>>;
    try {
      result = await releaseMessage(message, { pool: this.pool, content: this.content, index: this.store });
    } catch (err) {
      if (!(err instanceof ReleaseClaimLost)) throw err;
      // The instance that took it over releases it; the end of the content never left here.
      futureReleaseEvents.inc({ event: 'claim_lost' });
      this.log.warn({ id: message.id }, 'release claim lost before the end of the content (lease ran out): left to the instance that took it over');
      return;
    } finally {
      claim.stop();
    }
    const now = this.clock.now();
    if (result.temporary === undefined || now - message.releaseAt >= this.opts.giveUpSeconds * 1000) {
      // Done: what is still pending after giving up fails with the last temporary reply.
      const final = result.recipients.map((r) =>
        r.status === 'pending' ? { ...r, status: 'failed' as const, reply: r.reply ?? result.temporary ?? 'delivery time expired' } : r,
      );
      if (message.attempts === 0 && final.some((r) => r.status === 'delivered')) releaseLag.observe(Math.max(0, now - message.releaseAt) / 1000);
      await this.finish(message, final);
      return;
    }
    const delay = Math.min(this.opts.retryInitialSeconds * 2 ** message.attempts, this.opts.retryMaxSeconds) * 1000;
    futureReleaseEvents.inc({ event: 'retried' });
    this.log.info({ id: message.id, attempt: message.attempts + 1, retryInSeconds: delay / 1000, reason: result.temporary }, 'held message release deferred');
    await this.store.spoolReschedule(message.id, result.recipients, now + delay, result.temporary);
  }

  /**
   * Renews the claim on a message every third of the lease while its release runs, so a
   * slow release (a large message, a slow MTA) is not taken over. A renewal that fails
   * (the database unreachable for a moment) is tried again at the next tick; a claim that
   * is gone is found out at spoolCommitting.
   */
  private keepClaim(id: string): { stop(): void } {
    const renew = this.store.spoolRenew?.bind(this.store);
    const every = this.opts.leaseMs === undefined ? undefined : Math.max(100, Math.floor(this.opts.leaseMs / 3));
    if (renew === undefined || every === undefined) return { stop: () => undefined };
    // Real time, not this.clock: the lease runs in the database's clock, whatever the scheduler's.
    const timer = setInterval(() => {
      renew(id).then(
        (held) => {
          if (!held) this.log.warn({ id }, 'release claim could not be renewed: another instance took the message over');
        },
        (err: unknown) => this.log.warn({ id, err: (err as Error).message }, 'release claim renewal failed; retried'),
      );
    }, every);
    timer.unref();
    return { stop: () => clearInterval(timer) };
  }

  /** Every recipient settled: report failures to the sender, then drop the message. */
  private async finish(message: HeldMessage, recipients: HeldRecipient[]): Promise<void> {
    const failed = recipients.filter((r) => r.status === 'failed');
    const delivered = recipients.length - failed.length;
    if (delivered > 0) futureReleaseEvents.inc({ event: 'released' });
    if (failed.length > 0) futureReleaseEvents.inc({ event: 'failed' }, failed.length);
    this.log.info({ id: message.id, delivered, failed: failed.length }, 'held message released');
    const reported = failed.filter(wantsFailureDsn);
    const record = () => this.recordFinished(message, reported);
    try {
      await record();
    } catch (err) {
      if (isStoreUnavailable(err)) this.unrecorded.set(message.id, record);
      throw err;
    }
  }

  /** A finished release into the store: its DSN queued, the message out of the index and its content removed. */
  private async recordFinished(message: HeldMessage, reported: HeldRecipient[]): Promise<void> {
    // RFC 3461 §4.1 / RFC 5321 §4.5.5: never a DSN about a message with a null sender.
    const dsn = reported.length > 0 && message.sender !== '' ? await this.writeDsn(message, reported) : undefined;
    // The message leaves the index as its DSN enters it, in one transaction: a crash
    // before releases the message again (its DSN file is an orphan, removed at start), one
    // after never sends the DSN twice.
    if (await this.store.spoolDelete(message.id, dsn)) this.adjustUsage(-1, -message.size);
    if (dsn !== undefined) {
      this.adjustUsage(1, dsn.size, dsn.releaseAt);
      futureReleaseDsns.inc();
      this.log.info({ id: message.id, dsn: dsn.id, recipients: reported.length }, 'delivery status notification queued for the sender');
    }
    await this.content.remove(message.id);
  }

  /** The DSN's content, durable (a file fsynced, renamed, its directory fsynced; or chunks committed); its row is for finish() to commit. */
  private async writeDsn(message: HeldMessage, failed: HeldRecipient[]): Promise<HeldMessage> {
    const original = await readContent(this.content, message.id);
    const param = (name: string) => message.mailParams.find(([k]) => k === name)?.[1];
    const ret = param('RET');
    const envid = param('ENVID');
    const dsn = buildDsn({
      reportingMta: this.opts.hostname,
      sender: message.sender,
      ...(typeof envid === 'string' ? { envid } : {}),
      ...(ret === 'FULL' || ret === 'HDRS' ? { ret } : {}),
      arrivalDate: new Date(message.createdAt),
      recipients: failed.map(dsnRecipient),
      original,
      now: new Date(this.clock.now()),
      messageIdDomain: this.opts.hostname,
      // RFC 4865 §5.1.2: a DSN about a held message carries its hold request.
      ...(message.holdRequest !== '' ? { futureReleaseRequest: message.holdRequest } : {}),
    }, { maxReturnedBytes: DSN_MAX_RETURNED });
    const id = newSpoolId();
    const writer = this.content.create(id);
    writer.write(dsn);
    const size = await writer.commit();
    await this.content.flushCommitted();
    const now = this.clock.now();
    return {
      id,
      user: '',
      sender: '',
      mailParams: [],
      recipients: [{ address: message.sender, params: [], status: 'pending' }],
      size,
      createdAt: now,
      releaseAt: now,
      holdRequest: '',
      nextAttemptAt: now,
      attempts: 0,
      state: 'held',
    };
  }

  private async countUsage(now = false): Promise<void> {
    if (!now && this.clock.now() - this.usageAt < STATS_MS) return;
    const stats = await this.store.spoolStats();
    this.usageAt = this.clock.now();
    this.usage = { count: stats.count, bytes: stats.bytes, oldestRelease: stats.oldestRelease };
    this.setGauges();
  }

  private adjustUsage(count: number, bytes: number, releaseAt?: number): void {
    this.usage.count = Math.max(0, this.usage.count + count);
    this.usage.bytes = Math.max(0, this.usage.bytes + bytes);
    if (releaseAt !== undefined && (this.usage.oldestRelease === undefined || releaseAt < this.usage.oldestRelease)) this.usage.oldestRelease = releaseAt;
    this.setGauges();
  }

  private setGauges(): void {
    heldMessages.set(this.usage.count);
    heldBytes.set(this.usage.bytes);
    heldOldestRelease.set(this.usage.oldestRelease === undefined || this.usage.count === 0 ? 0 : this.usage.oldestRelease / 1000);
  }
}

/** RFC 3461 §4.1: NOTIFY=NEVER asks for none; without NOTIFY the default is FAILURE (and DELAY, not sent here). */
function wantsFailureDsn(r: HeldRecipient): boolean {
  const notify = r.params.find(([k]) => k === 'NOTIFY')?.[1];
  return typeof notify !== 'string' || notify.toUpperCase().split(',').includes('FAILURE');
}

function dsnRecipient(r: HeldRecipient): DsnRecipient {
  const orcpt = r.params.find(([k]) => k === 'ORCPT')?.[1];
  const reply = /^([45])\d\d(?: ([45]\.\d{1,3}\.\d{1,3}))?\b/.exec(r.reply ?? '');
  return {
    address: r.address,
    ...(typeof orcpt === 'string' ? { orcpt } : {}),
    action: 'failed',
    // The MTA's enhanced code (a 4.x.x one when the message expired while retrying, as
    // RFC 3463 §3.2 allows: "persistent transient failure"); else its class with X.0.0;
    // else 4.4.7, delivery time expired.
    status: reply?.[2] ?? (reply !== null ? `${reply[1]}.0.0` : '4.4.7'),
    ...(r.reply !== undefined ? { diagnostic: r.reply } : {}),
  };
}

async function readContent(content: HeldContentStore, id: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of content.read(id)) {
    parts.push(chunk);
    size += chunk.length;
    // Only the headers (or a bounded whole) go into the DSN: no need to read more.
    if (size > DSN_MAX_RETURNED + 1) break;
  }
  return Buffer.concat(parts);
}
