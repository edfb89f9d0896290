/**
 * The embedded store: one SQLite file under dataDir, through better-sqlite3 (synchronous;
 * the Store interface is async for the PostgreSQL store to come).
 *
 * Durability: WAL with synchronous=FULL, so a committed write is on disk before the call
 * resolves. A lost access key only invalidates URLs, but the FUTURERELEASE spool index
 * (held_messages) must survive a crash: a held message got its 250 once its row was here.
 */
import { closeSync, fstatSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, schemaVersion } from './migrate.js';
import { SQLITE_MIGRATIONS } from './sqlite-schema.js';
import { ACCESS_KEY_BYTES, normalizeMailbox, StoreError, type HeldMessage, type HeldRecipient, type Store } from './store.js';

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

  // ---- spool index (FUTURERELEASE) ----

  async spoolInsert(...messages: HeldMessage[]): Promise<void> {
    // One transaction, so one WAL fsync however many messages (group commit).
    this.stmt.spoolInsertAll.immediate(messages);
  }

  async spoolGet(id: string): Promise<HeldMessage | undefined> {
    const row = this.stmt.spoolGet.get(id);
    return row && heldMessage(row);
  }

  async spoolDue(now: number, limit: number): Promise<HeldMessage[]> {
    return this.stmt.spoolDue.all(now, limit).map(heldMessage);
  }

  async spoolList(limit: number, offset: number): Promise<HeldMessage[]> {
    return this.stmt.spoolList.all(limit, offset).map(heldMessage);
  }

  async spoolClaim(id: string): Promise<boolean> {
    return this.stmt.spoolClaim.run(id).changes === 1;
  }

  async spoolCommitting(id: string): Promise<void> {
    this.stmt.spoolCommitting.run(id);
  }

  async spoolReschedule(id: string, recipients: HeldRecipient[], nextAttemptAt: number, lastError: string): Promise<void> {
    this.stmt.spoolReschedule.run(JSON.stringify(recipients), nextAttemptAt, lastError, id);
  }

  async spoolDelete(id: string): Promise<boolean> {
    return this.stmt.spoolDelete.run(id).changes === 1;
  }

  async spoolCancel(id: string, user?: string): Promise<HeldMessage | undefined> {
    return this.stmt.spoolCancel.immediate(id, user);
  }

  async spoolReleaseNow(id: string, now: number): Promise<boolean> {
    return this.stmt.spoolReleaseNow.run(now, id).changes === 1;
  }

  async spoolRecover(): Promise<HeldMessage[]> {
    return this.stmt.spoolRecover.immediate();
  }

  async spoolNextDue(): Promise<number | undefined> {
    return this.stmt.spoolNextDue.get()?.due ?? undefined;
  }

  async spoolStats(): Promise<{ count: number; bytes: number; nextDue: number | undefined; oldestRelease: number | undefined }> {
    const row = this.stmt.spoolStats.get()!;
    return { count: row.count, bytes: row.bytes ?? 0, nextDue: row.nextDue ?? undefined, oldestRelease: row.oldestRelease ?? undefined };
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

interface HeldRow {
  id: string;
  user: string;
  sender: string;
  mail_params: string;
  recipients: string;
  size: number;
  created_at: number;
  release_at: number;
  hold_request: string;
  next_attempt_at: number;
  attempts: number;
  state: HeldMessage['state'];
  last_error: string | null;
}

function heldMessage(row: HeldRow): HeldMessage {
  return {
    id: row.id,
    user: row.user,
    sender: row.sender,
    mailParams: JSON.parse(row.mail_params) as HeldMessage['mailParams'],
    recipients: JSON.parse(row.recipients) as HeldRecipient[],
    size: row.size,
    createdAt: row.created_at,
    releaseAt: row.release_at,
    holdRequest: row.hold_request,
    nextAttemptAt: row.next_attempt_at,
    attempts: row.attempts,
    state: row.state,
    ...(row.last_error !== null ? { lastError: row.last_error } : {}),
  };
}

function prepare(db: Database.Database) {
  const insertKey = db.prepare<[string, string, Buffer, number]>(
    'INSERT OR IGNORE INTO mailbox_keys (user, mailbox, key, created_at) VALUES (?, ?, ?, ?)',
  );
  const selectKey = db.prepare<[string, string], { key: Buffer }>('SELECT key FROM mailbox_keys WHERE user = ? AND mailbox = ?');
  const insertMeta = db.prepare<[string, string]>('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)');
  const getMeta = db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?');
  const spoolGet = db.prepare<[string], HeldRow>('SELECT * FROM held_messages WHERE id = ?');
  const spoolDeleteHeld = db.prepare<[string]>("DELETE FROM held_messages WHERE id = ? AND state = 'held'");
  const spoolRecoverable = db.prepare<[], HeldRow>("SELECT * FROM held_messages WHERE state = 'committing'");
  const spoolUnclaim = db.prepare("UPDATE held_messages SET state = 'held' WHERE state = 'sending'");
  const spoolInsert = db.prepare<[string, string, string, string, string, number, number, number, string, number, number, string, string | null]>(
    `INSERT INTO held_messages (id, user, sender, mail_params, recipients, size, created_at, release_at, hold_request, next_attempt_at, attempts, state, last_error)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  return {
    spoolInsertAll: db.transaction((messages: HeldMessage[]) => {
      for (const m of messages) {
        spoolInsert.run(
          m.id, m.user, m.sender, JSON.stringify(m.mailParams), JSON.stringify(m.recipients), m.size,
          m.createdAt, m.releaseAt, m.holdRequest, m.nextAttemptAt, m.attempts, m.state, m.lastError ?? null,
        );
      }
    }),
    spoolGet,
    spoolDue: db.prepare<[number, number], HeldRow>(
      "SELECT * FROM held_messages WHERE state = 'held' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
    ),
    spoolList: db.prepare<[number, number], HeldRow>('SELECT * FROM held_messages ORDER BY next_attempt_at, id LIMIT ? OFFSET ?'),
    spoolClaim: db.prepare<[string]>("UPDATE held_messages SET state = 'sending', attempts = attempts + 1 WHERE id = ? AND state = 'held'"),
    spoolCommitting: db.prepare<[string]>("UPDATE held_messages SET state = 'committing' WHERE id = ? AND state = 'sending'"),
    spoolReschedule: db.prepare<[string, number, string, string]>(
      "UPDATE held_messages SET state = 'held', recipients = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
    ),
    spoolDelete: db.prepare<[string]>('DELETE FROM held_messages WHERE id = ?'),
    spoolCancel: db.transaction((id: string, user: string | undefined): HeldMessage | undefined => {
      const row = spoolGet.get(id);
      if (row === undefined || row.state !== 'held' || (user !== undefined && row.user !== user)) return undefined;
      spoolDeleteHeld.run(id);
      return heldMessage(row);
    }),
    spoolReleaseNow: db.prepare<[number, string]>("UPDATE held_messages SET next_attempt_at = ? WHERE id = ? AND state = 'held'"),
    spoolRecover: db.transaction((): HeldMessage[] => {
      spoolUnclaim.run();
      return spoolRecoverable.all().map(heldMessage);
    }),
    spoolNextDue: db.prepare<[], { due: number | null }>("SELECT MIN(next_attempt_at) AS due FROM held_messages WHERE state = 'held'"),
    spoolStats: db.prepare<[], { count: number; bytes: number | null; nextDue: number | null; oldestRelease: number | null }>(
      'SELECT COUNT(*) AS count, SUM(size) AS bytes, MIN(next_attempt_at) AS nextDue, MIN(release_at) AS oldestRelease FROM held_messages',
    ),
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
