/**
 * The name of one gateway's dataDir in a shared store: a random id kept in DATADIR/node-id.
 * Processes on one dataDir (workers, a restart) share it, because they share what it
 * stands for: the spool directory where an earlier build kept FUTURERELEASE content with
 * the PostgreSQL store (postgres.ts, origin; such content is moved into the database at
 * start: futurerelease/db-content.ts). A copied dataDir keeps the name, which is right:
 * the spool files came with it.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { StoreError } from './store.js';

export function nodeId(dataDir: string): string {
  const file = path.join(dataDir, 'node-id');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    // 'wx': created only if absent, so processes starting together all end with the first one.
    writeFileSync(file, `${randomUUID()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new StoreError(`cannot create ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const id = readFileSync(file, 'utf8').trim();
  // A file caught between create and write reads empty: the writer finishes within microseconds.
  if (id === '') return nodeIdRetry(file);
  return id;
}

function nodeIdRetry(file: string): string {
  for (let i = 0; i < 100; i++) {
    const id = readFileSync(file, 'utf8').trim();
    if (id !== '') return id;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  throw new StoreError(`${file} is empty: remove it and start again`);
}
