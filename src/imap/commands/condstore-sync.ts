/**
 * What the CONDSTORE/QRESYNC command handlers (select, fetch, store, search) share: the
 * upstream's tagged answer under the client's tag, the full rescan that builds a session's
 * view of its selected mailbox, and the smaller rescans that bring the view up to date
 * before an answer depends on it. All of it runs on the client's own upstream connection
 * (internalCommand), so message numbers are the client's.
 */
import type { CommandContext } from './context.js';
import { MailboxReconciler } from '../../lemonade/qresync/reconcile.js';
import { MailboxView } from '../../lemonade/qresync/view.js';
import { fetchHeadFlags, parseFetchHead } from '../../lemonade/qresync/responses.js';
import { highestModseqCode } from '../../lemonade/qresync/responses.js';
import { SequenceSet } from '../protocol/sequence-set.js';
import { fetchAttributes, numberValue } from '../protocol/responses.js';
import type { ParsedLine } from '../protocol/parser.js';
import { astringParts } from '../protocol/writer.js';
import { qresyncChanges, qresyncReconcileDuration, qresyncReconciliations } from '../../metrics/metrics.js';

/** The message number, UID and flags of a `* n FETCH (...)` line the gateway asked for (no literals in it). */
function fetchLine(b: Buffer): { seq: number; uid?: number; flags?: string[] } | undefined {
  const info = parseFetchHead(b);
  if (info === undefined) return undefined;
  const flags = fetchHeadFlags(b, info);
  return { seq: info.number, ...(info.uid === undefined ? {} : { uid: info.uid }), ...(flags === undefined ? {} : { flags }) };
}

/**
 * The full rescan (lemonade/qresync/reconcile.ts) of the mailbox the client just selected,
 * on its own connection: UID FETCH 1:* (FLAGS) streamed into the reconciler, which also
 * gives the view its mod-sequences and flags (no second pass over the store). Throws when the upstream or the store fails.
 */
