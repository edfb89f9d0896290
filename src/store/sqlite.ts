/**
 * The embedded store: one SQLite file under dataDir, through better-sqlite3 (synchronous;
 * the Store interface is async for the PostgreSQL store to come).
 *
 * Durability: WAL with synchronous=FULL, so a committed write is on disk before the call
 * resolves. A lost access key only invalidates URLs, but the FUTURERELEASE spool index
 * (held_messages) must survive a crash: a held message got its 250 once its row was here.
 *
 * Several processes on one file (worker processes, src/cluster/: SqliteStoreOptions.shared):
 * every write is one statement or one IMMEDIATE transaction, so it runs under SQLite's one
 * write lock, on the newest snapshot (a statement that starts while another process writes
 * waits, busy_timeout, and then reads what that one committed). A release claim is one
 * conditional UPDATE: two processes cannot both move a row from held to sending. Each
 * claim names its claimant ("pid:nonce") and a lease, so a process that starts next to
 * running siblings takes back only the claims of processes that are gone (or whose lease
 * ran out), never a sibling's release under way.
 */
import { closeSync, fstatSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, schemaVersion } from './migrate.js';
import { SQLITE_MIGRATIONS } from './sqlite-schema.js';
import {
  ACCESS_KEY_BYTES,
  ModseqStateGone,
  normalizeMailbox,
  StoreError,
  type HeldMessage,
  type HeldRecipient,
  type MailboxModseqState,
  type MessageModseq,
  type Store,
  type StoreLock,
} from './store.js';
import { flagsFromKey, flagsKey } from '../lemonade/qresync/flags.js';

/** How long a statement waits for another process's write lock before SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5000;
/**
 * modseqChangedSince reads through the (mailbox_id, modseq) index when at most this many
 * mod-sequences were handed out since `since` (so at most this many rows match), and
 * walks the messages in UID order otherwise (every page then costs the rows it passes,
 * once over all pages, instead of every match again per page).
 */
const CHANGED_SINCE_INDEX_MAX = 4096;
/**
 * How long a release claim holds if its claimant's death goes unnoticed (its pid reused by
 * another process): it must outlast the longest release, as PostgreSQL's (postgres.ts).
 */
export const DEFAULT_SQLITE_LEASE_MS = 10 * 60 * 1000;

export interface SqliteStoreOptions {
  /**
   * Other processes use the file at the same time and claim releases and take mailbox
   * locks too (worker processes). Without it this process is the file's only gateway
   * (the queue CLI never claims): spoolRecover takes back every claim, as after a
   * restart, and mailboxLock has nothing to take (MailboxLocks queues its callers).
   */
  shared?: boolean;
  leaseMs?: number;
}

/** Store instances open in this process, by claimant id: their claims are live. */
const liveInstances = new Set<string>();

/**
 * Whether the claimant ("pid:nonce") of a claim or lock is gone: an instance of this
 * process that is closed (or from an earlier process that had the same pid, as pid 1 in a
 * container), or a process that no longer exists. One host: the pid says it (the lease
 * covers a pid reused since).
 */
