/**
 * The clustered store: one PostgreSQL database shared by every gateway process on every
 * host, through node-postgres's pool. Same contract as the SQLite store (store.ts); where
 * SQLite relies on one write lock per file, this relies on row locks, advisory locks and
 * single statements, so that instances never hand out a mod-sequence twice, end with one
 * access key, and claim each held message once.
 *
 * Durability: a statement resolves after its COMMIT, which PostgreSQL flushes to its WAL
 * (synchronous_commit on, the server's default; the operator's replication settings decide
 * whether it is also on a standby).
 *
 * FUTURERELEASE: the index and the content (held_content, in chunks: SpoolContent) live
 * here, so any instance releases any message. A release is claimed with a lease in the
 * database's clock, renewed while the release runs (spoolRenew); a claim whose lease ran
 * out (its instance died) is taken over by any other (spoolExpired). Rows written by an
 * earlier build name the gateway whose spool directory holds their content (origin):
 * only that gateway releases those (PostgresStoreOptions.node).
 */
import { readFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { isStoreUnavailable } from './availability.js';
import { migratePostgres, postgresSchemaVersion } from './postgres-migrate.js';
import { POSTGRES_MIGRATIONS } from './postgres-schema.js';
import {
  ACCESS_KEY_BYTES,
  ModseqStateGone,
  normalizeMailbox,
  StoreError,
  type HeldMessage,
  type HeldRecipient,
  type MailboxModseqState,
  type MessageModseq,
  ReleaseClaimLost,
  type SpoolContent,
  type Store,
  type StoreLock,
} from './store.js';
import { flagsFromKey, flagsKey } from '../lemonade/qresync/flags.js';

export interface PostgresStoreOptions {
  /** libpq-style URI, postgres://user[:password]@host:port/database. */
  url: string;
  /** The password, when not in the URL (from store.passwordFile: see readPasswordFile). */
  password?: string;
  /** Connections in the pool. */
  poolSize: number;
  /**
   * The longest a connect, or one statement, may take (ms; store.timeoutMs): past it the
   * call fails as unavailable (availability.ts), so a database that is gone without a word
   * (packets dropped) is answered too. Default DEFAULT_TIMEOUT_MS.
   */
  timeoutMs?: number;
  /**
   * How long a release claim holds before another instance may take the message over
   * (ms, config store.releaseLeaseSeconds). The releasing scheduler renews it (spoolRenew)
   * every third of it, so it must outlast a pause of the releasing process, not a release.
   */
  leaseMs?: number;
  /**
   * The gateway this store serves, as its dataDir's node id (node-id.ts). Rows an earlier
   * build marked with a node (origin) have their content in that node's spool directory:
   * a store releases (claims, recovers, waits for) those only when they are its own node's.
   * Rows without one (all rows written now) are anyone's. Undefined: every message.
   */
  node?: string;
}

/** store.timeoutMs's default: well inside what IMAP and SMTP clients wait for an answer. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** The default lease of a release claim (config store.releaseLeaseSeconds); the claimant renews it every third of it. */
export const DEFAULT_LEASE_MS = 60 * 1000;


/** The database's clock in ms: leases compare against one clock, whichever host writes them. */
export const NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

/** SQL: the row is the given node's to release ($n is the node, NULL for any). */
const RELEASABLE = (n: number, origin = 'origin'): string => `($${n}::text IS NULL OR ${origin} IS NULL OR ${origin} = $${n}::text)`;

/** Advisory-lock class (first int4 key) under which modseqOpen serializes per (user, mailbox). */
const MODSEQ_OPEN_LOCK_CLASS = 0x4c4d5351;

/** The first line of the file, without its line end: what store.passwordFile holds. */
export function readPasswordFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new StoreError(`cannot read store.passwordFile ${file}: ${(err as Error).message}`, { cause: err });
  }
  const password = text.split(/\r?\n/, 1)[0] ?? '';
  if (password === '') throw new StoreError(`store.passwordFile ${file} is empty`);
  return password;
}

/**
 * The URL with the password from store.passwordFile in it. node-postgres lets the fields
 * of a connection string override its `password` option (an absent one as ""), so the
 * password must travel inside the string; it stays in memory, in the pool's options.
 */
