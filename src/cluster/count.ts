/** How many worker processes `workers` asks for: a number, or "auto" for one per CPU. */
import os from 'node:os';
import type { Config } from '../config/schema.js';

export function workerCount(config: Pick<Config, 'workers'>): number {
  return config.workers === 'auto' ? Math.max(1, os.availableParallelism()) : config.workers;
}
