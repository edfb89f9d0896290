/**
 * FETCH and UID FETCH in a CONDSTORE session (RFC 7162 §3.1.4, §3.2.6) over an upstream
 * without mod-sequences. The upstream is asked for the client's items plus UID and FLAGS
 * (so the session's view learns every message it is shown, and a change of flags gets its
 * new mod-sequence before the response is relayed with MODSEQ added, see
 * lemonade/qresync/session-state.ts).
 *
 * CHANGEDSINCE n: the flags of the set are read again first (another client may have
 * changed them without this session being told), then only the messages whose
 * mod-sequence is above n are fetched. VANISHED (UID FETCH only, QRESYNC): the UIDs of the
 * set expunged since n come first, as `* VANISHED (EARLIER)` (§3.2.6).
 */
import type { CommandContext, CommandHandler } from './context.js';
import { condstoreView, messagesIn, parseMessageSet, rescanFlags } from './condstore-sync.js';
import { answerAsUpstream } from './upstream-answer.js';
import { uidForm } from './uid-form.js';
import { parseFetchModifiers } from '../../lemonade/qresync/params.js';
import { vanishedResponses } from '../../lemonade/qresync/responses.js';
import { SequenceSet } from '../protocol/sequence-set.js';
import type { MailboxView } from '../../lemonade/qresync/view.js';

/** RFC 3501 §6.4.5 macros, expanded so UID and FLAGS can be added to them. */
const MACROS: Record<string, string[]> = {
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};

export const fetch: CommandHandler = async (ctx, line) => {
  const { byUid, name, args } = uidForm(line, 'FETCH');
  const setArg = args[0];
  const parsed = parseFetchModifiers(args.slice(1), { uid: byUid, qresyncEnabled: ctx.condstore.qresync });
  if (setArg?.type !== 'atom') return ctx.tagged(line.tag, 'BAD', `${name} expects a sequence set`);
  if (!parsed.ok) return ctx.tagged(line.tag, parsed.error.status, parsed.error.text, parsed.error.code);
  const view = await condstoreView(ctx);
  if (view === undefined) return ctx.tagged(line.tag, 'BAD', 'No mailbox selected');
  const set = parseMessageSet(view, setArg.value, byUid);
  if (set === undefined) return ctx.tagged(line.tag, 'BAD', 'Invalid sequence set');
  const items = upstreamItems(parsed.value.upstreamItems);
  const changedSince = parsed.value.changedSince;
  if (changedSince === undefined) {
    const r = await ctx.internalCommand(`${name} ${setArg.value} ${items}`);
    return answerAsUpstream(ctx, line.tag, r);
  }
  if (!(await rescanFlags(ctx, view, setArg.value, byUid))) return ctx.tagged(line.tag, 'NO', 'Cannot read the flags of those messages');
  // Store mod-sequences are JS numbers well below 2^53; a larger client value is newer than all.
  const since = Number(changedSince);
  if (parsed.value.vanished) await reportVanished(ctx, view, set, since);
  const changed = messagesIn(view, set, byUid).filter((m) => view.modseqs[m.seq - 1]! > since);
  if (changed.length === 0) return ctx.tagged(line.tag, 'OK', `${name} completed`);
  const r = await ctx.internalCommand(`UID FETCH ${SequenceSet.fromNumbers(changed.map((m) => m.uid)).toString()} ${items}`);
  answerAsUpstream(ctx, line.tag, r);
};

/** The items for the upstream: the client's (MODSEQ aside, macros expanded) with UID and FLAGS. */
function upstreamItems(items: readonly string[]): string {
  const out: string[] = [];
  for (const item of items) out.push(...(MACROS[item.toUpperCase()] ?? [item]));
  const upper = out.map((s) => s.toUpperCase());
  if (!upper.includes('UID')) out.unshift('UID');
  if (!upper.includes('FLAGS')) out.push('FLAGS');
  return `(${out.join(' ')})`;
}

/**
 * §3.2.6: UIDs of the set expunged after `since`, from the store's record; when the record
 * does not go back that far, every UID of the set not in the mailbox (allowed: VANISHED
 * (EARLIER) may name UIDs the client never had, §3.2.10.1).
 */
async function reportVanished(ctx: CommandContext, view: MailboxView, set: SequenceSet, since: number): Promise<void> {
  const stored = await ctx.lemonade.store.modseqVanishedSince(view.state.id, since);
  const vanished = stored === 'too-old' ? set.missingFrom(view.knownUids()) : SequenceSet.fromNumbers(stored.filter((u) => set.has(u)));
  for (const data of vanishedResponses(vanished, true)) {
    if (!ctx.writeData(data)) await ctx.clientDrained();
  }
}
