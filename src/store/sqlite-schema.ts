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
];
