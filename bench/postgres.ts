/**
 * Whether the benchmarks can start a PostgreSQL (issue 18): the server itself comes from
 * test/helpers/postgres.ts (scripts/postgres.sh start), this only asks the script whether
 * Debian's packages are there, so a bench can leave its PostgreSQL parts out instead of
 * failing half-way (bench/run.sh installs them through scripts/setup.sh; a by-hand
 * `node dist-bench/...` may run where they are not).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../test/helpers/gateway.js';

/** True when `scripts/postgres.sh missing` names no package (and runs at all). */
export function postgresInstalled(): boolean {
  try {
    const out = execFileSync('bash', [path.join(repoRoot, 'scripts', 'postgres.sh'), 'missing'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.trim() === '';
  } catch {
    return false;
  }
}
