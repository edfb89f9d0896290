/**
 * The embedded store: one SQLite file under dataDir, through better-sqlite3 (synchronous;
 * the Store interface is async for the PostgreSQL store to come).
 *
 * Durability: WAL with synchronous=FULL, so a committed write is on disk before the call
 * resolves. A lost access key only invalidates URLs, but the FUTURERELEASE spool index
 * that will live here must survive a crash.
 */
import { closeSync, fstatSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, schemaVersion } from './migrate.js';
import { SQLITE_MIGRATIONS } from './sqlite-schema.js';
import { ACCESS_KEY_BYTES, normalizeMailbox, StoreError, type Store } from './store.js';

/** How long a statement waits for another process's write lock before SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5000;

export class SqliteStore implements Store {
  readonly file: string;
  private readonly db: Database.Database;
  // Prepared once: better-sqlite3 statements are reusable and cheaper than re-parsing.
  private readonly stmt: ReturnType<typeof prepare>;

  private constructor(file: string, db: Database.Database) {
    this.file = file;
    this.db = db;
    this.stmt = prepare(db);
  }

  /** Opens (creating it, its directory and its schema as needed) the store in file. */
  static open(file: string): SqliteStore {
    let db: Database.Database | undefined;
    try {
      createPrivate(file);
      db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
      // journal_mode answers with the mode in force: a read-only or odd file may refuse WAL.
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
      db.pragma('synchronous = FULL');
      migrate(db, SQLITE_MIGRATIONS);
      return new SqliteStore(file, db);
    } catch (err) {
      db?.close();
      throw new StoreError(`cannot open the store ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The schema version in the file (migrations applied). */
  get schemaVersion(): number {
    return schemaVersion(this.db);
  }

  async mailboxAccessKey(user: string, mailbox: string): Promise<Buffer> {
    const box = normalizeMailbox(mailbox);
    const found = this.stmt.selectKey.get(user, box);
    if (found !== undefined) return found.key;
    // First use: INSERT OR IGNORE then SELECT in one write transaction, so whoever
    // inserted first (this process or another) is the key everyone reads, and a
    // RESETKEY cannot fall between the two.
    return this.stmt.createKey.immediate(user, box);
  }

  async resetAccessKeys(user: string, mailbox?: string): Promise<void> {
    // Deleted, not replaced: the old keys are gone at once (no token verifies against a
    // key that does not exist), and the next use makes a new random one.
    if (mailbox === undefined) this.stmt.deleteUserKeys.run(user);
    else this.stmt.deleteKey.run(user, normalizeMailbox(mailbox));
  }

  async getMeta(key: string): Promise<string | undefined> {
    return this.stmt.getMeta.get(key)?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.stmt.setMeta.run(key, value);
  }

  async initMeta(key: string, value: string): Promise<string> {
    return this.stmt.initMeta.immediate(key, value);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function prepare(db: Database.Database) {
  const insertKey = db.prepare<[string, string, Buffer, number]>(
    'INSERT OR IGNORE INTO mailbox_keys (user, mailbox, key, created_at) VALUES (?, ?, ?, ?)',
  );
  const selectKey = db.prepare<[string, string], { key: Buffer }>('SELECT key FROM mailbox_keys WHERE user = ? AND mailbox = ?');
  const insertMeta = db.prepare<[string, string]>('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)');
  const getMeta = db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?');
  return {
    selectKey,
    createKey: db.transaction((user: string, mailbox: string): Buffer => {
      insertKey.run(user, mailbox, randomBytes(ACCESS_KEY_BYTES), Date.now());
      return selectKey.get(user, mailbox)!.key;
    }),
    deleteKey: db.prepare<[string, string]>('DELETE FROM mailbox_keys WHERE user = ? AND mailbox = ?'),
    deleteUserKeys: db.prepare<[string]>('DELETE FROM mailbox_keys WHERE user = ?'),
    getMeta,
    setMeta: db.prepare<[string, string]>(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ),
    initMeta: db.transaction((key: string, value: string): string => {
      insertMeta.run(key, value);
      return getMeta.get(key)!.value;
    }),
  };
}

/**
 * Creates file mode 0600 in a directory created 0700, before SQLite opens it: SQLite
 * would create it 0644, and its -wal and -shm files copy the database file's mode. An
 * existing file that others can read is tightened. An existing directory is left as the
 * operator made it (dataDir holds other things too).
 */
function createPrivate(file: string): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const fd = openSync(file, 'a', 0o600);
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}