export async function reconcileSelected(ctx: CommandContext, mailbox: string, uidValidity: number, exists: number): Promise<MailboxView> {
  const index = ctx.lemonade.store;
  const started = process.hrtime.bigint();
  try {
    const state = await index.modseqOpen(ctx.authenticatedUser!, mailbox, uidValidity);
    const upstream = ctx.upstream;
    const reconciler = new MailboxReconciler(index, state, {
      expectedCount: exists,
      pause: () => upstream?.pause(),
      resume: () => upstream?.resume(),
    });
    if (exists > 0) {
      const r = await ctx.internalCommand('UID FETCH 1:* (FLAGS)', (_line, raw) => {
        const f = fetchLine(raw);
        if (f === undefined) return false;
        if (f.uid !== undefined && f.flags !== undefined) reconciler.push(f.uid, f.flags);
        return true;
      });
      if (r.status !== 'OK') {
        const err = new Error(`upstream UID FETCH 1:* (FLAGS) answered ${r.status}`);
        await reconciler.abort(err);
        throw err;
      }
    }
    const result = await reconciler.finish();
    // Bounded history of expunges (RFC 7162 §3.2.5.2 allows forgetting old ones).
    await index.modseqCompact(state.id, ctx.config.imap.qresync.vanishedKept);
    const view = MailboxView.create(index, state, mailbox, uidValidity, result);
    qresyncReconciliations.inc({ result: 'ok' });
    qresyncChanges.inc({ kind: 'changed' }, result.changed);
    qresyncChanges.inc({ kind: 'expunged' }, result.expunged);
    ctx.log.debug({ messages: result.count, changed: result.changed, expunged: result.expunged }, 'mailbox reconciled');
    return view;
  } catch (err) {
    qresyncReconciliations.inc({ result: 'error' });
    throw err;
  } finally {
    qresyncReconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/**
 * Brings the view up to date for the messages `set` names (message numbers, or UIDs with
 * byUid): their flags as the upstream has them now, a change recorded with a new
 * mod-sequence. An answer that depends on mod-sequences (CHANGEDSINCE, UNCHANGEDSINCE,
 * SEARCH MODSEQ) needs this: another client may have changed flags upstream without this
 * session being told yet. Messages only announced by EXISTS are learnt on the way.
 */
export async function rescanFlags(ctx: CommandContext, view: MailboxView, set: string, byUid: boolean): Promise<boolean> {
  const seen: Array<{ uid: number; flags: string[] }> = [];
  const r = await ctx.internalCommand(`${byUid ? 'UID ' : ''}FETCH ${set} (UID FLAGS)`, (_line, raw) => {
    const f = fetchLine(raw);
    if (f === undefined) return false;
    if (f.uid === undefined || f.flags === undefined) return true;
    view.place(f.seq, f.uid);
    seen.push({ uid: f.uid, flags: f.flags });
    return true;
  });
  if (r.status !== 'OK') return false;
  const changed = seen.filter((m) => view.differs(m.uid, m.flags));
  await view.record(changed);
  await view.settled();
  return true;
}

/** Learns the UIDs and flags of messages announced by EXISTS and not seen since. */
export async function catchUp(ctx: CommandContext, view: MailboxView): Promise<void> {
  const first = view.firstUnknown();
  if (first === undefined) return view.settled();
  await rescanFlags(ctx, view, `${first}:*`, false);
}

/**
 * The session's view for a command that needs mod-sequences: the one it has, or (the
 * first CONDSTORE enabling command in a mailbox selected without it, RFC 7162 §3.1) one
 * built now, announced with `* OK [HIGHESTMODSEQ n]` (§3.1.2.1). Undefined when no mailbox
 * is selected; throws when the rescan fails.
 */
export async function condstoreView(ctx: CommandContext): Promise<MailboxView | undefined> {
  const cs = ctx.condstore;
  cs.enabled.add('CONDSTORE');
  if (cs.view !== undefined) return cs.view;
  const selected = cs.selected;
  if (selected === undefined || ctx.state !== 'selected') return undefined;
  const view = await reconcileSelected(ctx, selected.mailbox, selected.uidValidity, selected.exists);
  cs.view = view;
  ctx.untagged(`OK [${highestModseqCode(view.highestModseq)}] Highest`);
  return view;
}

/** RFC 3501 §9 sequence-set against the view: "*" is the last message (or the highest UID). */
export function parseMessageSet(view: MailboxView, text: string, byUid: boolean): SequenceSet | undefined {
  const largest = byUid ? (view.knownUids().at(-1) ?? 0) || 1 : Math.max(view.count, 1);
  try {
    return SequenceSet.parse(text, { largest });
  } catch {
    return undefined;
  }
}

/** The messages of the set that are in the view: their message numbers and UIDs, ascending. */
export function messagesIn(view: MailboxView, set: SequenceSet, byUid: boolean): Array<{ seq: number; uid: number }> {
  const out: Array<{ seq: number; uid: number }> = [];
  if (byUid) {
    for (const uid of set.intersect(view.knownUids())) out.push({ seq: view.seqOf(uid)!, uid });
    return out;
  }
  for (const [lo, hi] of set.ranges()) {
    for (let seq = lo; seq <= Math.min(hi, view.count); seq++) {
      const uid = view.uids[seq - 1]!;
      if (uid !== 0) out.push({ seq, uid });
    }
  }
  return out;
}

/**
 * The full rescan of a mailbox the client has not selected (STATUS HIGHESTMODSEQ, RFC 7162
 * §3.1.9), on a side connection so the client's own selected mailbox is not disturbed:
 * EXAMINE (nothing marked \Seen, no \Recent taken), then UID FETCH 1:* (FLAGS) streamed
 * into the reconciler as SELECT's rescan does. The result is the store's HIGHESTMODSEQ
 * with every upstream change since the last rescan counted: without the rescan a flag
 * changed by another client would leave the value as it was, and a client that compares
 * it with its cached one would skip the mailbox. Throws when the side connection, the
 * upstream or the store fails, and when the mailbox's UIDVALIDITY is no longer `uidValidity`.
 */
export async function reconcileAside(ctx: CommandContext, mailbox: string, uidValidity: number): Promise<number> {
  const index = ctx.lemonade.store;
  const started = process.hrtime.bigint();
  try {
    const highest = await ctx.lemonade.sidePool.withConnection(ctx.authenticatedUser!, async (conn) => {
      const examined = await conn.command(['EXAMINE ', ...astringParts(mailbox)]);
      if (examined.status !== 'OK') throw new Error(`upstream EXAMINE answered ${examined.status}`);
      const code = examined.codes.find((c) => /^UIDVALIDITY /i.test(c));
      if (code === undefined || Number(code.slice('UIDVALIDITY '.length)) !== uidValidity) throw new Error('UIDVALIDITY changed meanwhile');
      const exists = examined.untagged.map(existsCount).find((n) => n !== undefined) ?? 0;
      const state = await index.modseqOpen(ctx.authenticatedUser!, mailbox, uidValidity);
      const reconciler = new MailboxReconciler(index, state, { expectedCount: exists, pause: () => conn.pause(), resume: () => conn.resume() });
      if (exists > 0) {
        const r = await conn.command(['UID FETCH 1:* (FLAGS)'], {
          onUntagged: (line) => {
            const values = fetchAttributes(line);
            if (values === undefined) return false;
            const uid = numberValue(values.get('UID'));
            const flags = values.get('FLAGS');
            if (uid !== undefined && flags?.type === 'list') reconciler.push(uid, flags.items.flatMap((f) => (f.type === 'atom' ? [f.value] : [])));
            return true;
          },
        });
        if (r.status !== 'OK') {
          const err = new Error(`upstream UID FETCH 1:* (FLAGS) answered ${r.status}`);
          await reconciler.abort(err);
          throw err;
        }
      }
      const result = await reconciler.finish();
      await index.modseqCompact(state.id, ctx.config.imap.qresync.vanishedKept);
      qresyncChanges.inc({ kind: 'changed' }, result.changed);
      qresyncChanges.inc({ kind: 'expunged' }, result.expunged);
      return result.highestModseq;
    });
    qresyncReconciliations.inc({ result: 'ok' });
    return highest;
  } catch (err) {
    qresyncReconciliations.inc({ result: 'error' });
    throw err;
  } finally {
    qresyncReconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/** `* n EXISTS` (RFC 3501 §7.3.1): n; undefined for any other response. */
function existsCount(line: ParsedLine): number | undefined {
  const [n, name] = line.items;
  return name?.type === 'atom' && name.value.toUpperCase() === 'EXISTS' ? numberValue(n) : undefined;
}
