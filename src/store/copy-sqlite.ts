/**
 * `lemonade-gateway store copy-sqlite --config FILE`: moving a gateway from its embedded
 * SQLite store to PostgreSQL (issue 18, Migration). Copies everything a client could have
 * been given: access keys and server meta values (so every outstanding URLAUTH URL still
 * verifies), mod-sequence state (so a client's QRESYNC still resyncs), and the held
 * messages with their content, read from this dataDir's spool files in chunks into
 * held_content (as the gateway writes it with this store), so any instance on the
 * database releases them. The spool files are left in place (the SQLite store is not
 * changed: an operator can go back to it).
 *
 * Run it with the gateway stopped, after setting store.kind: postgres (store.path still
 * names the SQLite file). One PostgreSQL transaction: all or nothing; a database that
 * already holds state is refused rather than merged into.
 */
import { createReadStream, existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import type pg from 'pg';
import type { Config } from '../config/schema.js';
import { SpoolFiles } from '../lemonade/futurerelease/spool.js';
import { CHUNK } from '../lemonade/futurerelease/db-content.js';
import { sqlitePath } from './index.js';
import { NOW_MS, PostgresStore, readPasswordFile } from './postgres.js';
import { SqliteStore } from './sqlite.js';

export const COPY_USAGE = 'lemonade-gateway store copy-sqlite --config FILE';

/** Rows copied per statement: bounded memory however large the mailboxes' state. */
const BATCH = 5000;

export interface CopyCounts {
  meta: number;
  keys: number;
  held: number;
  /** Octets of held content copied. */
  heldBytes: number;
  mailboxes: number;
  messages: number;
  vanished: number;
}

/** Copies the SQLite file, and the held content in spool's files, into the (empty) PostgreSQL store; returns what was copied. */
export async function copySqliteToPostgres(sqliteFile: string, target: PostgresStore, spool: SpoolFiles): Promise<CopyCounts> {
  // Opening would create an empty file: a wrong store.path must say so, not copy nothing.
  if (!existsSync(sqliteFile)) throw new Error(`no SQLite store at ${sqliteFile} (store.path, under dataDir)`);
  // Opening through SqliteStore first brings an older file to the current schema.
  await SqliteStore.open(sqliteFile).close();
  const db = new Database(sqliteFile, { readonly: true, fileMustExist: true });
  try {
    // One read transaction: a consistent snapshot even if something else wrote meanwhile.
    db.exec('BEGIN');
    return await target.adminTransaction((c) => copyRows(db, c, spool));
  } finally {
    db.close();
  }
}

async function copyRows(db: Database.Database, c: pg.PoolClient, spool: SpoolFiles): Promise<CopyCounts> {
  const occupied = await c.query<{ n: string }>(
    `SELECT (SELECT COUNT(*) FROM meta) + (SELECT COUNT(*) FROM mailbox_keys) + (SELECT COUNT(*) FROM held_messages)
       + (SELECT COUNT(*) FROM modseq_mailboxes) AS n`,
  );
  if (Number(occupied.rows[0]!.n) > 0) throw new Error('the PostgreSQL store already holds state; copy only into a new, empty database');
  const counts: CopyCounts = { meta: 0, keys: 0, held: 0, heldBytes: 0, mailboxes: 0, messages: 0, vanished: 0 };

  for (const row of db.prepare('SELECT key, value FROM meta').iterate() as Iterable<{ key: string; value: string }>) {
    await c.query('INSERT INTO meta (key, value) VALUES ($1, $2)', [row.key, row.value]);
    counts.meta++;
  }
  for (const row of db.prepare('SELECT user, mailbox, key, created_at FROM mailbox_keys').iterate() as Iterable<{
    user: string;
    mailbox: string;
    key: Buffer;
    created_at: number;
  }>) {
    await c.query('INSERT INTO mailbox_keys (user_name, mailbox, key, created_at) VALUES ($1, $2, $3, $4)', [row.user, row.mailbox, row.key, row.created_at]);
    counts.keys++;
  }
  for (const row of db.prepare('SELECT * FROM held_messages').iterate() as Iterable<Record<string, unknown>>) {
    // The content first (as the gateway writes it), then the row; no origin: any instance releases it.
    const id = String(row.id);
    const size = await copyContent(c, spool, id);
    if (size !== Number(row.size)) throw new Error(`held message ${id}: its spool file has ${size} octets, its row says ${String(row.size)}`);
    await c.query(
      `INSERT INTO held_messages (id, user_name, sender, mail_params, recipients, size, created_at, release_at, hold_request,
         next_attempt_at, attempts, state, last_error)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        row.id, row.user, row.sender, row.mail_params, row.recipients, row.size, row.created_at, row.release_at,
        row.hold_request, row.next_attempt_at, row.attempts, row.state, row.last_error,
      ],
    );
    counts.held++;
    counts.heldBytes += size;
  }

  const boxes = db.prepare('SELECT id, user, mailbox, uid_validity, highest_modseq, vanished_floor, created_at FROM modseq_mailboxes').all() as Array<{
    id: number;
    user: string;
    mailbox: string;
    uid_validity: number;
    highest_modseq: number;
    vanished_floor: number;
    created_at: number;
  }>;
  const messages = db.prepare<[number, number, number], { uid: number; flags: string; modseq: number }>(
    'SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = ? AND uid > ? ORDER BY uid LIMIT ?',
  );
  const vanished = db.prepare<[number, number, number], { uid: number; modseq: number }>(
    'SELECT uid, modseq FROM modseq_vanished WHERE mailbox_id = ? AND uid > ? ORDER BY uid LIMIT ?',
  );
  for (const box of boxes) {
    // A new id (the identity's own); ids are not kept by clients, only within a session.
    const r = await c.query<{ id: string }>(
      `INSERT INTO modseq_mailboxes (user_name, mailbox, uid_validity, highest_modseq, vanished_floor, created_at)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
      [box.user, box.mailbox, box.uid_validity, box.highest_modseq, box.vanished_floor, box.created_at],
    );
    const id = r.rows[0]!.id;
    counts.mailboxes++;
    for (let after = 0; ; ) {
      const page = messages.all(box.id, after, BATCH);
      if (page.length === 0) break;
      await c.query(
        `INSERT INTO modseq_messages (mailbox_id, uid, flags, modseq)
         SELECT $1, u, f, m FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS t(u, f, m)`,
        [id, page.map((m) => m.uid), page.map((m) => m.flags), page.map((m) => m.modseq)],
      );
      counts.messages += page.length;
      after = page.at(-1)!.uid;
    }
    for (let after = 0; ; ) {
      const page = vanished.all(box.id, after, BATCH);
      if (page.length === 0) break;
      await c.query(
        `INSERT INTO modseq_vanished (mailbox_id, uid, modseq) SELECT $1, u, m FROM unnest($2::bigint[], $3::bigint[]) AS t(u, m)`,
        [id, page.map((v) => v.uid), page.map((v) => v.modseq)],
      );
      counts.vanished += page.length;
      after = page.at(-1)!.uid;
    }
  }
  return counts;
}

/** One spool file into held_content, a chunk per statement (never whole in memory); its size. */
async function copyContent(c: pg.PoolClient, spool: SpoolFiles, id: string): Promise<number> {
  let seq = 0;
  let size = 0;
  try {
    for await (const chunk of createReadStream(spool.path(id), { highWaterMark: CHUNK })) {
      const data = chunk as Buffer;
      await c.query(`INSERT INTO held_content (id, seq, data, written_at) VALUES ($1, $2, $3, ${NOW_MS})`, [
        id,
        ++seq,
        data,
      ]);
      size += data.length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`held message ${id}: no spool file ${spool.path(id)} (copy from the gateway's own dataDir)`, { cause: err });
    throw err;
  }
  return size;
}

/** The command: store copy-sqlite with a loaded config; returns the exit status (sysexits.h). */
export async function runStoreCommand(config: Config, args: string[], out: (text: string) => void, err: (text: string) => void): Promise<number> {
  if (args.length !== 1 || args[0] !== 'copy-sqlite') {
    err(`usage: ${COPY_USAGE}`);
    return 64;
  }
  const { kind, url, passwordFile, poolSize } = config.store;
  if (kind !== 'postgres' || url === undefined) {
    err('store copy-sqlite copies into the PostgreSQL store: set store.kind: postgres and store.url first (store.path names the SQLite file to copy)');
    return 78;
  }
  const from = sqlitePath(config);
  const password = passwordFile === undefined ? undefined : readPasswordFile(passwordFile);
  const target = await PostgresStore.open({ url, poolSize, ...(password !== undefined ? { password } : {}) });
  try {
    const n = await copySqliteToPostgres(from, target, new SpoolFiles(config.dataDir));
    out(
      `copied ${from} to ${target.where}: ${n.keys} access keys, ${n.meta} meta values, ${n.mailboxes} mailboxes' mod-sequence state ` +
        `(${n.messages} messages, ${n.vanished} vanished UIDs), ${n.held} held messages with their content (${n.heldBytes} octets)`,
    );
    return 0;
  } catch (e) {
    err(`store copy-sqlite: ${(e as Error).message}`);
    return 1;
  } finally {
    await target.close();
  }
}
