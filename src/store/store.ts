/**
 * What the gateway keeps across restarts, behind one interface so the embedded SQLite
 * store (sqlite.ts) can be joined by a PostgreSQL one for clusters without touching
 * callers: every method is async even where SQLite is not.
 */

/** One recipient of a held message and where its delivery stands. */
export interface HeldRecipient {
  address: string;
  /** RCPT TO parameters to relay (NOTIFY, ORCPT: RFC 3461 §4), as received. */
  params: Array<[string, string | true]>;
  status: 'pending' | 'delivered' | 'failed';
  /** The MTA's reply for a failed recipient (for the DSN), or the last temporary one. */
  reply?: string;
}

/**
 * A message accepted for later delivery (RFC 4865 FUTURERELEASE), or a delivery status
 * notification waiting to go out: the index row; the message itself is in the spool's
 * content store (a file in dataDir/spool with SQLite, chunks in the database with
 * PostgreSQL: Store.spoolContent).
 */
export interface HeldMessage {
  id: string;
  /** The SMTP-authenticated submitter (may cancel it); "" for the gateway's own DSNs. */
  user: string;
  /** Envelope sender; "" is the null reverse-path of a DSN (RFC 5321 §4.5.5). */
  sender: string;
  /** MAIL FROM parameters to relay (BODY, RET, ENVID, SMTPUTF8). */
  mailParams: Array<[string, string | true]>;
  recipients: HeldRecipient[];
  /** Octets of its content. */
  size: number;
  createdAt: number;
  /** When the submitter asked for it to go (ms since the epoch). */
  releaseAt: number;
  /** The request as sent, "for;N" or "until;date-time" (RFC 4865 §5.1.2 Future-Release-Request); "" for a DSN. */
  holdRequest: string;
  /** When the scheduler tries next: releaseAt, then later after temporary failures. */
  nextAttemptAt: number;
  attempts: number;
  /**
   * held: waiting; sending: a release is relaying it (the MTA has not been sent the end
   * of its content); committing: the end of its content is being (or was) handed to the
   * MTA and its reply is not recorded yet, so the MTA may have accepted it (after a
   * crash it is released again: see futurerelease/scheduler.ts).
   */
  state: 'held' | 'sending' | 'committing';
  lastError?: string;
}

/** The spool's index: small rows, the due ones read a batch at a time so many held messages cost disk, not memory. */
export interface SpoolIndex {
  /** Records messages whose files are already durable, in one transaction; resolves once the rows are durable too. */
  spoolInsert(...messages: HeldMessage[]): Promise<void>;
  spoolGet(id: string): Promise<HeldMessage | undefined>;
  /** Held messages due at `now`, the most overdue first, at most `limit`. */
  spoolDue(now: number, limit: number): Promise<HeldMessage[]>;
  /** Held messages in due order, for operators (`queue list`). */
  spoolList(limit: number, offset: number): Promise<HeldMessage[]>;
  /** held -> sending for one release, counting the attempt; false when someone else took it or it is gone. */
  spoolClaim(id: string): Promise<boolean>;
  /**
   * sending -> committing, durably, just before the end of the content goes to the MTA.
   * A store with leases (spoolRenew) throws ReleaseClaimLost when the claim is no longer
   * this caller's (its lease ran out and another instance took the message over): the
   * end must then not be sent.
   */
  spoolCommitting(id: string): Promise<void>;
  /** Back to held after a release that left recipients to retry. */
  spoolReschedule(id: string, recipients: HeldRecipient[], nextAttemptAt: number, lastError: string): Promise<void>;
  /**
   * Removes the row (delivered, failed for good, or cancelled); false when there was none.
   * With dsn (its file already durable), indexes the DSN reporting the failures in the
   * same transaction: after a crash there is either the message (released again) or its
   * DSN, never both, so no second DSN.
   */
  spoolDelete(id: string, dsn?: HeldMessage): Promise<boolean>;
  /** Removes a held (not sending) message, only the user's own when user is given; false otherwise. */
  spoolCancel(id: string, user?: string): Promise<HeldMessage | undefined>;
  /** Makes a held message due now (`queue release`); false when it is not held. */
  spoolReleaseNow(id: string, now: number): Promise<boolean>;
  /**
   * After a restart: every release under way goes back to held (sending and committing
   * rows alike, in one transaction); returns the rows that were committing (their MTA
   * may have accepted them: a release now may deliver a second copy).
   */
  spoolRecover(): Promise<HeldMessage[]>;
  /** The earliest next attempt of a held message (an index lookup, cheap at any size). */
  spoolNextDue(): Promise<number | undefined>;
  /** How many rows, their octets, and the earliest requested release (undefined when empty): a scan, so not per message. */
  spoolStats(): Promise<{ count: number; bytes: number; oldestRelease: number | undefined }>;
  /**
   * Stores shared by instances that may die while others run (PostgreSQL) give release
   * claims a lease and have the two methods below; a store without them (SQLite: one
   * host, recovered at start by spoolRecover) has claims that hold until released.
   *
   * Extends this caller's claim on a message being released by a lease from now; false
   * when the claim is no longer its own (taken over after it ran out).
   */
  spoolRenew?(id: string): Promise<boolean>;
  /**
   * Releases whose claimant's lease ran out (its process died or hung) go back to held,
   * sending and committing alike, in one statement; the committing ones are returned
   * as they were (the MTA may have accepted them, as after a crash: spoolRecover).
   * Each such row is returned to one caller at most, however many call at once.
   */
  spoolExpired?(): Promise<HeldMessage[]>;
  /** Where held content lives when the store keeps it itself (PostgreSQL); undefined: files in dataDir/spool (SQLite). */
  spoolContent(): SpoolContent | undefined;
}

