/** Opens the store the config names: the embedded SQLite file, or a shared PostgreSQL database. */
import cluster from 'node:cluster';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import type { Store } from './store.js';
import { SqliteStore } from './sqlite.js';
import { PostgresStore, readPasswordFile } from './postgres.js';
import { nodeId } from './node-id.js';

/** The store options openStore reads; releaseLeaseSeconds and timeoutMs may be left out (their defaults) by configs built in code. */
export type StoreOptions = Pick<Config, 'dataDir'> & {
  store: Omit<Config['store'], 'releaseLeaseSeconds' | 'timeoutMs'> & Partial<Pick<Config['store'], 'releaseLeaseSeconds' | 'timeoutMs'>>;
};

/** Where the SQLite file is: store.path, relative to dataDir unless absolute. */
export function sqlitePath(config: StoreOptions): string {
  return path.resolve(config.dataDir, config.store.path);
}

export async function openStore(config: StoreOptions): Promise<Store> {
  const kind = config.store.kind;
  switch (kind) {
    case 'sqlite':
      // A worker (src/cluster/) shares the file with its siblings; any other process is
      // the file's only gateway (the cluster's primary recovers the spool before forking).
      return SqliteStore.open(sqlitePath(config), { shared: cluster.isWorker });
    case 'postgres': {
      const { url, passwordFile, poolSize, timeoutMs, releaseLeaseSeconds } = config.store;
      // The schema requires url with postgres; a config built in code may still lack it.
      if (url === undefined) throw new Error('store.url is required when store.kind is postgres');
      // Read here, at open, and handed to the pool only: it is never part of a message or log line.
      const password = passwordFile === undefined ? undefined : readPasswordFile(passwordFile);
      // node: rows an earlier build held with their content in this dataDir are this gateway's to release.
      return PostgresStore.open({
        url,
        poolSize,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(releaseLeaseSeconds !== undefined ? { leaseMs: releaseLeaseSeconds * 1000 } : {}),
        node: nodeId(config.dataDir),
        ...(password !== undefined ? { password } : {}),
      });
    }
    default: {
      // A kind added to the schema must get a case here before it type-checks.
      const unknown: never = kind;
      throw new Error(`store.kind ${String(unknown)} is not implemented`);
    }
  }
}
