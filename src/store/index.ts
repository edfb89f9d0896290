/** Opens the store the config names (only the embedded SQLite one exists yet). */
import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Store } from './store.js';
import { SqliteStore } from './sqlite.js';

export async function openStore(config: Config): Promise<Store> {
  const file = path.resolve(config.dataDir, config.store.path);
  return new SqliteStore(file);
}
