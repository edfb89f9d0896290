/** Picks the held-content store (content.ts) that goes with the configured store. */
import type { Config } from '../../config/schema.js';
import type { Store } from '../../store/store.js';
import type { HeldContentStore } from './content.js';
import { DbContent, ORPHAN_IDLE_MS } from './db-content.js';
import { SpoolFiles } from './spool.js';

/** The content store that goes with the store: the database's own when it keeps content, else files in dataDir. */
export function heldContentStore(config: Pick<Config, 'dataDir' | 'submission'>, store: Store): HeldContentStore {
  const rows = store.spoolContent();
  if (rows === undefined) return new SpoolFiles(config.dataDir);
  // An upload under way is silent at most as long as the session waits for data (DATA) or
  // the next command (BDAT): content idle twice that long, and at least an hour, is an orphan.
  const { dataSeconds, commandSeconds } = config.submission.timeouts;
  const orphanIdleMs = Math.max(ORPHAN_IDLE_MS, 2 * 1000 * Math.max(dataSeconds, commandSeconds));
  // With the store's own content, dataDir/spool only has what an earlier build left there (DbContent.init).
  return new DbContent(rows, new SpoolFiles(config.dataDir), orphanIdleMs);
}