/**
 * Held messages' content kept in the store, in chunks, so that any instance sharing it
 * can release any message. A message's content is written before its index row
 * (spoolInsert) and removed with it (spoolDelete and spoolCancel delete both at once);
 * chunks no row names and that nothing has
 * written to for a while are an upload that never finished (its client got no 250) or a
 * removal that never happened, and contentRemoveOrphans drops them.
 */
export interface SpoolContent {
  /** Stores one chunk, durably (its own commit), as number seq (1, 2, ...) of message id. */
  contentAppend(id: string, seq: number, data: Buffer): Promise<void>;
  /** The chunks of id after seq afterSeq, in order, at most limit. */
  contentRead(id: string, afterSeq: number, limit: number): Promise<Array<{ seq: number; data: Buffer }>>;
  contentRemove(id: string): Promise<void>;
  /** Drops content no index row names and not written to for idleMs; returns how many messages' worth. */
  contentRemoveOrphans(idleMs: number): Promise<number>;
  /** Held messages an earlier build left with their content a file in this gateway's spool directory (PostgreSQL: origin is this node). */
  contentOnDisk(): Promise<string[]>;
  /** That message's content is now in the store (contentAppend): any instance may release it. */
  contentMovedIn(id: string): Promise<void>;
}

/** The claim on a message being released is no longer this caller's (SpoolIndex.spoolCommitting). */
export class ReleaseClaimLost extends Error {
  override readonly name = 'ReleaseClaimLost';
  constructor(readonly id: string) {
    super(`the release claim on held message ${id} was lost (its lease ran out and another instance took it over)`);
  }
}

/**
 * Mod-sequence state of one mailbox as the gateway knows it (RFC 7162 emulated over an
 * upstream without CONDSTORE): the key for the other ModseqIndex calls and two values.
 *
 * Mod-sequences are JS numbers. RFC 7162 §3.1 allows positive 63-bit values; a number is
 * exact to 2^53 (9.0e15), and a mailbox starts at about 1.8e15 (see modseqOpen) and
 * grows by one per observed change: more than 10^15 changes away from the limit.
 */
export interface MailboxModseqState {
  /** Names this (user, mailbox, UIDVALIDITY) state; never reused for another one. */
  id: number;
  /** The mailbox's HIGHESTMODSEQ (RFC 7162 §3.1.2.1): at least every message's and every vanished UID's mod-sequence. */
  highestModseq: number;
  /** Expunges at or below this mod-sequence are not known (compacted away, or before the gateway watched the mailbox). */
  vanishedFloor: number;
}

/** One message of a mailbox's mod-sequence state. */
export interface MessageModseq {
  uid: number;
  /** The canonical flag set (lemonade/qresync/flags.ts): no \Recent, system flags first. */
  flags: string[];
  modseq: number;
}

/** A modseq state id that no longer exists: a UIDVALIDITY change dropped it (in this process or another). Open it again. */
export class ModseqStateGone extends Error {
  override readonly name = 'ModseqStateGone';
  constructor(readonly stateId: number) {
    super(`mod-sequence state ${stateId} is gone (its mailbox's UIDVALIDITY changed)`);
  }
}

/**
 * Per (user, mailbox, UIDVALIDITY): each message's flags and mod-sequence, the mailbox's
 * HIGHESTMODSEQ, and the UIDs expunged with the mod-sequence at which they vanished
 * (RFC 7162 §3.2.10 VANISHED), bounded by modseqCompact. Every change recorded gets a new
 * mod-sequence, assigned in one transaction so processes sharing the store never hand out
 * one twice.
 */
