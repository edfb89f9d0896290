/**
 * The submission front: its listeners, the relay pool to the upstream MTA, and the
 * upstream's EHLO keywords (learned at start and from every pooled connection), which
 * decide what the gateway may advertise (DSN, SMTPUTF8, SIZE).
 */
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';
import { startListeners, type BoundListener } from '../net/listeners.js';
import { ImapAuthenticator } from '../auth/imap-authenticator.js';
import { RelayPool } from './relay-pool.js';
import { SubmissionSession } from './session.js';
import type { Lemonade } from '../lemonade/services.js';
import { FutureRelease } from '../lemonade/futurerelease/service.js';
import { formatReply } from './protocol/reply.js';
import { Replies } from './protocol/replies.js';

export interface SubmissionServer {
  addresses: BoundListener[];
  sessions: Set<SubmissionSession>;
  futureRelease: FutureRelease;
  /** Stops accepting connections; open sessions (and their relays) carry on. */
  stopAccepting(): void;
  /**
   * Closes the listeners (connections left after lingerMs are destroyed), the release
   * scheduler (waiting up to releaseWaitMs for a release under way) and the relay pool.
   */
  close(lingerMs?: number, releaseWaitMs?: number): Promise<void>;
}

export async function startSubmissionServer(config: Config, tlsHolder: TlsContextHolder, lemonade: Lemonade, log: Logger): Promise<SubmissionServer> {
  const sub = config.submission;
  const sessions = new Set<SubmissionSession>();
  const pool = new RelayPool(sub.upstream, {
    heloName: sub.relay.heloName ?? config.hostname,
    replyTimeoutMs: sub.relay.replyTimeoutSeconds * 1000,
    poolSize: sub.relay.poolSize,
  });
  let upstreamExtensions: ReadonlyMap<string, string> | undefined;
  const learn = async (): Promise<void> => {
    try {
      const conn = await pool.acquire();
      upstreamExtensions = new Map(conn.extensions);
      pool.release(conn, true);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'upstream MTA not reachable; DSN and SMTPUTF8 are not advertised until it is');
    }
  };
  if (sub.listen.length > 0) await learn();
  // Held messages are released even while no listener is configured (they were accepted earlier).
  const futureRelease = new FutureRelease(config, lemonade.store, pool, log);
  await futureRelease.start();
  const auth = new ImapAuthenticator(config);
  const listeners = await startListeners({
    protocol: 'submission',
    listeners: sub.listen,
    tls: tlsHolder,
    log,
    sessionCount: () => sessions.size,
    maxSessions: sub.limits.maxSessions,
    // RFC 5321 §3.1: 421 as the greeting refuses service.
    refusal: formatReply(Replies.tooManyConnections(config.hostname)),
    onConnection(socket, listener) {
      if (upstreamExtensions === undefined) void learn();
      const session = new SubmissionSession(socket, {
        config,
        listener,
        tls: tlsHolder,
        auth,
        pool,
        lemonade,
        futureRelease,
        upstreamExtensions: () => upstreamExtensions,
        log,
        onClose: (s) => sessions.delete(s),
      });
      sessions.add(session);
    },
  });
  return {
    addresses: listeners.addresses,
    sessions,
    futureRelease,
    stopAccepting: () => listeners.stopAccepting(),
    async close(lingerMs, releaseWaitMs = Infinity) {
      await listeners.close(lingerMs);
      // After the sessions: a message still in DATA relays through the pool until then.
      const stopped = futureRelease.stop();
      if (releaseWaitMs === Infinity) await stopped;
      // A release cut short is finished or done again after the restart (spool crash safety).
      else await Promise.race([stopped, new Promise((r) => setTimeout(r, releaseWaitMs).unref())]);
      await pool.close();
    },
  };
}
