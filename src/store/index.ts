/** Opens the store the config names: the embedded SQLite file, or a shared PostgreSQL database. */
import cluster from 'node:cluster';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Store } from './store.js';
import { SqliteStore } from './sqlite.js';
import { PostgresStore, readPasswordFile } from './postgres.js';
import { nodeId } from './node-id.js';

/** Where the SQLite file is: store.path, relative to dataDir unless absolute. */
export function sqlitePath(config: Pick<Config, 'dataDir' | 'store'>): string {
  return path.resolve(config.dataDir, config.store.path);
}

export async function openStore(config: Pick<Config, 'dataDir' | 'store'>): Promise<Store> {
  const kind = config.store.kind;
  switch (kind) {
    case 'sqlite':
      // A worker (src/cluster/) shares the file with its siblings; any other process is
      // the file's only gateway (the cluster's primary recovers the spool before forking).
      return SqliteStore.open(sqlitePath(config), { shared: cluster.isWorker });
    case 'postgres': {
      const { url, passwordFile, poolSize } = config.store;
      // The schema requires url with postgres; a config built in code may still lack it.
      if (url === undefined) throw new Error('store.url is required when store.kind is postgres');
      // Read here, at open, and handed to the pool only: it is never part of a message or log line.
      const password = passwordFile === undefined ? undefined : readPasswordFile(passwordFile);
      // This gateway releases only the held messages whose content is in its own dataDir.
      return PostgresStore.open({ url, poolSize, node: nodeId(config.dataDir), ...(password !== undefined ? { password } : {}) });
    }
    default: {
      // A kind added to the schema must get a case here before it type-checks.
      const unknown: never = kind;
      throw new Error(`store.kind ${String(unknown)} is not implemented`);
    }
  }
}
