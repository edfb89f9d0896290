/** Opens the store the config names. Only the embedded SQLite kind exists yet. */
import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Store } from './store.js';
import { SqliteStore } from './sqlite.js';

/** Where the SQLite file is: store.path, relative to dataDir unless absolute. */
export function sqlitePath(config: Pick<Config, 'dataDir' | 'store'>): string {
  return path.resolve(config.dataDir, config.store.path);
}

export async function openStore(config: Pick<Config, 'dataDir' | 'store'>): Promise<Store> {
  const kind = config.store.kind;
  switch (kind) {
    case 'sqlite':
      return SqliteStore.open(sqlitePath(config));
    default: {
      // A kind added to the schema must get a case here before it type-checks.
      const unknown: never = kind;
      throw new Error(`store.kind ${String(unknown)} is not implemented`);
    }
  }
}
