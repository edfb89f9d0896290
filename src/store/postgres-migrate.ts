/**
 * Schema migrations for the PostgreSQL store: the same ordered list mechanism as the
 * SQLite one (migrate.ts), made safe for several gateway instances starting at once
 * against one database.
 */
import type pg from 'pg';
import type { Migration } from './migrate.js';

/**
 * The advisory lock key under which migrations run (bigint key space; the store's other
 * advisory locks use the two-int4 space, which never collides with it). Any constant works
 * as long as every instance (and every version) uses the same one.
 */
export const MIGRATION_LOCK_KEY = '7810724623631397';

/** The version of the schema: 0 before any migration (or before the version table exists). */
export async function postgresSchemaVersion(db: pg.Pool | pg.PoolClient): Promise<number> {
  const exists = await db.query<{ t: string | null }>("SELECT to_regclass('schema_version')::text AS t");
  if (exists.rows[0]?.t == null) return 0;
  const row = await db.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_version');
  return row.rows[0]?.v ?? 0;
}

/**
 * Brings the database up to the last migration and returns the versions applied now.
 * Everything runs in one transaction that first takes a transaction-level advisory lock:
 * instances starting together queue on the lock, the first applies the migrations, the
 * others then find nothing left to do. A failing migration rolls back all of them, and
 * the lock goes with the transaction (no session lock to leak on a dropped connection).
 */
export async function migratePostgres(pool: pg.Pool, migrations: readonly Migration[]): Promise<number[]> {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${m.name}: version ${m.version}, expected ${i + 1}`);
  });
  const client = await pool.connect();
  let failed: unknown;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)',
    );
    const current = await postgresSchemaVersion(client);
    // A downgrade would run old code on a schema it does not know: refuse it.
    if (current > migrations.length) {
      throw new Error(`schema version ${current} is newer than this program knows (${migrations.length})`);
    }
    const pending = migrations.slice(current);
    for (const m of pending) {
      await client.query(m.sql);
      await client.query('INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
    }
    await client.query('COMMIT');
    return pending.map((m) => m.version);
  } catch (err) {
    failed = err;
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    // A connection whose ROLLBACK may not have happened is not given back to the pool.
    client.release(failed instanceof Error && !('code' in failed) ? failed : undefined);
  }
}
