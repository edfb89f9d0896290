#!/usr/bin/env -S GLIBC_TUNABLES=glibc.malloc.trim_threshold=33554432 node --max-semi-space-size=1 --initial-old-space-size=64
// The first flag: a relay allocates a buffer per socket read and drops it at once; a small
// young generation collects those promptly, so memory follows the traffic in flight rather
// than the traffic relayed (a 50 MB FETCH otherwise leaves tens of MB of garbage waiting).
// The second: V8 counts those read buffers as external memory and starts a full
// mark-compact when the external memory allocated since the last one exceeds the old
// generation's headroom. Once a mark-compact under load has set that headroom from the
// small live heap (~15 MB live, ~9 MB headroom), the ~13 MB of reads between two young
// collections at 45 MB/s start one every ~300 ms, for good (--trace-gc, 1 MB submission
// benchmark: 50-75 mark-compacts a minute, gateway CPU per message 3.5 -> 6-8 ms). A 64 MB
// floor under the old generation's limit keeps the headroom above that churn; it costs
// nothing per idle session (47 KiB either way, bench/imap-bench.ts) and lets up to that
// much old garbage wait for a collection. V8 reads both only at start-up, so they cannot
// be set from code.
// The tunable: those read buffers (64 KiB each) come from glibc's heap, and with its default
// trim threshold (128 KiB) every collection that frees a few of them hands the top of the
// heap back to the kernel, so the next reads fault fresh pages in again: for 1 MB messages
// relayed by 8 sessions about 150-200 page faults and 2-4 ms of system CPU per message
// (bench/RESULTS.md, issue 3). Keeping up to 32 MiB of freed heap cut that to about 30
// (8 MiB was not enough once 1 KB and 1 MB traffic alternated: about 100); the price is
// that much heap kept after a burst instead of returned. glibc reads it only at start-up
// (musl ignores it). The Dockerfile sets the same.
/**
 * lemonade-gateway command line: `--config FILE` runs the gateway, `--check-config FILE`
 * only validates the configuration, `queue ...` inspects and acts on the FUTURERELEASE spool,
 * `store copy-sqlite` moves the embedded store's state into PostgreSQL.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { loadConfig, ConfigError } from './config/load.js';
import type { Config } from './config/schema.js';
import { configureLogger } from './log/logger.js';
import { startGateway } from './gateway.js';
import { configWarnings } from './config/warnings.js';
import { TlsContextHolder, type CertificateIdentity } from './tls/certificates.js';
import { QUEUE_USAGE, runQueueCommand } from './lemonade/futurerelease/queue-cli.js';
import { COPY_USAGE, runStoreCommand } from './store/copy-sqlite.js';
import { workerCount } from './cluster/count.js';
import { runPrimary } from './cluster/primary.js';
import { serveAsWorker } from './cluster/worker.js';

const USAGE = `usage: lemonade-gateway --config FILE        run the gateway
       lemonade-gateway --check-config FILE  validate FILE and exit
       ${QUEUE_USAGE}
                                             the FUTURERELEASE spool (works while the gateway runs)
       ${COPY_USAGE}
                                             copy the SQLite store into the PostgreSQL one
                                             store.url names (gateway stopped; empty database)
       lemonade-gateway --version`;

function version(): string {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'queue') return queue(argv.slice(1));
  if (argv[0] === 'store') return store(argv.slice(1));
  const [flag, file] = argv;
  if (flag === '--version') {
    console.log(version());
    return 0;
  }
  if ((flag !== '--config' && flag !== '--check-config') || file === undefined || argv.length !== 2) {
    console.error(USAGE);
    return 64; // EX_USAGE
  }
  const config = readConfig(file);
  if (config === undefined) return 78; // EX_CONFIG
  if (flag === '--check-config') return checkConfig(file, config);
  // A worker's lines say which process wrote them (they share the primary's stdout).
  const log = cluster.isWorker ? configureLogger(config.log.level).child({ pid: process.pid }) : configureLogger(config.log.level);
  const workers = workerCount(config);
  // workers > 1: this process becomes the primary (src/cluster/primary.ts) and forks
  // workers, which run this same command and take the branch below.
  if (workers > 1 && cluster.isPrimary) return runPrimary(config, workers, log);
  const gateway = await startGateway(asWorker(config), log);
  if (cluster.isWorker) serveAsWorker(gateway);
  process.on('SIGHUP', () => {
    // An invalid file changes nothing but the certificate, which is re-read either way
    // (a renewed certificate should not wait for a config typo to be fixed).
    let next: Config | undefined;
    try {
      next = asWorker(loadConfig(file));
    } catch (err) {
      const issues = err instanceof ConfigError ? err.issues : [(err as Error).message];
      log.error({ issues }, 'configuration reload failed; keeping the running configuration');
    }
    gateway.reload(next);
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return; // a second signal does not cut the grace time short
    stopping = true;
    log.info({ signal, graceSeconds: config.shutdown.graceSeconds }, 'shutting down');
    // A stop that hangs past the grace time and a margin is a bug; exit rather than stay.
    setTimeout(() => {
      log.error('shutdown did not finish in time');
      process.exit(1);
    }, (config.shutdown.graceSeconds + 30) * 1000).unref();
    gateway.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: (err as Error).stack }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return -1; // keep running
}

/**
 * A worker leaves the metrics listener to its primary, which aggregates every worker's
 * registry (a listener opened in a worker would be shared and answer for one worker at a
 * time). Applied to every reloaded config too, so a reload sees no change there.
 */
