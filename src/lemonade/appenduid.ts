/**
 * APPENDUID for an upstream without UIDPLUS (RFC 4315 §3): which UID did the message we
 * just appended get? The gateway serializes its own APPENDs per mailbox (mailbox-locks.ts),
 * notes UIDNEXT before, and afterwards looks at the messages from there on through a side
 * connection. One candidate is the answer. More than one means something else appended
 * meanwhile (a client not going through the gateway): the one whose size matches ours,
 * and if sizes tie too, no answer rather than a wrong one.
 */
import { examine } from './fetch-part.js';
import type { UpstreamConnection } from '../imap/upstream.js';
import { astringParts } from '../imap/protocol/writer.js';
import { fetchAttributes, numberValue, searchNumbers } from '../imap/protocol/responses.js';
import { parseStatusLine } from '../imap/protocol/status-line.js';
import { readAppendHead, readAppendMessage, recognizedMailbox } from '../imap/protocol/append-line.js';
import { normalizeMailbox } from '../store/store.js';

/**
 * The key of a mailbox's lock in lemonade.appendLocks: one per user and mailbox (INBOX in
 * any case), taken by every APPEND and COPY whose UIDs the gateway works out, so none
 * lands between another's UIDNEXT and its lookup.
 */
export function appendLockKey(user: string, mailbox: string): string {
  return `${user}\0${normalizeMailbox(mailbox)}`;
}

export interface MailboxUids {
  uidValidity: number;
  uidNext: number;
}

/**
 * UIDVALIDITY and UIDNEXT of a mailbox from the untagged OK codes of an EXAMINE (RFC 3501
 * §6.3.1-2); undefined if it does not exist or the server leaves a code out. Not STATUS:
 * on a side connection the mailbox may be the one selected there, and RFC 3501 §6.3.10
 * lets STATUS of the selected mailbox be stale (Dovecot's is: an APPEND by another
 * session does not move its UIDNEXT), which would make another message look like ours.
 */
export async function mailboxUids(conn: UpstreamConnection, mailbox: string): Promise<MailboxUids | undefined> {
  const r = await conn.command(['EXAMINE ', ...astringParts(mailbox)]);
  if (r.status !== 'OK') return undefined;
  const code = (name: string): number | undefined => {
    for (const c of r.codes) {
      const m = /^(\S+) (\d+)$/.exec(c.trim());
      if (m !== null && m[1]!.toUpperCase() === name) return Number(m[2]);
    }
    return undefined;
  };
  const uidValidity = code('UIDVALIDITY');
  const uidNext = code('UIDNEXT');
  return uidValidity !== undefined && uidNext !== undefined ? { uidValidity, uidNext } : undefined;
}

/** The UID of the message of `size` octets appended at or after `before.uidNext`; undefined when not certain. */
export async function appendedUid(conn: UpstreamConnection, mailbox: string, before: MailboxUids, size: number): Promise<number | undefined> {
  if ((await examine(conn, mailbox, before.uidValidity)) !== 'ok') return undefined;
  const r = await conn.command([`UID FETCH ${before.uidNext}:* (UID RFC822.SIZE)`]);
  if (r.status !== 'OK') return undefined;
  const candidates: Array<{ uid: number; size: number }> = [];
  for (const line of r.untagged) {
    const values = fetchAttributes(line);
    const uid = numberValue(values?.get('UID'));
    const octets = numberValue(values?.get('RFC822.SIZE'));
    // "n:*" always includes the last message, even below n (RFC 3501 §6.4.8): skip that one.
    if (uid !== undefined && octets !== undefined && uid >= before.uidNext) candidates.push({ uid, size: octets });
  }
  if (candidates.length === 1) return candidates[0]!.uid;
  // RFC822.SIZE counts CRLF line ends (RFC 3501 §2.3.4), which is what we sent when the
  // client's message had them; a bare-LF message may not match, and then gets no UID.
  const sized = candidates.filter((c) => c.size === size);
  return sized.length === 1 ? sized[0]!.uid : undefined;
}

/** "tag APPEND mailbox [flags] [date] {n}" (RFC 3501 §6.3.11): the mailbox (wire form) and the literal's size. */
export function plainAppend(first: Buffer): { mailbox: string; size: number } | undefined {
  const text = first.toString('latin1');
  const head = readAppendHead(text);
  if (head === undefined || !recognizedMailbox(head.mailbox)) return undefined;
  const data = readAppendMessage(text, head.end)?.data;
  // Twelve digits: a size any message can have, and a number that stays exact.
  if (data?.form !== 'literal' || data.digits.length > 12) return undefined;
  return { mailbox: head.mailbox.name, size: Number(data.digits) };
}

/**
 * The tagged completion with our APPENDUID (RFC 4315 §3) in place of any the upstream
 * gave without advertising UIDPLUS (such codes are not to be trusted, nor shown).
 */
export function withAppendUid(line: Buffer, uidValidity: number, uid: number | undefined): Buffer {
  const status = parseStatusLine(line);
  if (status?.status !== 'OK') return line;
  const ours = uid === undefined ? '' : `[APPENDUID ${uidValidity} ${uid}] `;
  // Any other code the upstream gave is passed on after ours, as part of the text.
  const theirs = status.code === undefined || /^(?:APPENDUID|COPYUID) /i.test(status.code) ? '' : `[${status.code}] `;
  const lineEnd = line.at(-1) !== 0x0a ? '' : line.at(-2) === 0x0d ? '\r\n' : '\n';
  return Buffer.from(`${status.tag} OK ${ours}${theirs}${status.text}${lineEnd}`, 'latin1');
}

/** The UIDs that messages copied into a mailbox got, in order, when exactly `count` arrived from before.uidNext on. */
export async function copiedUids(conn: UpstreamConnection, mailbox: string, before: MailboxUids, count: number): Promise<number[] | undefined> {
  if ((await examine(conn, mailbox, before.uidValidity)) !== 'ok') return undefined;
  const r = await conn.command([`UID SEARCH UID ${before.uidNext}:*`]);
  if (r.status !== 'OK') return undefined;
  const found = r.untagged.map(searchNumbers).find((n) => n !== undefined);
  // "n:*" always takes in the highest UID (RFC 3501 §9 seq-range), even below n: not a copy.
  const uids = (found ?? []).filter((u) => u >= before.uidNext);
  uids.sort((a, b) => a - b);
  // Anything else arriving meanwhile makes the mapping uncertain: no COPYUID then.
  return uids.length === count ? uids : undefined;
}