function claimantGone(claimant: string | null): boolean {
  if (claimant === null) return true;
  const instance = claimant.split('/', 1)[0]!;
  const pid = Number(instance.split(':', 1)[0]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return true;
  if (pid === process.pid) return !liveInstances.has(instance);
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    // EPERM: it exists, as another user's process.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export class SqliteStore implements Store {
  readonly file: string;
  private readonly db: Database.Database;
  // Prepared once: better-sqlite3 statements are reusable and cheaper than re-parsing.
  private readonly stmt: ReturnType<typeof prepare>;
  private readonly modseq: ReturnType<typeof prepareModseq>;
  /** This instance's name in release claims and mailbox locks. */
  readonly instanceId = `${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly shared: boolean;
  private readonly leaseMs: number;
  private lockSeq = 0;

  private constructor(file: string, db: Database.Database, opts: SqliteStoreOptions) {
    this.file = file;
    this.db = db;
    this.shared = opts.shared ?? false;
    this.leaseMs = opts.leaseMs ?? DEFAULT_SQLITE_LEASE_MS;
    db.function('claimant_gone', { deterministic: false }, (claimant: unknown) => (claimantGone(claimant as string | null) ? 1 : 0));
    this.stmt = prepare(db);
    this.modseq = prepareModseq(db);
    liveInstances.add(this.instanceId);
  }

  /** Opens (creating it, its directory and its schema as needed) the store in file. */
  static open(file: string, opts: SqliteStoreOptions = {}): SqliteStore {
    let db: Database.Database | undefined;
    try {
      createPrivate(file);
      db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
      // journal_mode answers with the mode in force: a read-only or odd file may refuse WAL.
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
      db.pragma('synchronous = FULL');
      migrate(db, SQLITE_MIGRATIONS);
      return new SqliteStore(file, db, opts);
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

  async existingMailboxAccessKey(user: string, mailbox: string): Promise<Buffer | undefined> {
    return this.stmt.selectKey.get(user, normalizeMailbox(mailbox))?.key;
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
    // Releases whose claimant died (a sibling worker killed mid-release) or whose lease
    // ran out become held again, so this pass takes them over. Looked for first: a read
    // takes no write lock, and there is almost never one.
    if (this.shared && this.stmt.spoolAbandoned.get(Date.now()) !== undefined) this.stmt.spoolTakeBack.run(Date.now());
    return this.stmt.spoolDue.all(now, limit).map(heldMessage);
  }

  async spoolList(limit: number, offset: number): Promise<HeldMessage[]> {
    return this.stmt.spoolList.all(limit, offset).map(heldMessage);
  }

  async spoolClaim(id: string): Promise<boolean> {
    // One statement under the write lock, evaluated on the newest snapshot: of processes
    // racing for a row, exactly one sees state = 'held' and changes it.
    return this.stmt.spoolClaim.run(this.instanceId, Date.now() + this.leaseMs, id).changes === 1;
  }

  async spoolCommitting(id: string): Promise<void> {
    // Only our own claim: one taken over after our lease ran out is someone else's now.
    this.stmt.spoolCommitting.run(Date.now() + this.leaseMs, id, this.instanceId);
  }

  async spoolReschedule(id: string, recipients: HeldRecipient[], nextAttemptAt: number, lastError: string): Promise<void> {
    this.stmt.spoolReschedule.run(JSON.stringify(recipients), nextAttemptAt, lastError, id, this.instanceId);
  }

  async spoolDelete(id: string, dsn?: HeldMessage): Promise<boolean> {
    return this.stmt.spoolDelete.immediate(id, dsn);
  }

  async spoolCancel(id: string, user?: string): Promise<HeldMessage | undefined> {
    return this.stmt.spoolCancel.immediate(id, user);
  }

  async spoolReleaseNow(id: string, now: number): Promise<boolean> {
    return this.stmt.spoolReleaseNow.run(now, id).changes === 1;
  }

  /**
   * Alone on the file, every claim is stale (a restart). Shared, only those of gone
   * claimants, expired leases, and this instance's own: a worker restarted next to running
   * siblings takes back its dead predecessor's releases, not theirs.
   */
  async spoolRecover(): Promise<HeldMessage[]> {
    return this.stmt.spoolRecover.immediate(this.shared ? this.instanceId : null, Date.now());
  }

  async spoolNextDue(): Promise<number | undefined> {
    return this.stmt.spoolNextDue.get()?.due ?? undefined;
  }

  /** Held content stays a file in dataDir/spool next to this file (futurerelease/spool.ts). */
  spoolContent(): undefined {
    return undefined;
  }

  async spoolStats(): Promise<{ count: number; bytes: number; oldestRelease: number | undefined }> {
    const row = this.stmt.spoolStats.get()!;
    return { count: row.count, bytes: row.bytes ?? 0, oldestRelease: row.oldestRelease ?? undefined };
  }

  // ---- mod-sequence state (CONDSTORE/QRESYNC emulation, RFC 7162) ----

  async modseqOpen(user: string, mailbox: string, uidValidity: number): Promise<MailboxModseqState> {
    const box = normalizeMailbox(mailbox);
    const found = this.modseq.byName.get(user, box);
    if (found !== undefined && found.uid_validity === uidValidity) return modseqState(found);
    // Create, or drop and create, under the write lock: two processes opening at once end
    // with one row, and the one that comes second finds it made.
    return modseqState(this.modseq.open.immediate(user, box, uidValidity, initialModseq()));
  }

  async modseqRange(id: number, afterUid: number, limit: number): Promise<MessageModseq[]> {
    return this.modseq.range.all(id, afterUid, limit).map(messageModseq);
  }

  async modseqRecord(
    id: number,
    change: { changed: Array<{ uid: number; flags: string[] }>; expunged: number[] },
  ): Promise<{ highestModseq: number; modseqs: number[] }> {
    // IMMEDIATE: the write lock is taken before HIGHESTMODSEQ is read, so no other
    // process can hand out the same mod-sequences in between.
    return this.modseq.record.immediate(id, change.changed, change.expunged);
  }

  async modseqChangedSince(id: number, since: number, afterUid: number, limit: number): Promise<MessageModseq[]> {
    return this.modseq.changedSince(id, since, afterUid, limit).map(messageModseq);
  }

  async modseqVanishedSince(id: number, since: number): Promise<number[] | 'too-old'> {
    return this.modseq.vanishedSince(id, since);
  }

  async modseqGet(id: number, uids: readonly number[]): Promise<Map<number, MessageModseq>> {
    return this.modseq.get(id, uids);
  }

  async modseqCompact(id: number, keep: number): Promise<void> {
    if (!Number.isInteger(keep) || keep < 0) throw new RangeError(`modseqCompact: keep must be a whole number >= 0, not ${keep}`);
    this.modseq.compact.immediate(id, keep);
  }

  async modseqState(id: number): Promise<MailboxModseqState> {
    const row = this.modseq.byId.get(id);
    if (row === undefined) throw new ModseqStateGone(id);
    return modseqState(row);
  }

  /**
   * Alone on the file: nothing to take, this process's callers are queued by MailboxLocks.
   * Shared (workers): a row in mailbox_locks, as in PostgreSQL, taken when free, when its
   * lease ran out, or when its holder's process is gone (a worker killed mid-APPEND).
   */
  async mailboxLock(key: string, holdMs: number, signal?: AbortSignal): Promise<StoreLock | undefined> {
    if (signal?.aborted) return undefined;
    if (!this.shared) return { release: async () => undefined };
    const name = JSON.stringify(key);
    const holder = `${this.instanceId}/${++this.lockSeq}`;
    for (let pause = 2; ; pause = Math.min(pause * 2, 25)) {
      if (signal?.aborted) return undefined;
      const now = Date.now();
      if (this.stmt.takeLock.run({ key: name, holder, until: now + holdMs, now }).changes === 1) {
        let released = false;
        return {
          release: async () => {
            if (released || !this.db.open) return;
            released = true;
            this.stmt.dropLock.run(name, holder);
          },
        };
      }
      // Waiters poll (no notification crosses processes); MailboxLocks sends one waiter
      // per key and process here, so the polling is bounded by the number of workers.
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  async close(): Promise<void> {
    liveInstances.delete(this.instanceId);
    if (this.db.open) this.db.close();
  }
}

interface ModseqBoxRow {
  id: number;
  uid_validity: number;
  highest_modseq: number;
  vanished_floor: number;
}

interface ModseqMessageRow {
  uid: number;
  flags: string;
  modseq: number;
}

function modseqState(row: ModseqBoxRow): MailboxModseqState {
  return { id: row.id, highestModseq: row.highest_modseq, vanishedFloor: row.vanished_floor };
}

function messageModseq(row: ModseqMessageRow): MessageModseq {
  return { uid: row.uid, flags: flagsFromKey(row.flags), modseq: row.modseq };
}

/** Where a new state's mod-sequences start: now in microseconds (see ModseqIndex.modseqOpen). */
function initialModseq(): number {
  return Date.now() * 1000;
}

function prepareModseq(db: Database.Database) {
  const boxColumns = 'id, uid_validity, highest_modseq, vanished_floor';
  const byName = db.prepare<[string, string], ModseqBoxRow>(`SELECT ${boxColumns} FROM modseq_mailboxes WHERE user = ? AND mailbox = ?`);
  const byId = db.prepare<[number], ModseqBoxRow>(`SELECT ${boxColumns} FROM modseq_mailboxes WHERE id = ?`);
  const insertBox = db.prepare<[string, string, number, number, number, number]>(
    'INSERT INTO modseq_mailboxes (user, mailbox, uid_validity, highest_modseq, vanished_floor, created_at) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const deleteBox = db.prepare<[number]>('DELETE FROM modseq_mailboxes WHERE id = ?');
  const deleteMessages = db.prepare<[number]>('DELETE FROM modseq_messages WHERE mailbox_id = ?');
  const deleteVanished = db.prepare<[number]>('DELETE FROM modseq_vanished WHERE mailbox_id = ?');
  const setHighest = db.prepare<[number, number]>('UPDATE modseq_mailboxes SET highest_modseq = ? WHERE id = ?');
  const getMessage = db.prepare<[number, number], ModseqMessageRow>('SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = ? AND uid = ?');
  const insertMessage = db.prepare<[number, number, string, number]>('INSERT INTO modseq_messages (mailbox_id, uid, flags, modseq) VALUES (?, ?, ?, ?)');
  const updateMessage = db.prepare<[string, number, number, number]>('UPDATE modseq_messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?');
  const deleteMessage = db.prepare<[number, number]>('DELETE FROM modseq_messages WHERE mailbox_id = ? AND uid = ?');
  const isVanished = db.prepare<[number, number], { modseq: number }>('SELECT modseq FROM modseq_vanished WHERE mailbox_id = ? AND uid = ?');
  const insertVanished = db.prepare<[number, number, number]>('INSERT OR IGNORE INTO modseq_vanished (mailbox_id, uid, modseq) VALUES (?, ?, ?)');
  // Few changes since `since`: straight from the modseq index, sorted by UID afterwards.
  const changedByModseq = db.prepare<[number, number, number, number], ModseqMessageRow>(
    `SELECT uid, flags, modseq FROM modseq_messages INDEXED BY modseq_messages_changed
     WHERE mailbox_id = ? AND modseq > ? AND uid > ? ORDER BY uid LIMIT ?`,
  );
  // Many: walk the primary key in UID order ("+modseq" keeps the planner off the modseq index).
  const changedByUid = db.prepare<[number, number, number, number], ModseqMessageRow>(
    `SELECT uid, flags, modseq FROM modseq_messages
     WHERE mailbox_id = ? AND +modseq > ? AND uid > ? ORDER BY uid LIMIT ?`,
  );
  const vanishedSince = db.prepare<[number, number], { uid: number }>(
    'SELECT uid FROM modseq_vanished WHERE mailbox_id = ? AND modseq > ? ORDER BY uid',
  );
  const nthNewestVanished = db.prepare<[number, number], { modseq: number }>(
    'SELECT modseq FROM modseq_vanished WHERE mailbox_id = ? ORDER BY modseq DESC LIMIT 1 OFFSET ?',
  );
  const dropVanishedUpTo = db.prepare<[number, number]>('DELETE FROM modseq_vanished WHERE mailbox_id = ? AND modseq <= ?');
  const setFloor = db.prepare<[number, number]>('UPDATE modseq_mailboxes SET vanished_floor = MAX(vanished_floor, ?) WHERE id = ?');

  const boxOrGone = (id: number): ModseqBoxRow => {
    const box = byId.get(id);
    if (box === undefined) throw new ModseqStateGone(id);
    return box;
  };

  return {
    byName,
    byId,
    open: db.transaction((user: string, mailbox: string, uidValidity: number, initial: number): ModseqBoxRow => {
      const found = byName.get(user, mailbox);
      if (found !== undefined) {
        if (found.uid_validity === uidValidity) return found;
        // RFC 7162 §3.2.5: mod-sequences belong to one UIDVALIDITY; a new one starts over.
        deleteMessages.run(found.id);
        deleteVanished.run(found.id);
        deleteBox.run(found.id);
      }
      // Never below what a dropped state reached (a clock set back must not reuse values).
      const start = Math.max(initial, (found?.highest_modseq ?? 0) + 1);
      insertBox.run(user, mailbox, uidValidity, start, start, Date.now());
      return byName.get(user, mailbox)!;
    }),
    range: db.prepare<[number, number, number], ModseqMessageRow>(
      'SELECT uid, flags, modseq FROM modseq_messages WHERE mailbox_id = ? AND uid > ? ORDER BY uid LIMIT ?',
    ),
    record: db.transaction(
      (id: number, changed: Array<{ uid: number; flags: string[] }>, expunged: number[]): { highestModseq: number; modseqs: number[] } => {
        const box = boxOrGone(id);
        let highest = box.highest_modseq;
        const modseqs: number[] = [];
        for (const { uid, flags } of changed) {
          const key = flagsKey(flags);
          const stored = getMessage.get(id, uid);
          if (stored === undefined) {
            if (isVanished.get(id, uid) !== undefined) {
              modseqs.push(0);
              continue;
            }
            insertMessage.run(id, uid, key, ++highest);
            modseqs.push(highest);
          } else if (stored.flags !== key) {
            updateMessage.run(key, ++highest, id, uid);
            modseqs.push(highest);
          } else {
            modseqs.push(stored.modseq);
          }
        }
        for (const uid of expunged) {
          if (deleteMessage.run(id, uid).changes === 1) insertVanished.run(id, uid, ++highest);
        }
        if (highest !== box.highest_modseq) setHighest.run(highest, id);
        return { highestModseq: highest, modseqs };
      },
    ),
    // One read transaction: the choice of plan and the rows come from one snapshot.
    changedSince: db.transaction((id: number, since: number, afterUid: number, limit: number): ModseqMessageRow[] => {
      const box = boxOrGone(id);
      // Every mod-sequence is handed out once, so at most highest - since rows match.
      const stmt = box.highest_modseq - since <= CHANGED_SINCE_INDEX_MAX ? changedByModseq : changedByUid;
      return stmt.all(id, since, afterUid, limit);
    }),
    vanishedSince: db.transaction((id: number, since: number): number[] | 'too-old' => {
      const box = boxOrGone(id);
      if (since < box.vanished_floor) return 'too-old';
      return vanishedSince.all(id, since).map((r) => r.uid);
    }),
    get: db.transaction((id: number, uids: readonly number[]): Map<number, MessageModseq> => {
      const out = new Map<number, MessageModseq>();
      for (const uid of uids) {
        const row = getMessage.get(id, uid);
        if (row !== undefined) out.set(uid, messageModseq(row));
      }
      return out;
    }),
    compact: db.transaction((id: number, keep: number): void => {
      boxOrGone(id);
      const newestDropped = nthNewestVanished.get(id, keep);
      if (newestDropped === undefined) return;
      dropVanishedUpTo.run(id, newestDropped.modseq);
      setFloor.run(newestDropped.modseq, id);
    }),
  };
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
  // $me: the recovering instance when shared (NULL: alone on the file, every claim is stale).
  const recoverable = `state IN ('sending', 'committing') AND ($me IS NULL OR claimed_by IS NULL OR claimed_by = $me
    OR claimed_until < $now OR claimant_gone(claimed_by))`;
  const spoolRecoverable = db.prepare<[{ me: string | null; now: number }], HeldRow>(
    `SELECT * FROM held_messages WHERE state = 'committing' AND ${recoverable}`,
  );
  const spoolUnclaim = db.prepare<[{ me: string | null; now: number }]>(
    `UPDATE held_messages SET state = 'held', claimed_by = NULL, claimed_until = NULL WHERE ${recoverable}`,
  );
  const abandoned = "state = 'sending' AND (claimed_by IS NULL OR claimed_until < ? OR claimant_gone(claimed_by))";
  const spoolInsert = db.prepare<[string, string, string, string, string, number, number, number, string, number, number, string, string | null]>(
    `INSERT INTO held_messages (id, user, sender, mail_params, recipients, size, created_at, release_at, hold_request, next_attempt_at, attempts, state, last_error)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertHeld = (m: HeldMessage) =>
    spoolInsert.run(
      m.id, m.user, m.sender, JSON.stringify(m.mailParams), JSON.stringify(m.recipients), m.size,
      m.createdAt, m.releaseAt, m.holdRequest, m.nextAttemptAt, m.attempts, m.state, m.lastError ?? null,
    );
  const deleteHeld = db.prepare<[string]>('DELETE FROM held_messages WHERE id = ?');
  return {
    spoolInsertAll: db.transaction((messages: HeldMessage[]) => {
      for (const m of messages) insertHeld(m);
    }),
    spoolGet,
    spoolDue: db.prepare<[number, number], HeldRow>(
      "SELECT * FROM held_messages WHERE state = 'held' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
    ),
    spoolList: db.prepare<[number, number], HeldRow>('SELECT * FROM held_messages ORDER BY next_attempt_at, id LIMIT ? OFFSET ?'),
    spoolAbandoned: db.prepare<[number], { id: string }>(`SELECT id FROM held_messages WHERE ${abandoned} LIMIT 1`),
    spoolTakeBack: db.prepare<[number]>(`UPDATE held_messages SET state = 'held', claimed_by = NULL, claimed_until = NULL WHERE ${abandoned}`),
    spoolClaim: db.prepare<[string, number, string]>(
      "UPDATE held_messages SET state = 'sending', attempts = attempts + 1, claimed_by = ?, claimed_until = ? WHERE id = ? AND state = 'held'",
    ),
    spoolCommitting: db.prepare<[number, string, string]>(
      "UPDATE held_messages SET state = 'committing', claimed_until = ? WHERE id = ? AND state = 'sending' AND claimed_by = ?",
    ),
    spoolReschedule: db.prepare<[string, number, string, string, string]>(
      `UPDATE held_messages SET state = 'held', recipients = ?, next_attempt_at = ?, last_error = ?, claimed_by = NULL, claimed_until = NULL
       WHERE id = ? AND (claimed_by IS NULL OR claimed_by = ?)`,
    ),
    spoolDelete: db.transaction((id: string, dsn: HeldMessage | undefined): boolean => {
      const gone = deleteHeld.run(id).changes === 1;
      if (dsn !== undefined) insertHeld(dsn);
      return gone;
    }),
    spoolCancel: db.transaction((id: string, user: string | undefined): HeldMessage | undefined => {
      const row = spoolGet.get(id);
      if (row === undefined || row.state !== 'held' || (user !== undefined && row.user !== user)) return undefined;
      spoolDeleteHeld.run(id);
      return heldMessage(row);
    }),
    spoolReleaseNow: db.prepare<[number, string]>("UPDATE held_messages SET next_attempt_at = ? WHERE id = ? AND state = 'held'"),
    spoolRecover: db.transaction((me: string | null, now: number): HeldMessage[] => {
      const mayBeDelivered = spoolRecoverable.all({ me, now }).map(heldMessage);
      spoolUnclaim.run({ me, now });
      return mayBeDelivered;
    }),
    // Free, lapsed, or held by a gone process: one statement, so two takers cannot both win.
    takeLock: db.prepare<[{ key: string; holder: string; until: number; now: number }]>(
      `INSERT INTO mailbox_locks (key, holder, held_until) VALUES ($key, $holder, $until)
       ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
       WHERE mailbox_locks.held_until < $now OR claimant_gone(mailbox_locks.holder)`,
    ),
    dropLock: db.prepare<[string, string]>('DELETE FROM mailbox_locks WHERE key = ? AND holder = ?'),
    spoolNextDue: db.prepare<[], { due: number | null }>("SELECT MIN(next_attempt_at) AS due FROM held_messages WHERE state = 'held'"),
    spoolStats: db.prepare<[], { count: number; bytes: number | null; oldestRelease: number | null }>(
      'SELECT COUNT(*) AS count, SUM(size) AS bytes, MIN(release_at) AS oldestRelease FROM held_messages',
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