export interface ModseqIndex {
  /**
   * The state of (user, mailbox, uidValidity), created when absent. A different stored
   * UIDVALIDITY for (user, mailbox) drops the old state first: mod-sequences only mean
   * something within one UIDVALIDITY (RFC 7162 §3.2.5: QRESYNC parameters name the
   * UIDVALIDITY they belong to), and the old id then fails with ModseqStateGone.
   *
   * A new state starts with highestModseq = vanishedFloor = the creation time in
   * microseconds since the epoch (~1.8e15), not 0 or 1: HIGHESTMODSEQ must be positive
   * (RFC 7162 §7 mod-sequence-value), and if the state is ever lost (the store file
   * replaced, the row dropped) a new one still starts above every mod-sequence the old one
   * can have handed to clients, unless it issued more than one per microsecond of its
   * life. A client's mod-sequence below the floor gets a full answer ('too-old').
   */
  modseqOpen(user: string, mailbox: string, uidValidity: number): Promise<MailboxModseqState>;
  /** Stored messages with uid > afterUid in UID order, at most limit. */
  modseqRange(id: number, afterUid: number, limit: number): Promise<MessageModseq[]>;
  /**
   * In one transaction: each changed message whose flags differ from the stored ones
   * (compared canonically), or that is not stored, gets the next mod-sequence, in the
   * order given (so they increase); each expunged UID that is stored is removed and
   * recorded as vanished with the next mod-sequence. A message already stored with equal
   * flags, or an expunged UID not stored, changes nothing (another process recorded it
   * first: recording is idempotent). A "changed" UID that already vanished is ignored:
   * UIDs are never reused within a UIDVALIDITY (RFC 3501 §2.3.1.1), so that report is stale.
   *
   * Returns the new HIGHESTMODSEQ and, for each changed entry in order, the message's
   * mod-sequence after the call (new, or the stored one when unchanged; 0 when ignored
   * as vanished).
   */
  modseqRecord(id: number, change: { changed: Array<{ uid: number; flags: string[] }>; expunged: number[] }): Promise<{ highestModseq: number; modseqs: number[] }>;
  /**
   * Messages with modseq > since and uid > afterUid, in UID order, at most limit: FETCH
   * CHANGEDSINCE (RFC 7162 §3.1.4.1) and the flag part of QRESYNC (§3.2.5). Page with
   * afterUid = the last UID of the previous page.
   */
  modseqChangedSince(id: number, since: number, afterUid: number, limit: number): Promise<MessageModseq[]>;
  /**
   * UIDs expunged with modseq > since, ascending (RFC 7162 §3.2.10 VANISHED (EARLIER));
   * 'too-old' when since < vanishedFloor: some of those expunges are no longer known, and
   * the caller answers in full instead (RFC 7162 §3.2.5.2 allows a server that does not
   * keep every expunge to do so).
   */
  modseqVanishedSince(id: number, since: number): Promise<number[] | 'too-old'>;
  /** The stored messages among uids (absent ones are not in the map). */
  modseqGet(id: number, uids: readonly number[]): Promise<Map<number, MessageModseq>>;
  /** Keeps at most `keep` vanished records (the newest), raising vanishedFloor to the newest one dropped. */
  modseqCompact(id: number, keep: number): Promise<void>;
  modseqState(id: number): Promise<MailboxModseqState>;
}

export interface Store extends SpoolIndex, ModseqIndex {
  /**
   * The 128-bit mailbox access key of (user, mailbox) (RFC 4467 §5), created at random on
   * first use. Two first uses at once, in one process or several, end with one key.
   * Names are compared exactly, except INBOX (see normalizeMailbox).
   */
  mailboxAccessKey(user: string, mailbox: string): Promise<Buffer>;
  /**
   * The key of (user, mailbox) if one was ever made, without making one: checking a token
   * (URLFETCH, BURL) must not store a key for whatever mailbox name a URL carries.
   */
  existingMailboxAccessKey(user: string, mailbox: string): Promise<Buffer | undefined>;
  /**
   * RESETKEY (RFC 4467 §6.2): with a mailbox, that mailbox's key; without one, "all
   * mailbox access keys for the user". Tokens made with the old keys fail from the moment
   * this resolves.
   */
  resetAccessKeys(user: string, mailbox?: string): Promise<void>;
  /** A server-wide value (a persistent secret, say), or undefined when never set. */
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * The stored value of key, storing `value` first if there is none: for a secret made
   * once (several processes starting at once all end up with the first one stored).
   */
  initMeta(key: string, value: string): Promise<string>;
  /**
   * The cross-process half of a mailbox lock (APPENDUID/COPYUID serialization: see
   * lemonade/mailbox-locks.ts, which queues a process's own callers first). Resolves once
   * this caller holds `key`, at most holdMs (then it lapses, so a crashed holder cannot
   * keep it), or with undefined when `signal` fires first.
   */
  mailboxLock(key: string, holdMs: number, signal?: AbortSignal): Promise<StoreLock | undefined>;
  /** Idempotent; no method may be called after it. */
  close(): Promise<void>;
}

/** A held StoreLock; release() is idempotent. */
export interface StoreLock {
  release(): Promise<void>;
}

/** A store that cannot be opened or used, with the file or server it concerns. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
}

/**
 * The one place mailbox names are normalized for the store. RFC 3501 §5.1: the name
 * INBOX is case-insensitive; every other name is exact (and compared as given, in the
 * wire's modified UTF-7 or not, as long as callers are consistent).
 */
export function normalizeMailbox(name: string): string {
  return name.toUpperCase() === 'INBOX' ? 'INBOX' : name;
}

/** RFC 4467 §5 asks for at least 128 bits. */
export const ACCESS_KEY_BYTES = 16;
