/**
 * The primary of `workers: N` (N > 1): it serves no session itself. Before forking it does
 * what must happen once per host, not once per worker: the self-signed certificate is made
 * (workers racing to make it would each serve a different one), the store's migrations
 * run, and the FUTURERELEASE spool is recovered (releases of the last run back to held,
 * orphan files removed: see recoverSpool). Then it forks N workers, which share the
 * listeners (node:cluster hands each accepted connection to one worker, round robin) and
 * each serve whole sessions.
 *
 * It restarts a worker that exits unexpectedly (RestartBackoff; logged; counted in
 * lemonade_worker_restarts_total), passes SIGHUP and SIGTERM/SIGINT on to every worker
 * (each reloads, or drains as a single process does), and exits once all have exited. It
 * serves the metrics listener alone: /metrics is every worker's registry (and its own)
 * aggregated by prom-client (sums, except where a metric says otherwise), /healthz is 503
 * unless all N workers are up.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { TlsContextHolder } from '../tls/certificates.js';
import { openStore } from '../store/index.js';
import { recoverSpool } from '../lemonade/futurerelease/scheduler.js';
import { heldContentStore } from '../lemonade/futurerelease/open-content.js';
import { registry, workerRestarts } from '../metrics/metrics.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { RestartBackoff } from './backoff.js';
import { isMessage, type MetricsAnswer, type MetricsRequest, type ReadyMessage } from './messages.js';

/** A worker that has not answered a scrape by then is left out of it (and the scrape says nothing of it). */
const METRICS_TIMEOUT_MS = 3000;

interface Slot {
  index: number;
  worker: Worker | undefined;
  startedAt: number;
  ready: boolean;
  backoff: RestartBackoff;
  restartTimer: NodeJS.Timeout | undefined;
}

