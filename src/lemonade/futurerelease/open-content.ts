/** Picks the held-content store (content.ts) that goes with the configured store. */
import type { Store } from '../../store/store.js';
import type { HeldContentStore } from './content.js';
import { DbContent } from './db-content.js';
import { SpoolFiles } from './spool.js';

/** The content store that goes with the store: the database's own when it keeps content, else files in dataDir. */
export function heldContentStore(dataDir: string, store: Store): HeldContentStore {
  const rows = store.spoolContent();
  // With the store's own content, dataDir/spool only has what an earlier build left there (DbContent.init).
  return rows === undefined ? new SpoolFiles(dataDir) : new DbContent(rows, new SpoolFiles(dataDir));
}
