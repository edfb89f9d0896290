/**
 * The PostgreSQL store's schema, as migrations (postgres-migrate.ts), numbered like the
 * SQLite ones (sqlite-schema.ts) so one version means the same tables in both (plus
 * mailbox_locks, which only a shared store needs, and version 4, held content, which
 * SQLite keeps as files). Never edit one that has shipped: add the next.
 *
 * Differences from SQLite that matter: `user` is a reserved word (user_name here); times
 * in ms, UIDs and mod-sequences are bigint (node-postgres returns them as strings, the
 * store converts); children of a mod-sequence state go with it (ON DELETE CASCADE).
 */
import type { Migration } from './migrate.js';

export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'mailbox access keys (RFC 4467 §5), server meta values, mailbox locks',
    // mailbox_locks is PostgreSQL's own (a SQLite file has one gateway process): a row per
    // held lock, with the holder and when its lease ends (the database's clock, in ms).
    sql: `
      CREATE TABLE mailbox_locks (
        key text PRIMARY KEY,
        holder text NOT NULL,
        held_until bigint NOT NULL
      );
      CREATE TABLE mailbox_keys (
        user_name text NOT NULL,
        mailbox text NOT NULL,
        key bytea NOT NULL,
        created_at bigint NOT NULL,
        PRIMARY KEY (user_name, mailbox)
      );
      CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'FUTURERELEASE spool index (RFC 4865), with release leases',
    // claimed_by / claimed_until: which store instance holds a release and until when (ms,
    // the database's clock, so hosts with skewed clocks agree); an expired lease is
    // someone else's to take over (postgres.ts). origin: the gateway (dataDir) whose spool
    // directory holds the content, the only one that can release it while the content is
    // a file (NULL: any).
    sql: `
      CREATE TABLE held_messages (
        id text PRIMARY KEY,
        user_name text NOT NULL,
        sender text NOT NULL,
        mail_params text NOT NULL,
        recipients text NOT NULL,
        size bigint NOT NULL,
        created_at bigint NOT NULL,
        release_at bigint NOT NULL,
        hold_request text NOT NULL,
        next_attempt_at bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        state text NOT NULL CHECK (state IN ('held', 'sending', 'committing')),
        last_error text,
        claimed_by text,
        claimed_until bigint,
        origin text
      );
      CREATE INDEX held_messages_due ON held_messages (state, next_attempt_at);
    `,
  },
  {
    version: 3,
    name: 'CONDSTORE/QRESYNC mod-sequence state (RFC 7162)',
    // An identity never hands an id out twice (like SQLite's AUTOINCREMENT): a session
    // still holding a dropped state's id fails (ModseqStateGone) instead of writing elsewhere.
    sql: `
      CREATE TABLE modseq_mailboxes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_name text NOT NULL,
        mailbox text NOT NULL,
        uid_validity bigint NOT NULL,
        highest_modseq bigint NOT NULL,
        vanished_floor bigint NOT NULL,
        created_at bigint NOT NULL,
        UNIQUE (user_name, mailbox)
      );
      CREATE TABLE modseq_messages (
        mailbox_id bigint NOT NULL REFERENCES modseq_mailboxes (id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        flags text NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
      );
      CREATE INDEX modseq_messages_changed ON modseq_messages (mailbox_id, modseq);
      CREATE TABLE modseq_vanished (
        mailbox_id bigint NOT NULL REFERENCES modseq_mailboxes (id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
      );
      CREATE INDEX modseq_vanished_since ON modseq_vanished (mailbox_id, modseq);
    `,
  },
  {
    version: 4,
    name: 'FUTURERELEASE held content in the database, in chunks (issue 18)',
    // One row per chunk of a held message, written as it streams in (each its own
    // commit) before the message's held_messages row; no foreign key, since the chunks
    // come first. written_at (ms, the database's clock) tells an upload still under way
    // from one whose client went away: see SpoolContent.contentRemoveOrphans.
    // origin (migration 2) now marks only rows whose content is still a file in that
    // gateway's spool (held by an earlier build); new rows have none.
    sql: `
      CREATE TABLE held_content (
        id text NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        written_at bigint NOT NULL,
        PRIMARY KEY (id, seq)
      );
      CREATE INDEX held_messages_claims ON held_messages (claimed_until) WHERE state IN ('sending', 'committing');
    `,
  },
];
