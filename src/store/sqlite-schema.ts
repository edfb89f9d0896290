/** The SQLite store's schema, as migrations (migrate.ts). Never edit one that has shipped: add the next. */
import type { Migration } from './migrate.js';

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'mailbox access keys (RFC 4467 §5) and server meta values',
    sql: `
      CREATE TABLE mailbox_keys (
        user TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user, mailbox)
      ) WITHOUT ROWID;
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: 'FUTURERELEASE spool index (RFC 4865)',
    sql: `
      CREATE TABLE held_messages (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        sender TEXT NOT NULL,
        mail_params TEXT NOT NULL,
        recipients TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        release_at INTEGER NOT NULL,
        hold_request TEXT NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('held', 'sending', 'committing')),
        last_error TEXT
      ) WITHOUT ROWID;
      CREATE INDEX held_messages_due ON held_messages (state, next_attempt_at);
    `,
  },
  {
    version: 3,
    name: 'CONDSTORE/QRESYNC mod-sequence state (RFC 7162)',
    // AUTOINCREMENT: an id dropped with its UIDVALIDITY is never given to another state,
    // so a session still holding it fails (ModseqStateGone) instead of writing elsewhere.
    // Flags are one canonical string (lemonade/qresync/flags.ts). Children are deleted
    // explicitly (foreign keys are not enforced on this connection).
    sql: `
      CREATE TABLE modseq_mailboxes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        uid_validity INTEGER NOT NULL,
        highest_modseq INTEGER NOT NULL,
        vanished_floor INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (user, mailbox)
      );
      CREATE TABLE modseq_messages (
        mailbox_id INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        flags TEXT NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
      ) WITHOUT ROWID;
      CREATE INDEX modseq_messages_changed ON modseq_messages (mailbox_id, modseq);
      CREATE TABLE modseq_vanished (
        mailbox_id INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
      ) WITHOUT ROWID;
      CREATE INDEX modseq_vanished_since ON modseq_vanished (mailbox_id, modseq);
    `,
  },
  {
    version: 4,
    name: 'release claims with an owner and a lease; mailbox locks (worker processes sharing the file)',
    // claimed_by: the store instance ("pid:nonce", sqlite.ts) releasing a sending or
    // committing row, claimed_until when its lease ends (ms, this host's clock). A row
    // whose claimant process is gone or whose lease ran out is released by another. Rows
    // from before this version have no claimant: whoever recovers first takes them.
    // mailbox_locks: like PostgreSQL's (version 1 there), a row per held lock.
    sql: `
      ALTER TABLE held_messages ADD COLUMN claimed_by TEXT;
      ALTER TABLE held_messages ADD COLUMN claimed_until INTEGER;
      CREATE TABLE mailbox_locks (
        key TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        held_until INTEGER NOT NULL
      ) WITHOUT ROWID;
    `,
  },
];