function withPassword(url: string, password: string | undefined): string {
  if (password === undefined) return url;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new StoreError('store.url is not a valid URI');
  }
  u.password = encodeURIComponent(password);
  return u.toString();
}

/** The URL with any password replaced: what may appear in errors and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    // Not parseable as a URL: say nothing of it rather than risk echoing a password.
    return '(unparseable store.url)';
  }
}

type Queryable = pg.Pool | pg.PoolClient;

export class PostgresStore implements Store, SpoolContent {
  /** This instance's name in release claims (claimed_by). */
  readonly instanceId = randomUUID();
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    readonly where: string,
    private readonly leaseMs: number,
    /** PostgresStoreOptions.node, NULL in SQL for "every message". */
    private readonly node: string | null,
  ) {}

  /** Connects, applies pending migrations (serialized across instances), and returns the store. */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const where = redactUrl(opts.url);
    const connection = {
      connectionString: withPassword(opts.url, opts.password),
      application_name: 'lemonade-gateway',
      // A connection whose peer vanished (host down, network cut) is found out by TCP
      // keepalive rather than only at its next query.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    };
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // Migrations run unbounded, on a pool of their own: the first instance's may take a
    // while (a large table rewritten), and the others wait for it on an advisory lock.
    const migrations = new pg.Pool({ ...connection, max: 1, connectionTimeoutMillis: timeoutMs });
    migrations.on('error', () => undefined);
    try {
      await migratePostgres(migrations, POSTGRES_MIGRATIONS);
    } catch (err) {
      throw new StoreError(`cannot open the store ${where}: ${(err as Error).message}`, { cause: err });
    } finally {
      await migrations.end().catch(() => undefined);
    }
    const pool = new pg.Pool({
      ...connection,
      max: opts.poolSize,
      // Every store call is bounded (availability.ts maps what exceeds it to unavailable):
      // getting a connection (connecting included), and each statement, on the client's
      // side (query_timeout: a silent server) and the server's (statement_timeout: a
      // statement whose client gave up stops holding its locks).
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
    });
    // An idle pooled connection that breaks (the server restarted) emits 'error' on the
    // pool; unhandled, that would end the process. The pool drops it and the next query
    // opens a new one, which reports the outage to its caller if it lasts.
    pool.on('error', () => undefined);
    return new PostgresStore(pool, where, opts.leaseMs ?? DEFAULT_LEASE_MS, opts.node ?? null);
  }

  /** The schema version in the database (migrations applied). */
  async schemaVersion(): Promise<number> {
    return postgresSchemaVersion(this.pool);
  }

  /** Runs fn in one transaction on one pooled connection; rolls back when it throws. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    // A checked-out client has no pool listener: the server ending its connection between
    // two statements (57P01 on shutdown) would otherwise be an unhandled 'error' event and
    // end the process. The statement under way, or the next, fails with it instead.
    const ignore = (): void => undefined;
    client.on('error', ignore);
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      if (isStoreUnavailable(err)) {
        // The connection is gone or silent: a ROLLBACK would wait as long again. Closing
        // it rolls the transaction back on the server.
        broken = err as Error;
      } else {
        await client.query('ROLLBACK').catch((e: unknown) => {
          // A connection that cannot even roll back is closed, not pooled.
          broken = e instanceof Error ? e : new Error(String(e));
        });
      }
      throw err;
    } finally {
      client.off('error', ignore);
      client.release(broken);
    }
  }

  /** fn in one transaction on a connection of its own: for administrative tools (copy-sqlite.ts), not the gateway's paths. */
  adminTransaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.tx(fn);
  }

  // ---- mailbox access keys (URLAUTH) and meta values ----

  async mailboxAccessKey(user: string, mailbox: string): Promise<Buffer> {
    const box = normalizeMailbox(mailbox);
    const found = await this.existingMailboxAccessKey(user, box);
    if (found !== undefined) return found;
    // One statement: the no-op update makes RETURNING yield the stored row when another
    // instance inserted first, so everyone ends with the first key, and a RESETKEY cannot
    // fall between an insert and a read.
    const r = await this.pool.query<{ key: Buffer }>(
      `INSERT INTO mailbox_keys (user_name, mailbox, key, created_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (user_name, mailbox) DO UPDATE SET key = mailbox_keys.key RETURNING key`,
      [user, box, randomBytes(ACCESS_KEY_BYTES), Date.now()],
    );
    return r.rows[0]!.key;
  }

  async existingMailboxAccessKey(user: string, mailbox: string): Promise<Buffer | undefined> {
    const r = await this.pool.query<{ key: Buffer }>('SELECT key FROM mailbox_keys WHERE user_name = $1 AND mailbox = $2', [
      user,
      normalizeMailbox(mailbox),
    ]);
    return r.rows[0]?.key;
  }

  async resetAccessKeys(user: string, mailbox?: string): Promise<void> {
    // Deleted, not replaced (as in SQLite): every instance reads the key per check, so the
    // old one stops verifying everywhere once this commits.
    if (mailbox === undefined) await this.pool.query('DELETE FROM mailbox_keys WHERE user_name = $1', [user]);
    else await this.pool.query('DELETE FROM mailbox_keys WHERE user_name = $1 AND mailbox = $2', [user, normalizeMailbox(mailbox)]);
  }

  async getMeta(key: string): Promise<string | undefined> {
    const r = await this.pool.query<{ value: string }>('SELECT value FROM meta WHERE key = $1', [key]);
    return r.rows[0]?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.pool.query('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [
      key,
      value,
    ]);
  }

  async initMeta(key: string, value: string): Promise<string> {
    const r = await this.pool.query<{ value: string }>(
      'INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = meta.value RETURNING value',
      [key, value],
    );
    return r.rows[0]!.value;
  }

  // ---- spool index (FUTURERELEASE) ----

  async spoolInsert(...messages: HeldMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await this.insertHeld(this.pool, messages);
  }

  /** One statement over arrays: one round trip and one commit however many messages. Their content is in held_content: no origin. */
  private async insertHeld(db: Queryable, messages: HeldMessage[]): Promise<void> {
    const col = <T>(f: (m: HeldMessage) => T): T[] => messages.map(f);
    await db.query(
      `INSERT INTO held_messages (id, user_name, sender, mail_params, recipients, size, created_at, release_at,
         hold_request, next_attempt_at, attempts, state, last_error, origin)
       SELECT *, NULL::text FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
         $8::bigint[], $9::text[], $10::bigint[], $11::integer[], $12::text[], $13::text[])`,
      [
        col((m) => m.id),
        col((m) => m.user),
        col((m) => m.sender),
        col((m) => JSON.stringify(m.mailParams)),
        col((m) => JSON.stringify(m.recipients)),
        col((m) => m.size),
        col((m) => m.createdAt),
        col((m) => m.releaseAt),
        col((m) => m.holdRequest),
        col((m) => m.nextAttemptAt),
        col((m) => m.attempts),
        col((m) => m.state),
        col((m) => m.lastError ?? null),
      ],
    );
  }

  async spoolGet(id: string): Promise<HeldMessage | undefined> {
    const r = await this.pool.query<HeldRow>('SELECT * FROM held_messages WHERE id = $1', [id]);
    return r.rows[0] && heldMessage(r.rows[0]);
  }

  async spoolDue(now: number, limit: number): Promise<HeldMessage[]> {
    // Releases whose claimant's lease ran out come back through spoolExpired first.
    const r = await this.pool.query<HeldRow>(
      `SELECT * FROM held_messages WHERE state = 'held' AND next_attempt_at <= $1 AND ${RELEASABLE(3)} ORDER BY next_attempt_at LIMIT $2`,
      [now, limit, this.node],
    );
    return r.rows.map(heldMessage);
  }

  async spoolList(limit: number, offset: number): Promise<HeldMessage[]> {
    const r = await this.pool.query<HeldRow>('SELECT * FROM held_messages ORDER BY next_attempt_at, id LIMIT $1 OFFSET $2', [limit, offset]);
    return r.rows.map(heldMessage);
  }

  async spoolClaim(id: string): Promise<boolean> {
    // Under READ COMMITTED a second UPDATE of the row waits for the first to commit, then
    // re-checks state = 'held' against the new row and matches nothing: one claim wins.
    const r = await this.pool.query(
      `UPDATE held_messages SET state = 'sending', attempts = attempts + 1, claimed_by = $2, claimed_until = ${NOW_MS} + $3
       WHERE id = $1 AND state = 'held' AND ${RELEASABLE(4)}`,
      [id, this.instanceId, this.leaseMs, this.node],
    );
    return r.rowCount === 1;
  }

  async spoolCommitting(id: string): Promise<void> {
    // Only our own claim: one that expired and was taken over is the other instance's now,
    // and the end of the content must not go out from here as well.
    const r = await this.pool.query(
      `UPDATE held_messages SET state = 'committing', claimed_until = ${NOW_MS} + $3
       WHERE id = $1 AND state = 'sending' AND claimed_by = $2`,
      [id, this.instanceId, this.leaseMs],
    );
    if (r.rowCount !== 1) throw new ReleaseClaimLost(id);
  }

  async spoolRenew(id: string): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE held_messages SET claimed_until = ${NOW_MS} + $3
       WHERE id = $1 AND state IN ('sending', 'committing') AND claimed_by = $2`,
      [id, this.instanceId, this.leaseMs],
    );
    return r.rowCount === 1;
  }

  async spoolExpired(): Promise<HeldMessage[]> {
    // As spoolRecover, for the rows whose lease ran out only. Under READ COMMITTED a
    // second instance's UPDATE of the same row waits for the first, re-checks the state
    // and finds it held: each row comes back to one caller.
    const r = await this.pool.query<HeldRow & { was: HeldMessage['state'] }>(
      `UPDATE held_messages h SET state = 'held', claimed_by = NULL, claimed_until = NULL
       FROM held_messages old
       WHERE old.id = h.id AND h.state IN ('sending', 'committing') AND h.claimed_until < ${NOW_MS} AND ${RELEASABLE(1, 'h.origin')}
       RETURNING h.*, old.state AS was`,
      [this.node],
    );
    return r.rows.filter((row) => row.was === 'committing').map((row) => heldMessage({ ...row, state: 'committing' }));
  }

  async spoolReschedule(id: string, recipients: HeldRecipient[], nextAttemptAt: number, lastError: string): Promise<void> {
    await this.pool.query(
      `UPDATE held_messages SET state = 'held', recipients = $1, next_attempt_at = $2, last_error = $3, claimed_by = NULL, claimed_until = NULL
       WHERE id = $4 AND (claimed_by IS NULL OR claimed_by = $5)`,
      [JSON.stringify(recipients), nextAttemptAt, lastError, id, this.instanceId],
    );
  }

  /** The row and its content (held_content) go together: no orphan chunks from a crash after it. */
  async spoolDelete(id: string, dsn?: HeldMessage): Promise<boolean> {
    const deleteBoth = `WITH gone AS (DELETE FROM held_messages WHERE id = $1 RETURNING id),
      content AS (DELETE FROM held_content WHERE id IN (SELECT id FROM gone))
      SELECT COUNT(*)::int AS n FROM gone`;
    if (dsn === undefined) {
      const r = await this.pool.query<{ n: number }>(deleteBoth, [id]);
      return r.rows[0]!.n === 1;
    }
    // One transaction: after a crash there is the message or its DSN, never both.
    return this.tx(async (c) => {
      const r = await c.query<{ n: number }>(deleteBoth, [id]);
      await this.insertHeld(c, [dsn]);
      return r.rows[0]!.n === 1;
    });
  }

  async spoolCancel(id: string, user?: string): Promise<HeldMessage | undefined> {
    // One statement: a release cannot claim it between the check and the delete; its content goes with it.
    const r = await this.pool.query<HeldRow>(
      `WITH gone AS (DELETE FROM held_messages WHERE id = $1 AND state = 'held' AND ($2::text IS NULL OR user_name = $2) RETURNING *),
         content AS (DELETE FROM held_content WHERE id IN (SELECT id FROM gone))
       SELECT * FROM gone`,
      [id, user ?? null],
    );
    return r.rows[0] && heldMessage(r.rows[0]);
  }

  async spoolReleaseNow(id: string, now: number): Promise<boolean> {
    const r = await this.pool.query("UPDATE held_messages SET next_attempt_at = $1 WHERE id = $2 AND state = 'held'", [now, id]);
    return r.rowCount === 1;
  }

  /**
   * At start: this instance's unfinished releases and those whose claimant's lease ran out
   * go back to held, sending and committing alike, in one statement; the committing ones
   * are returned as they were (their MTA may have accepted them). A live instance's
   * claims are left alone: unlike SQLite's (one host, one process at a time), this store
   * is shared, and two instances recovering at once each get a row at most once between them.
   */
  async spoolRecover(): Promise<HeldMessage[]> {
    // The old row's state comes from a self-join on the row as the UPDATE found it.
    const r = await this.pool.query<HeldRow & { was: HeldMessage['state'] }>(
      `UPDATE held_messages h SET state = 'held', claimed_by = NULL, claimed_until = NULL
       FROM held_messages old
       WHERE old.id = h.id AND h.state IN ('sending', 'committing')
         AND (h.claimed_by = $1 OR h.claimed_by IS NULL OR h.claimed_until < ${NOW_MS}) AND ${RELEASABLE(2, 'h.origin')}
       RETURNING h.*, old.state AS was`,
      [this.instanceId, this.node],
    );
    return r.rows.filter((row) => row.was === 'committing').map((row) => heldMessage({ ...row, state: 'committing' }));
  }

  async spoolNextDue(): Promise<number | undefined> {
    const r = await this.pool.query<{ due: string | null }>(
      `SELECT MIN(next_attempt_at) AS due FROM held_messages WHERE state = 'held' AND ${RELEASABLE(1)}`,
      [this.node],
    );
    return optionalNumber(r.rows[0]?.due);
  }

  spoolContent(): SpoolContent {
    return this;
  }

  // ---- held content (FUTURERELEASE), chunks in held_content ----

  async contentAppend(id: string, seq: number, data: Buffer): Promise<void> {
    await this.pool.query(`INSERT INTO held_content (id, seq, data, written_at) VALUES ($1, $2, $3, ${NOW_MS})`, [id, seq, data]);
  }

  async contentRead(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; data: Buffer }>> {
    const r = await this.pool.query<{ seq: number; data: Buffer }>(
      'SELECT seq, data FROM held_content WHERE id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
      [id, afterSeq, limit],
    );
    return r.rows;
  }

  async contentRemove(id: string): Promise<void> {
    await this.pool.query('DELETE FROM held_content WHERE id = $1', [id]);
  }

  async contentRemoveOrphans(idleMs: number): Promise<number> {
    const r = await this.pool.query<{ id: string }>(
      `DELETE FROM held_content c USING (
         SELECT id FROM held_content GROUP BY id HAVING MAX(written_at) < ${NOW_MS} - $1
       ) idle
       WHERE c.id = idle.id AND NOT EXISTS (SELECT 1 FROM held_messages h WHERE h.id = c.id)
       RETURNING c.id`,
      [idleMs],
    );
    return new Set(r.rows.map((row) => row.id)).size;
  }

  async contentOnDisk(): Promise<string[]> {
    if (this.node === null) return [];
    const r = await this.pool.query<{ id: string }>('SELECT id FROM held_messages WHERE origin = $1 ORDER BY id', [this.node]);
    return r.rows.map((row) => row.id);
  }

  async contentMovedIn(id: string): Promise<void> {
    await this.pool.query('UPDATE held_messages SET origin = NULL WHERE id = $1 AND origin = $2', [id, this.node]);
  }

  async spoolStats(): Promise<{ count: number; bytes: number; oldestRelease: number | undefined }> {
    const r = await this.pool.query<{ count: string; bytes: string | null; oldest: string | null }>(
      'SELECT COUNT(*) AS count, SUM(size) AS bytes, MIN(release_at) AS oldest FROM held_messages',
    );
    const row = r.rows[0]!;
    return { count: Number(row.count), bytes: optionalNumber(row.bytes) ?? 0, oldestRelease: optionalNumber(row.oldest) };
  }

  // ---- mod-sequence state (CONDSTORE/QRESYNC emulation, RFC 7162) ----

  async modseqOpen(user: string, mailbox: string, uidValidity: number): Promise<MailboxModseqState> {
    const box = normalizeMailbox(mailbox);
    const found = await selectBoxByName(this.pool, user, box);
    if (found !== undefined && Number(found.uid_validity) === uidValidity) return modseqState(found);
    return this.tx(async (c) => {
      // Openers of one (user, mailbox) queue here, so the check, the drop and the insert
      // are one step: two instances opening at once end with one row, and the second
      // finds it made.
      // The pair as a JSON array: no separator character a name could contain (text cannot hold NUL).
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [MODSEQ_OPEN_LOCK_CLASS, JSON.stringify([user, box])]);
      const current = await selectBoxByName(c, user, box);
      if (current !== undefined) {
        if (Number(current.uid_validity) === uidValidity) return modseqState(current);
        // RFC 7162 §3.2.5: mod-sequences belong to one UIDVALIDITY; a new one starts over
        // (its messages and vanished UIDs go with it: ON DELETE CASCADE).
        await c.query('DELETE FROM modseq_mailboxes WHERE id = $1', [current.id]);
      }
      // Never below what a dropped state reached (a clock set back must not reuse values).
      const start = Math.max(initialModseq(), (current === undefined ? 0 : Number(current.highest_modseq)) + 1);
      const r = await c.query<ModseqBoxRow>(
        `INSERT INTO modseq_mailboxes (user_name, mailbox, uid_validity, highest_modseq, vanished_floor, created_at)
         VALUES ($1, $2, $3, $4, $4, $5) RETURNING ${BOX_COLUMNS}`,
        [user, box, uidValidity, start, Date.now()],
      );
      return modseqState(r.rows[0]!);
    });
  }

  async modseqRange(id: number, afterUid: number, limit: number): Promise<MessageModseq[]> {
    const r = await this.pool.query<ModseqMessageRow>(
      'SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = $1 AND uid > $2 ORDER BY uid LIMIT $3',
      [id, afterUid, limit],
    );
    return r.rows.map(messageModseq);
  }

  async modseqRecord(
    id: number,
    change: { changed: Array<{ uid: number; flags: string[] }>; expunged: number[] },
  ): Promise<{ highestModseq: number; modseqs: number[] }> {
    return this.tx(async (c) => {
      // The mailbox row's lock orders recorders of one mailbox across instances: no one
      // else reads HIGHESTMODSEQ until this commits, so no mod-sequence is handed out twice.
      const box = await c.query<{ highest_modseq: string }>('SELECT highest_modseq FROM modseq_mailboxes WHERE id = $1 FOR UPDATE', [id]);
      if (box.rows[0] === undefined) throw new ModseqStateGone(id);
      const before = Number(box.rows[0].highest_modseq);
      const uids = [...new Set([...change.changed.map((m) => m.uid), ...change.expunged])];
      // What is stored for every UID the change names, read at once; the decisions below
      // are the SQLite store's, made in memory in the order given.
      const stored = new Map<number, { flags: string; modseq: number }>();
      const vanished = new Set<number>();
      if (uids.length > 0) {
        const rows = await c.query<ModseqMessageRow>('SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])', [
          id,
          uids,
        ]);
        for (const row of rows.rows) stored.set(Number(row.uid), { flags: row.flags, modseq: Number(row.modseq) });
        const gone = await c.query<{ uid: string }>('SELECT uid FROM modseq_vanished WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])', [id, uids]);
        for (const row of gone.rows) vanished.add(Number(row.uid));
      }
      let highest = before;
      const modseqs: number[] = [];
      const written = new Map<number, { flags: string; modseq: number }>();
      for (const { uid, flags } of change.changed) {
        const key = flagsKey(flags);
        const current = stored.get(uid);
        if (current === undefined && vanished.has(uid)) {
          modseqs.push(0);
        } else if (current === undefined || current.flags !== key) {
          const next = { flags: key, modseq: ++highest };
          stored.set(uid, next);
          written.set(uid, next);
          modseqs.push(highest);
        } else {
          modseqs.push(current.modseq);
        }
      }
      const expunged: Array<{ uid: number; modseq: number }> = [];
      for (const uid of change.expunged) {
        if (!stored.has(uid)) continue;
        stored.delete(uid);
        written.delete(uid);
        vanished.add(uid);
        expunged.push({ uid, modseq: ++highest });
      }
      if (expunged.length > 0) {
        const gone = expunged.map((e) => e.uid);
        await c.query('DELETE FROM modseq_messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])', [id, gone]);
        await c.query(
          `INSERT INTO modseq_vanished (mailbox_id, uid, modseq) SELECT $1, u, m FROM unnest($2::bigint[], $3::bigint[]) AS t(u, m)
           ON CONFLICT (mailbox_id, uid) DO NOTHING`,
          [id, gone, expunged.map((e) => e.modseq)],
        );
      }
      if (written.size > 0) {
        const rows = [...written];
        await c.query(
          `INSERT INTO modseq_messages (mailbox_id, uid, flags, modseq)
           SELECT $1, u, f, m FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS t(u, f, m)
           ON CONFLICT (mailbox_id, uid) DO UPDATE SET flags = excluded.flags, modseq = excluded.modseq`,
          [id, rows.map(([uid]) => uid), rows.map(([, v]) => v.flags), rows.map(([, v]) => v.modseq)],
        );
      }
      if (highest !== before) await c.query('UPDATE modseq_mailboxes SET highest_modseq = $1 WHERE id = $2', [highest, id]);
      return { highestModseq: highest, modseqs };
    });
  }

  async modseqChangedSince(id: number, since: number, afterUid: number, limit: number): Promise<MessageModseq[]> {
    // One statement, so one snapshot: the state's existence and its rows agree.
    const r = await this.pool.query<{ uid: string | null; flags: string | null; modseq: string | null }>(
      `SELECT m.uid, m.flags, m.modseq FROM modseq_mailboxes b
       LEFT JOIN LATERAL (
         SELECT uid, flags, modseq FROM modseq_messages
         WHERE mailbox_id = b.id AND modseq > $2 AND uid > $3 ORDER BY uid LIMIT $4
       ) m ON true
       WHERE b.id = $1 ORDER BY m.uid`,
      [id, since, afterUid, limit],
    );
    if (r.rows.length === 0) throw new ModseqStateGone(id);
    return r.rows.filter((row) => row.uid !== null).map((row) => messageModseq(row as ModseqMessageRow));
  }

  async modseqVanishedSince(id: number, since: number): Promise<number[] | 'too-old'> {
    const r = await this.pool.query<{ vanished_floor: string; uid: string | null }>(
      `SELECT b.vanished_floor, v.uid FROM modseq_mailboxes b
       LEFT JOIN modseq_vanished v ON v.mailbox_id = b.id AND v.modseq > $2
       WHERE b.id = $1 ORDER BY v.uid`,
      [id, since],
    );
    if (r.rows.length === 0) throw new ModseqStateGone(id);
    if (since < Number(r.rows[0]!.vanished_floor)) return 'too-old';
    return r.rows.filter((row) => row.uid !== null).map((row) => Number(row.uid));
  }

  async modseqGet(id: number, uids: readonly number[]): Promise<Map<number, MessageModseq>> {
    const out = new Map<number, MessageModseq>();
    if (uids.length === 0) return out;
    const r = await this.pool.query<ModseqMessageRow>('SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])', [
      id,
      [...uids],
    ]);
    const byUid = new Map(r.rows.map((row) => [Number(row.uid), messageModseq(row)]));
    // In the order asked, as the SQLite store answers.
    for (const uid of uids) {
      const m = byUid.get(uid);
      if (m !== undefined) out.set(uid, m);
    }
    return out;
  }

  async modseqCompact(id: number, keep: number): Promise<void> {
    if (!Number.isInteger(keep) || keep < 0) throw new RangeError(`modseqCompact: keep must be a whole number >= 0, not ${keep}`);
    await this.tx(async (c) => {
      const box = await c.query('SELECT 1 FROM modseq_mailboxes WHERE id = $1 FOR UPDATE', [id]);
      if (box.rowCount === 0) throw new ModseqStateGone(id);
      const newest = await c.query<{ modseq: string }>(
        'SELECT modseq FROM modseq_vanished WHERE mailbox_id = $1 ORDER BY modseq DESC LIMIT 1 OFFSET $2',
        [id, keep],
      );
      const dropped = newest.rows[0]?.modseq;
      if (dropped === undefined) return;
      await c.query('DELETE FROM modseq_vanished WHERE mailbox_id = $1 AND modseq <= $2', [id, dropped]);
      await c.query('UPDATE modseq_mailboxes SET vanished_floor = GREATEST(vanished_floor, $1) WHERE id = $2', [dropped, id]);
    });
  }

  async modseqState(id: number): Promise<MailboxModseqState> {
    const r = await this.pool.query<ModseqBoxRow>(`SELECT ${BOX_COLUMNS} FROM modseq_mailboxes WHERE id = $1`, [id]);
    if (r.rows[0] === undefined) throw new ModseqStateGone(id);
    return modseqState(r.rows[0]);
  }

  // ---- mailbox locks across instances (APPENDUID / COPYUID) ----

  async mailboxLock(key: string, holdMs: number, signal?: AbortSignal): Promise<StoreLock | undefined> {
    // A lease row rather than an advisory lock: a session-level advisory lock would pin a
    // pooled connection for as long as an APPEND uploads, and one per waiter; a row costs a
    // connection only per attempt. JSON: the key holds NUL, which text cannot.
    const name = JSON.stringify(key);
    const holder = randomUUID();
    for (let pause = 5; ; pause = Math.min(pause * 2, 50)) {
      if (signal?.aborted) return undefined;
      // Taken when free or when its holder's lease has run out (the holder died or hung).
      const r = await this.pool.query(
        `INSERT INTO mailbox_locks (key, holder, held_until) VALUES ($1, $2, ${NOW_MS} + $3)
         ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
         WHERE mailbox_locks.held_until < ${NOW_MS}`,
        [name, holder, holdMs],
      );
      if (r.rowCount === 1) {
        let released: Promise<void> | undefined;
        return {
          release: () =>
            (released ??= this.pool.query('DELETE FROM mailbox_locks WHERE key = $1 AND holder = $2', [name, holder]).then(() => undefined)),
        };
      }
      // Waiters poll (no notification reaches them); the local queue (MailboxLocks) keeps
      // a process's own callers in order, so only one per process polls for a key.
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

const BOX_COLUMNS = 'id, uid_validity, highest_modseq, vanished_floor';

/** node-postgres returns bigint columns as strings: these rows are as they arrive. */
interface ModseqBoxRow {
  id: string;
  uid_validity: string;
  highest_modseq: string;
  vanished_floor: string;
}

interface ModseqMessageRow {
  uid: string;
  flags: string;
  modseq: string;
}

async function selectBoxByName(db: Queryable, user: string, mailbox: string): Promise<ModseqBoxRow | undefined> {
  const r = await db.query<ModseqBoxRow>(`SELECT ${BOX_COLUMNS} FROM modseq_mailboxes WHERE user_name = $1 AND mailbox = $2`, [user, mailbox]);
  return r.rows[0];
}

function modseqState(row: ModseqBoxRow): MailboxModseqState {
  return { id: Number(row.id), highestModseq: Number(row.highest_modseq), vanishedFloor: Number(row.vanished_floor) };
}

function messageModseq(row: ModseqMessageRow): MessageModseq {
  return { uid: Number(row.uid), flags: flagsFromKey(row.flags), modseq: Number(row.modseq) };
}

/** Where a new state's mod-sequences start: now in microseconds (see ModseqIndex.modseqOpen). */
function initialModseq(): number {
  return Date.now() * 1000;
}

function optionalNumber(v: string | null | undefined): number | undefined {
  return v === null || v === undefined ? undefined : Number(v);
}

interface HeldRow {
  id: string;
  user_name: string;
  sender: string;
  mail_params: string;
  recipients: string;
  size: string;
  created_at: string;
  release_at: string;
  hold_request: string;
  next_attempt_at: string;
  attempts: number;
  state: HeldMessage['state'];
  last_error: string | null;
}

function heldMessage(row: HeldRow): HeldMessage {
  return {
    id: row.id,
    user: row.user_name,
    sender: row.sender,
    mailParams: JSON.parse(row.mail_params) as HeldMessage['mailParams'],
    recipients: JSON.parse(row.recipients) as HeldRecipient[],
    size: Number(row.size),
    createdAt: Number(row.created_at),
    releaseAt: Number(row.release_at),
    holdRequest: row.hold_request,
    nextAttemptAt: Number(row.next_attempt_at),
    attempts: row.attempts,
    state: row.state,
    ...(row.last_error !== null ? { lastError: row.last_error } : {}),
  };
}