function asWorker(config: Config): Config {
  if (cluster.isWorker) config.metrics.enabled = false;
  return config;
}

/**
 * --check-config: the configuration is valid; what it probably gets wrong; and the TLS
 * certificate clients will see (the self-signed one is generated now if it does not exist
 * yet, as the first start would, so it can be pinned before the gateway runs).
 */
function checkConfig(file: string, config: Config): number {
  let identity: CertificateIdentity;
  try {
    identity = new TlsContextHolder({ cert: config.tls.cert, key: config.tls.key, dataDir: config.dataDir, hostname: config.hostname }).identity();
  } catch (err) {
    console.error(`${file}: TLS: ${(err as Error).message}`);
    return 78;
  }
  for (const warning of configWarnings(config)) console.log(`warning: ${warning}`);
  console.log(`TLS certificate: ${identity.file}${identity.selfSigned ? ' (self-signed, generated by the gateway)' : ''}`);
  console.log(`TLS certificate SHA-256 fingerprint: ${identity.sha256}`);
  console.log(`${file}: configuration OK`);
  return 0;
}

function readConfig(file: string): Config | undefined {
  try {
    return loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) console.error(`${file}: invalid configuration:\n  ${err.issues.join('\n  ')}`);
    else console.error(`${file}: ${(err as Error).message}`);
    return undefined;
  }
}

/** queue VERB [ID] --config FILE */
async function queue(argv: string[]): Promise<number> {
  const at = argv.indexOf('--config');
  const file = at >= 0 ? argv[at + 1] : undefined;
  if (file === undefined) {
    console.error(`usage: ${QUEUE_USAGE}`);
    return 64;
  }
  const config = readConfig(file);
  if (config === undefined) return 78;
  const rest = [...argv.slice(0, at), ...argv.slice(at + 2)];
  return runQueueCommand(config, rest, (t) => console.log(t), (t) => console.error(t));
}

/** store copy-sqlite --config FILE */
async function store(argv: string[]): Promise<number> {
  const at = argv.indexOf('--config');
  const file = at >= 0 ? argv[at + 1] : undefined;
  if (file === undefined) {
    console.error(`usage: ${COPY_USAGE}`);
    return 64;
  }
  const config = readConfig(file);
  if (config === undefined) return 78;
  const rest = [...argv.slice(0, at), ...argv.slice(at + 2)];
  return runStoreCommand(config, rest, (t) => console.log(t), (t) => console.error(t));
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    console.error(`lemonade-gateway: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  },
);
