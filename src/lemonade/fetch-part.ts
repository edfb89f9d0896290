/**
 * Fetching one message, section or partial range from the upstream on a side connection,
 * streamed to a sink: what URLFETCH (RFC 4467 §6.3), CATENATE URL parts (RFC 4469 §3) and
 * BURL (RFC 4468 §3) all need. The mailbox is opened with EXAMINE (RFC 3501 §6.3.2), so
 * nothing is marked \Seen and no \Recent flag is taken from the user's own session.
 */
import type { LiteralSink, UpstreamConnection } from '../imap/upstream.js';
import { astringParts } from '../imap/protocol/writer.js';
import { fetchAttributes, numberValue } from '../imap/protocol/responses.js';

export interface PartRef {
  /** The mailbox name as the upstream knows it (modified UTF-7, RFC 3501 §5.1.3). */
  mailbox: string;
  uidValidity?: number;
  uid: number;
  /** RFC 3501 §6.4.5 section-spec ("2", "1.2.MIME", "HEADER"); undefined: the whole message. */
  section?: string;
  /** RFC 5092 ;PARTIAL=offset[.length]. */
  partial?: { offset: number; length?: number };
}

/** Why a part could not be had; the caller maps it to NIL, [BADURL] or a 5xx. */
export type PartFailure =
  | 'no-mailbox' // EXAMINE refused: it does not exist, or the user may not see it
  | 'uidvalidity' // the mailbox was recreated since the URL was made (RFC 5092 §6)
  | 'no-message' // no message with that UID
  | 'no-section'; // the upstream returned no data for the section

export type PartResult = { ok: true; size: number } | { ok: false; reason: PartFailure };

/**
 * The sink is asked for at the moment the size is known (a literal's announcement, or a
 * quoted string's end), so the caller can write a `{size}` header first.
 */
export type SinkFactory = (size: number) => LiteralSink;

/** RFC 3501 §9 fetch-att: BODY.PEEK[section]<partial>, never setting \Seen. */
export function fetchItem(ref: Pick<PartRef, 'section' | 'partial'>): string {
  const partial = ref.partial ? `<${ref.partial.offset}.${ref.partial.length ?? 4294967295}>` : '';
  return `BODY.PEEK[${ref.section ?? ''}]${partial}`;
}

/**
 * EXAMINE (RFC 3501 §6.3.2) on a side connection, checking UIDVALIDITY when one is
 * expected (RFC 5092 §6: a URL made before the mailbox was recreated must not resolve).
 */
export async function examine(conn: UpstreamConnection, mailbox: string, uidValidity?: number): Promise<'ok' | 'no-mailbox' | 'uidvalidity'> {
  const examined = await conn.command(['EXAMINE ', ...astringParts(mailbox)]);
  if (examined.status !== 'OK') return 'no-mailbox';
  if (uidValidity === undefined) return 'ok';
  const code = examined.codes.find((c) => /^UIDVALIDITY /i.test(c));
  return code !== undefined && Number(code.slice('UIDVALIDITY '.length)) === uidValidity ? 'ok' : 'uidvalidity';
}

/**
 * Whether the message a URL names is there (GENURLAUTH, RFC 4467 §6.1: a URL is only
 * authorized for a message of the user's): the mailbox exists, has the URL's UIDVALIDITY
 * when it gives one (RFC 5092 §6), and holds the UID. EXAMINE, so nothing is marked \Seen.
 */
export async function messageExists(conn: UpstreamConnection, ref: Pick<PartRef, 'mailbox' | 'uidValidity' | 'uid'>): Promise<'ok' | 'no-mailbox' | 'uidvalidity' | 'no-message'> {
  const opened = await examine(conn, ref.mailbox, ref.uidValidity);
  if (opened !== 'ok') return opened;
  const result = await conn.command([`UID FETCH ${ref.uid} (UID)`]);
  if (result.status !== 'OK') return 'no-message';
  // "UID FETCH n" of a UID not in the mailbox is OK with no response (RFC 3501 §6.4.8).
  return result.untagged.some((line) => numberValue(fetchAttributes(line)?.get('UID')) === ref.uid) ? 'ok' : 'no-message';
}

export async function fetchPart(conn: UpstreamConnection, ref: PartRef, sinkFor: SinkFactory): Promise<PartResult> {
  const opened = await examine(conn, ref.mailbox, ref.uidValidity);
  if (opened !== 'ok') return { ok: false, reason: opened };
  let streamed: number | undefined;
  const result = await conn.command([`UID FETCH ${ref.uid} (${fetchItem(ref)})`], {
    literalSink: (_announcedBy, size) => {
      // Only the one body item was asked for; any other literal is not ours to stream.
      if (streamed !== undefined) return undefined;
      streamed = size;
      return sinkFor(size);
    },
  });
  if (result.status !== 'OK') return { ok: false, reason: 'no-message' };
  // A server may leave UID out of a UID FETCH response only against RFC 3501 §6.4.8.
  const fetched = result.untagged.map(fetchAttributes).find((values) => numberValue(values?.get('UID')) === ref.uid);
  if (fetched === undefined) return { ok: false, reason: 'no-message' };
  if (streamed !== undefined) return { ok: true, size: streamed };
  // Small content may come quoted; NIL means the section does not exist.
  const body = [...fetched].find(([name]) => name.startsWith('BODY['))?.[1];
  if (body === undefined || body.type !== 'string') return { ok: false, reason: 'no-section' };
  const sink = sinkFor(body.value.length);
  sink.write(body.value);
  sink.end();
  return { ok: true, size: body.value.length };
}
