/**
 * When to restart a worker that exited unexpectedly: at once the first time, then after
 * a delay doubling per crash up to a bound, so a worker that crashes at start (a bad
 * upstream, a full disk) does not fork in a tight loop. A worker that ran for STABLE_MS
 * counts as healthy again: its next crash starts over.
 */
export const RESTART_BASE_MS = 250;
export const RESTART_MAX_MS = 30_000;
export const STABLE_MS = 60_000;

export class RestartBackoff {
  private crashes = 0;

  /** The delay before restarting a worker that ran for uptimeMs and then crashed. */
  next(uptimeMs: number): number {
    if (uptimeMs >= STABLE_MS) this.crashes = 0;
    const delay = this.crashes === 0 ? 0 : Math.min(RESTART_BASE_MS * 2 ** (this.crashes - 1), RESTART_MAX_MS);
    this.crashes++;
    return delay;
  }
}