/** Runs the primary until its workers have drained; resolves with the exit status. */
export async function runPrimary(config: Config, count: number, log: Logger): Promise<number> {
  log.info({ certificate: new TlsContextHolder({ cert: config.tls.cert, key: config.tls.key, dataDir: config.dataDir, hostname: config.hostname }).identity() }, 'TLS certificate');
  const store = await openStore(config);
  try {
    await recoverSpool(store, heldContentStore(config, store), log, { removeOrphans: true });
  } finally {
    await store.close();
  }

  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    worker: undefined,
    startedAt: 0,
    ready: false,
    backoff: new RestartBackoff(),
    restartTimer: undefined,
  }));
  /** Exit statuses of the workers stopped by stop(). */
  const exitCodes: number[] = [];
  let started = false;
  let stopping = false;
  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (finish = resolve));
  const live = () => slots.filter((s) => s.worker !== undefined);
  const up = () => slots.filter((s) => s.ready);

  const pendingMetrics = new Map<number, (m: MetricsAnswer['metrics'] | undefined) => void>();
  let requestSeq = 0;
  const askMetrics = (worker: Worker): Promise<MetricsAnswer['metrics'] | undefined> =>
    new Promise((resolve) => {
      const id = ++requestSeq;
      const done = (m: MetricsAnswer['metrics'] | undefined) => {
        clearTimeout(timer);
        pendingMetrics.delete(id);
        resolve(m);
      };
      const timer = setTimeout(() => done(undefined), METRICS_TIMEOUT_MS);
      pendingMetrics.set(id, done);
      const request: MetricsRequest = { type: 'lemonade:metrics?', id };
      worker.send(request, undefined, (err) => {
        if (err) done(undefined);
      });
    });

  const metrics: MetricsServer | undefined = config.metrics.enabled
    ? await startMetricsServer({
        host: config.metrics.host,
        port: config.metrics.port,
        health: () => ({
          ok: !stopping && up().length === count,
          detail: {
            ...(stopping ? { draining: true } : {}),
            workers: count,
            workersUp: up().length,
            workerPids: up().map((s) => s.worker!.process.pid),
          },
        }),
        async metrics() {
          const answers = await Promise.all(up().map((s) => askMetrics(s.worker!)));
          const all = [await registry.getMetricsAsJSON(), ...answers.filter((a) => a !== undefined)];
          return AggregatorRegistry.aggregate(all).metrics();
        },
      })
    : undefined;

  const fork = (slot: Slot): void => {
    slot.restartTimer = undefined;
    const worker = cluster.fork();
    slot.worker = worker;
    slot.startedAt = Date.now();
    slot.ready = false;
    worker.on('message', (msg: unknown) => {
      if (isMessage<MetricsAnswer>(msg, 'lemonade:metrics')) {
        pendingMetrics.get(msg.id)?.(msg.metrics);
      } else if (isMessage<ReadyMessage>(msg, 'lemonade:ready')) {
        slot.ready = true;
        log.info({ worker: slot.index, pid: worker.process.pid }, 'worker ready');
        if (!started && up().length === count) {
          started = true;
          log.info(
            { imap: msg.imap, submission: msg.submission, metrics: metrics ? { host: config.metrics.host, port: metrics.port } : null, workers: count, workerPids: up().map((s) => s.worker!.process.pid) },
            'lemonade-gateway ready',
          );
        }
      }
    });
    worker.on('exit', (code, signal) => {
      const wasReady = slot.ready;
      slot.worker = undefined;
      slot.ready = false;
      const pid = worker.process.pid;
      if (stopping) {
        // The exit status is the drain's: a worker that crashed earlier and was replaced does
        // not count, and one still starting (no sessions yet, no signal handler) ends by the signal.
        exitCodes.push(code ?? (signal === 'SIGTERM' && !wasReady ? 0 : 1));
        log.info({ worker: slot.index, pid, code, signal }, 'worker stopped');
        if (live().length === 0) finish(exitCodes.every((c) => c === 0) ? 0 : 1);
        return;
      }
      if (!started) {
        // A worker that cannot start (a port in use, an unreadable certificate) would fail
        // the same way again: the gateway fails to start, as a single process would.
        log.error({ worker: slot.index, pid, code, signal }, 'worker exited before the gateway was ready: stopping');
        stop('worker failed to start', 1);
        return;
      }
      const delay = slot.backoff.next(Date.now() - slot.startedAt);
      workerRestarts.inc();
      log.error({ worker: slot.index, pid, code, signal, restartInMs: delay }, 'worker exited unexpectedly: restarting it');
      slot.restartTimer = setTimeout(() => fork(slot), delay);
    });
  };

  let failedCode = 0;
  const stop = (reason: string, code = 0): void => {
    if (stopping) return; // a second signal does not cut the grace time short
    stopping = true;
    failedCode = code;
    log.info({ reason, workers: live().length, graceSeconds: config.shutdown.graceSeconds }, 'shutting down: draining every worker');
    for (const slot of slots) clearTimeout(slot.restartTimer);
    // A worker past the grace time and a margin is stuck: end it rather than wait forever.
    setTimeout(() => {
      log.error({ workers: live().map((s) => s.worker!.process.pid) }, 'workers did not stop in time: killing them');
      for (const slot of live()) slot.worker!.process.kill('SIGKILL');
      finish(1);
    }, (config.shutdown.graceSeconds + 30) * 1000).unref();
    for (const slot of live()) slot.worker!.process.kill('SIGTERM');
    if (live().length === 0) finish(code);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    // Each worker re-reads the config file and reloads (main.ts), as a single process does.
    // Only the ready ones: one still starting has no handler yet (SIGHUP would end it), and
    // reads the file as it is now anyway.
    log.info({ workers: up().length }, 'SIGHUP: passed on to every worker');
    for (const slot of up()) slot.worker!.process.kill('SIGHUP');
  });

  for (const slot of slots) fork(slot);
  const code = await finished;
  await metrics?.close();
  log.info('stopped');
  return Math.max(code, failedCode);
}
