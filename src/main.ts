#!/usr/bin/env -S node --max-semi-space-size=1
// The flag above: a relay allocates a buffer per socket read and drops it at once; a small
// young generation collects those promptly, so memory follows the traffic in flight rather
// than the traffic relayed (a 50 MB FETCH otherwise leaves tens of MB of garbage waiting).
// V8 reads it only at start-up, so it cannot be set from code.
/**
 * lemonade-gateway command line: `--config FILE` runs the gateway, `--check-config FILE`
 * only validates the configuration.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { loadConfig, ConfigError } from './config/load.js';
import { configureLogger } from './log/logger.js';
import { startGateway } from './gateway.js';

const USAGE = `usage: lemonade-gateway --config FILE        run the gateway
       lemonade-gateway --check-config FILE  validate FILE and exit
       lemonade-gateway --version`;

function version(): string {
  const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [flag, file] = argv;
  if (flag === '--version') {
    console.log(version());
    return 0;
  }
  if ((flag !== '--config' && flag !== '--check-config') || file === undefined || argv.length !== 2) {
    console.error(USAGE);
    return 64; // EX_USAGE
  }
  let config;
  try {
    config = loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`${file}: invalid configuration:\n  ${err.issues.join('\n  ')}`);
      return 78; // EX_CONFIG
    }
    console.error(`${file}: ${(err as Error).message}`);
    return 78;
  }
  if (flag === '--check-config') {
    console.log(`${file}: configuration OK`);
    return 0;
  }
  const log = configureLogger(config.log.level);
  const gateway = await startGateway(config, log);
  process.on('SIGHUP', () => gateway.reload());
  const stop = (signal: string) => {
    log.info({ signal }, 'shutting down');
    void gateway.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return -1; // keep running
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
