/**
 * Schema migrations for the SQLite store: an ordered list, each applied once, the version
 * reached recorded in schema_version. Later issues (QRESYNC mod-sequence state, the
 * FUTURERELEASE spool index) add a migration at the end instead of ad-hoc DDL.
 */
import type Database from 'better-sqlite3';

export interface Migration {
  /** 1, 2, 3, ... with no gaps: the order they run in. */
  readonly version: number;
  /** What it does, recorded with the version. */
  readonly name: string;
  /** Statements run in one transaction with the version record. */
  readonly sql: string;
}

/** The version of the schema in db: 0 before any migration. */
export function schemaVersion(db: Database.Database): number {
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null } | undefined;
  return row?.v ?? 0;
}

/**
 * Brings db up to the last migration and returns the versions applied now. All pending
 * migrations run in one IMMEDIATE transaction: either all are applied or none, and two
 * processes opening one file at once do not both apply them (the second waits for the
 * write lock, then finds nothing left to do).
 */
export function migrate(db: Database.Database, migrations: readonly Migration[]): number[] {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${m.name}: version ${m.version}, expected ${i + 1}`);
  });
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
  );
  const record = db.prepare('INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)');
  const run = db.transaction((): number[] => {
    const current = schemaVersion(db);
    // A downgrade would run old code on a schema it does not know: refuse it.
    if (current > migrations.length) {
      throw new Error(`schema version ${current} is newer than this program knows (${migrations.length})`);
    }
    const pending = migrations.slice(current);
    for (const m of pending) {
      db.exec(m.sql);
      record.run(m.version, m.name, Date.now());
    }
    return pending.map((m) => m.version);
  });
  return run.immediate();
}
