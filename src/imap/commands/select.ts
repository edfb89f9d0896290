/**
 * SELECT and EXAMINE with CONDSTORE and QRESYNC (RFC 7162 §3.1.8, §3.2.5) over an upstream
 * without them. The plain SELECT runs upstream on the client's connection (its untagged
 * responses reach the client as usual); the gateway adds:
 *   - `* OK [HIGHESTMODSEQ n]` (§3.1.2.1, every successful SELECT/EXAMINE): from the store
 *     as it is when the session has not enabled CONDSTORE (a value that is behind only
 *     makes later changes look newer, never hides one), else after a full rescan;
 *   - with QRESYNC: `* VANISHED (EARLIER)` for the known UIDs expunged since the client's
 *     mod-sequence, then a FETCH (UID FLAGS MODSEQ) for each message changed since (§3.2.5);
 *   - `* OK [CLOSED]` when this SELECT closes a mailbox of a QRESYNC session (§3.2.11).
 */
import type { CommandContext, CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { reconcileSelected } from './condstore-sync.js';
import { answerAsUpstream } from './upstream-answer.js';
import { isQuotable, quoted, untagged } from '../protocol/writer.js';
import { SequenceSet, qresyncVanished } from '../protocol/sequence-set.js';
import { parseSelectParams, type QresyncParam } from '../../lemonade/qresync/params.js';
import { highestModseqCode, noModseqResponse, vanishedResponses } from '../../lemonade/qresync/responses.js';
import type { MailboxView } from '../../lemonade/qresync/view.js';
import { qresyncSelectBytes } from '../../metrics/metrics.js';
import { isStoreUnavailable } from '../../store/availability.js';

/** An untagged OK with the CLOSED response code (RFC 7162 §3.2.11, §7). */
const CLOSED_LINE = /^\* OK \[CLOSED\]/i;

/** Changed messages read from the store per call. */
const PAGE = 500;

export const select: CommandHandler = async (ctx, line) => {
  const name = line.items[0]?.type === 'atom' ? line.items[0].value.toUpperCase() : 'SELECT';
  const mailbox = stringArgument(line.items[1]);
  if (mailbox === undefined) return ctx.tagged(line.tag, 'BAD', `${name} expects a mailbox name`);
  const cs = ctx.condstore;
  const params = parseSelectParams(line.items.slice(2), { qresyncEnabled: cs.qresync });
  if (!params.ok) return ctx.tagged(line.tag, params.error.status, params.error.text, params.error.code);
  if (!isQuotable(mailbox)) return ctx.tagged(line.tag, 'BAD', 'Mailbox name not supported here');
  // §3.1.8: SELECT (CONDSTORE) and SELECT (QRESYNC ...) are CONDSTORE enabling commands.
  if (params.value.enablesCondstore) cs.enabled.add('CONDSTORE');
  const closing = ctx.state === 'selected';
  cs.deselect();
  // §3.2.11: exactly one [CLOSED], before anything about the new mailbox. Ours, since an
  // upstream without QRESYNC need not send one; one the upstream sends anyway (Dovecot
  // does whenever a mailbox was selected) is dropped. Without QRESYNC the upstream's
  // response codes reach the client as they would directly.
  const ownClosed = closing && cs.qresync;
  if (ownClosed) ctx.untagged('OK [CLOSED] Previous mailbox closed');

  const seen: { uidValidity?: number; exists?: number; uidNext?: number } = {};
  const r = await ctx.internalCommand(`${name} ${quoted(mailbox)}`, (l) => {
    if (ownClosed && CLOSED_LINE.test(l)) return true;
    observeSelectLine(l, seen);
    return false;
  });
  if (r.status !== 'OK') {
    // RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected.
    ctx.setSelected(false);
    return answerAsUpstream(ctx, line.tag, r);
  }
  ctx.setSelected(true);
  if (seen.uidValidity !== undefined) cs.selected = { mailbox, uidValidity: seen.uidValidity, exists: seen.exists ?? 0 };
  if (seen.uidValidity === undefined) {
    ctx.writeData(noModseqResponse());
    return answerAsUpstream(ctx, line.tag, r);
  }
  const index = ctx.lemonade.store;
  if (!cs.condstore) {
    let state;
    try {
      state = await index.modseqOpen(ctx.authenticatedUser!, mailbox, seen.uidValidity);
    } catch (err) {
      if (!isStoreUnavailable(err)) throw err;
      // A session that never asked for mod-sequences keeps working while the store is
      // away: the mailbox has none to show now (§3.1.2.2 NOMODSEQ), the SELECT stands.
      ctx.writeData(noModseqResponse());
      return answerAsUpstream(ctx, line.tag, r);
    }
    ctx.untagged(`OK [${highestModseqCode(state.highestModseq)}] Highest`);
    return answerAsUpstream(ctx, line.tag, r);
  }
  let view: MailboxView;
  try {
    view = await reconcileSelected(ctx, mailbox, seen.uidValidity, seen.exists ?? 0);
  } catch (err) {
    if (isStoreUnavailable(err)) return refuseUnavailable(ctx, name, mailbox, err);
    // The mailbox is selected upstream; without a view it has no mod-sequences (§3.1.2.2).
    ctx.log.warn({ err: (err as Error).message }, 'mailbox reconciliation failed');
    ctx.writeData(noModseqResponse());
    return answerAsUpstream(ctx, line.tag, r);
  }
  cs.view = view;
  ctx.untagged(`OK [${highestModseqCode(view.highestModseq)}] Highest`);
  const q = params.value.qresync;
  // §3.2.5: a UIDVALIDITY that differs means the client's cache is void; no changes are sent.
  try {
    if (q !== undefined && q.uidValidity === seen.uidValidity) await reportChanges(ctx, view, q, seen.uidNext);
  } catch (err) {
    if (isStoreUnavailable(err)) return refuseUnavailable(ctx, name, mailbox, err);
    throw err;
  }
  answerAsUpstream(ctx, line.tag, r);
};

/**
 * A CONDSTORE/QRESYNC SELECT whose mod-sequences cannot be had (the store is unavailable):
 * NO [UNAVAILABLE] rather than NOMODSEQ, which would cost a QRESYNC client its cache (it
 * tries again later instead). RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected,
 * so the upstream's is closed first: UNSELECT (RFC 3691) where advertised, else EXAMINE
 * and CLOSE, which expunges nothing from a read-only mailbox (§6.4.2). Nothing of either
 * reaches the client; the error goes to the session's one mapping (imap/session.ts).
 */
async function refuseUnavailable(ctx: CommandContext, name: string, mailbox: string, err: unknown): Promise<never> {
  ctx.setSelected(false);
  const hide = (): boolean => true;
  if (ctx.upstream?.capabilities.some((c) => c.toUpperCase() === 'UNSELECT')) {
    await ctx.internalCommand('UNSELECT', hide);
  } else {
    if (name !== 'EXAMINE') await ctx.internalCommand(`EXAMINE ${quoted(mailbox)}`, hide);
    await ctx.internalCommand('CLOSE', hide);
  }
  throw err;
}

/** UIDVALIDITY, EXISTS and UIDNEXT from the upstream's SELECT responses (RFC 3501 §7.1, §7.3.1). */
function observeSelectLine(l: string, seen: { uidValidity?: number; exists?: number; uidNext?: number }): void {
  let m = /^\* OK \[UIDVALIDITY ([0-9]+)\]/i.exec(l);
  if (m !== null) seen.uidValidity = Number(m[1]);
  m = /^\* ([0-9]+) EXISTS\b/i.exec(l);
  if (m !== null) seen.exists = Number(m[1]);
  m = /^\* OK \[UIDNEXT ([0-9]+)\]/i.exec(l);
  if (m !== null) seen.uidNext = Number(m[1]);
}

/**
 * §3.2.5: VANISHED (EARLIER) first, then the FETCH responses; only for the client's
 * known-uids when it gave them. Bytes are counted against what a full flag fetch costs.
 */
async function reportChanges(ctx: CommandContext, view: MailboxView, q: QresyncParam, uidNext: number | undefined): Promise<void> {
  const index = ctx.lemonade.store;
  // Store mod-sequences are JS numbers well below 2^53; a larger client value is simply newer than all.
  const since = Number(q.modSequence);
  const current = view.knownUids();
  const known = q.knownUids;
  let sent = 0;
  const write = async (data: Buffer): Promise<void> => {
    sent += data.length;
    if (!ctx.writeData(data)) await ctx.clientDrained();
  };
  const stored = await index.modseqVanishedSince(view.state.id, since);
  let vanished: SequenceSet;
  if (stored === 'too-old') {
    // Expunges that old are not remembered: every known UID that is gone (§3.2.5.2 seq-match limits it).
    const next = uidNext ?? (current.length > 0 ? current[current.length - 1]! + 1 : 1);
    vanished = qresyncVanished({ ...(known ? { knownUids: known } : {}), currentUids: current, uidNext: next, ...(q.seqMatch ? { seqMatch: q.seqMatch } : {}) });
  } else {
    vanished = SequenceSet.fromNumbers(known ? stored.filter((u) => known.has(u)) : stored);
  }
  for (const data of vanishedResponses(vanished, true)) await write(data);
  let after = 0;
  for (;;) {
    const rows = await index.modseqChangedSince(view.state.id, since, after, PAGE);
    for (const row of rows) {
      if (known !== undefined && !known.has(row.uid)) continue;
      const seq = view.seqOf(row.uid);
      if (seq === undefined) continue; // recorded by another session after this one's rescan
      await write(untagged(Buffer.from(`${seq} FETCH (UID ${row.uid} FLAGS (${row.flags.join(' ')}) MODSEQ (${row.modseq}))`, 'latin1')));
    }
    if (rows.length < PAGE) break;
    after = rows[rows.length - 1]!.uid;
  }
  qresyncSelectBytes.inc({ kind: 'sent' }, sent);
  qresyncSelectBytes.inc({ kind: 'full_equivalent' }, fullFlagFetchBytes(view));
}

/**
 * What `UID FETCH 1:* (UID FLAGS)` would have sent for this mailbox (the full resync a
 * client without QRESYNC does, \Recent aside): the cost QRESYNC saves.
 */
function fullFlagFetchBytes(view: MailboxView): number {
  // "* " seq " FETCH (UID " uid " FLAGS (" flags "))\r\n"
  const fixed = 2 + 12 + 8 + 4;
  let total = 0;
  for (let i = 0; i < view.count; i++) total += fixed + digits(i + 1) + digits(view.uids[i]!) + view.flags[i]!.length;
  return total;
}

function digits(n: number): number {
  return n < 10 ? 1 : Math.floor(Math.log10(n)) + 1;
}
