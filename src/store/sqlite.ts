/**
 * The embedded store: one SQLite file under dataDir (better-sqlite3). WAL with
 * synchronous=FULL: a committed write survives a crash (keys now, a spool index later).
 * Schema changes are ordered migrations recorded in schema_version, so later issues add
 * tables without ad-hoc DDL.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { normalizeMailbox, type Store } from './store.js';

/** Applied in order, each once; never edit one that has shipped, add the next. */
const MIGRATIONS: readonly string[] = [
  // 1: mailbox access keys (RFC 4467 §5)
  `CREATE TABLE mailbox_keys (
     user TEXT NOT NULL,
     mailbox TEXT NOT NULL,
     key BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (user, mailbox)
   ) WITHOUT ROWID`,
];

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly insertKey: Database.Statement<[string, string, Buffer, number]>;
  private readonly selectKey: Database.Statement<[string, string], { key: Buffer }>;
  private readonly deleteKey: Database.Statement<[string, string]>;
  private readonly deleteUserKeys: Database.Statement<[string]>;

  constructor(file: string) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      this.db = new Database(file);
      chmodSync(file, 0o600);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      this.migrate();
    } catch (err) {
      throw new Error(`cannot open the store ${file}: ${(err as Error).message}`, { cause: err });
    }
    this.insertKey = this.db.prepare('INSERT OR IGNORE INTO mailbox_keys (user, mailbox, key, created_at) VALUES (?, ?, ?, ?)');
    this.selectKey = this.db.prepare('SELECT key FROM mailbox_keys WHERE user = ? AND mailbox = ?');
    this.deleteKey = this.db.prepare('DELETE FROM mailbox_keys WHERE user = ? AND mailbox = ?');
    this.deleteUserKeys = this.db.prepare('DELETE FROM mailbox_keys WHERE user = ?');
  }

  /** The schema version now (the number of migrations applied). */
  get schemaVersion(): number {
    return (this.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null }).v ?? 0;
  }

  async mailboxAccessKey(user: string, mailbox: string): Promise<Buffer> {
    const box = normalizeMailbox(mailbox);
    // INSERT OR IGNORE then SELECT: whoever inserted first, everyone reads that key.
    this.insertKey.run(user, box, randomBytes(16), Date.now());
    return this.selectKey.get(user, box)!.key;
  }

  async resetAccessKeys(user: string, mailbox?: string): Promise<void> {
    // Deleted, not replaced: the next use makes a new random key.
    if (mailbox === undefined) this.deleteUserKeys.run(user);
    else this.deleteKey.run(user, normalizeMailbox(mailbox));
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  private migrate(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const apply = this.db.transaction(() => {
      const current = (this.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null }).v ?? 0;
      for (let v = current + 1; v <= MIGRATIONS.length; v++) {
        this.db.exec(MIGRATIONS[v - 1]!);
        this.db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(v, Date.now());
      }
    });
    // IMMEDIATE: two processes opening one file at once do not both migrate.
    apply.immediate();
  }
}
