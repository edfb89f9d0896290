/**
 * The upstream's pre-login capabilities, learned by probing it at start and periodically,
 * and corrected whenever a session's own connection shows a different list. The
 * gateway's greeting and pre-login CAPABILITY are computed from this.
 */
import type { UpstreamConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { UpstreamConnection } from './upstream.js';

export class CapabilityCache {
  private caps: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private probed = false;

  constructor(
    private readonly cfg: UpstreamConfig,
    private readonly log: Logger,
  ) {}

  preAuth(): string[] {
    return this.caps;
  }

  hasProbed(): boolean {
    return this.probed;
  }

  /** A connection's greeting showed this list: adopt it if it changed. */
  observe(caps: readonly string[] | undefined): void {
    if (caps === undefined || caps.length === 0) return;
    if (caps.join(' ') === this.caps.join(' ')) return;
    if (this.probed) this.log.info({ capabilities: caps.join(' ') }, 'upstream capabilities changed');
    this.caps = [...caps];
    this.probed = true;
  }

  /** Connects once, reads the capabilities, logs out. Failure leaves the last known list. */
  async probe(): Promise<boolean> {
    let conn: UpstreamConnection | undefined;
    try {
      conn = await UpstreamConnection.open(this.cfg);
      this.observe(conn.capabilities);
      await conn.command(['LOGOUT']).catch(() => undefined);
      return true;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'upstream capability probe failed');
      return false;
    } finally {
      conn?.end();
    }
  }

  start(refreshSeconds: number): void {
    this.timer = setInterval(() => void this.probe(), refreshSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
