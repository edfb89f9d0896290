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
];
