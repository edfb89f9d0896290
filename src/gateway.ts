/**
 * Wiring of one gateway process: TLS material, the upstream capability probe, the
 * Lemonade services (store, side connections, FUTURERELEASE spool), the IMAP and
 * submission listeners and the metrics endpoint. main.ts adds the command line and
 * signals; tests run the built main.js as a child process (test/helpers/gateway.ts).
 */
import type { Config } from './config/schema.js';
import type { Logger } from './log/logger.js';
import { TlsContextHolder } from './tls/certificates.js';
import { configWarnings } from './config/warnings.js';
import { CapabilityCache } from './imap/capability-cache.js';
import { startImapServer, type ImapServer } from './imap/server.js';
import { startSubmissionServer, type SubmissionServer } from './smtp/server.js';
import { startLemonade } from './lemonade/services.js';
import { startMetricsServer } from './metrics/server.js';
import { tlsReloads } from './metrics/metrics.js';
import { shutDown } from './shutdown.js';
import { applyReload } from './config/reload.js';

export interface Gateway {
  imap: ImapServer;
  submission: SubmissionServer;
  metricsPort: number | undefined;
  /**
   * SIGHUP: applies the reloadable parts of `next` (config/reload.ts), when the config file
   * was re-read and is valid, then reloads the TLS certificate.
   */
  reload(next?: Config): void;
  stop(): Promise<void>;
}

export async function startGateway(config: Config, log: Logger): Promise<Gateway> {
  const tlsHolder = new TlsContextHolder({
    cert: config.tls.cert,
    key: config.tls.key,
    dataDir: config.dataDir,
    hostname: config.hostname,
  });
  // So an operator can pin it in clients (mbsync CertificateFile, NeoMutt certificate_file).
  log.info({ certificate: tlsHolder.identity() }, 'TLS certificate');
  for (const warning of configWarnings(config)) log.warn(warning);
  const capabilityCache = new CapabilityCache(config.imap.upstream, log);
  // Not fatal: the upstream may come up after the gateway; sessions re-learn the list.
  await capabilityCache.probe();
  capabilityCache.start(config.imap.capabilityRefreshSeconds);
  const lemonade = await startLemonade(config, log);
  const imap = await startImapServer(config, tlsHolder, capabilityCache, lemonade, log);
  const submission = await startSubmissionServer(config, tlsHolder, lemonade, log);
  let draining = false;
  let stopping: Promise<void> | undefined;
  const metrics = config.metrics.enabled
    ? await startMetricsServer({
        host: config.metrics.host,
        port: config.metrics.port,
        // 503 while draining, so a load balancer stops sending new clients here.
        health: () => ({
          ok: !draining,
          detail: {
            ...(draining ? { draining: true } : {}),
            imapSessions: imap.sessions.size,
            submissionSessions: submission.sessions.size,
            upstreamProbed: capabilityCache.hasProbed(),
          },
        }),
      })
    : undefined;
  log.info(
    { imap: imap.addresses, submission: submission.addresses, metrics: metrics ? { host: config.metrics.host, port: metrics.port } : null },
    'lemonade-gateway ready',
  );
  return {
    imap,
    submission,
    metricsPort: metrics?.port,
    reload(next) {
      if (next !== undefined) {
        const { applied, restartNeeded } = applyReload(config, next);
        log.level = config.log.level;
        log.info({ applied, restartNeeded }, 'configuration reloaded');
        if (restartNeeded.length > 0) log.warn({ keys: restartNeeded }, 'these changes take effect only after a restart');
        for (const warning of configWarnings(config)) log.warn(warning);
      }
      try {
        tlsHolder.reload({ cert: config.tls.cert, key: config.tls.key });
        tlsReloads.inc({ result: 'ok' });
        log.info({ certificate: tlsHolder.identity() }, 'TLS certificate reloaded');
      } catch (err) {
        tlsReloads.inc({ result: 'error' });
        log.error({ err: (err as Error).message }, 'TLS reload failed; keeping the old certificate');
      }
    },
    async stop() {
      if (stopping === undefined) {
        draining = true;
        stopping = shutDown({ config, log, imap, submission }).finally(async () => {
          capabilityCache.stop();
          await metrics?.close();
          // Last: the store holds the spool index (and the access keys); closing it
          // checkpoints SQLite's write-ahead log into the database file.
          await lemonade.close();
          log.info('stopped');
        });
      }
      return stopping;
    },
  };
}
