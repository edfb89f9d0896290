/**
 * STORE and UID STORE in a CONDSTORE session (RFC 7162 §3.1.3) over an upstream without
 * mod-sequences.
 *
 * The upstream always gets the non-.SILENT form: its FETCH responses tell the session's
 * view what changed (each change gets its mod-sequence there and the response is relayed
 * with MODSEQ), and §3.1.3 wants an untagged FETCH with MODSEQ even for .SILENT once
 * CONDSTORE is on.
 *
 * UNCHANGEDSINCE n: the set's flags are read again, messages whose mod-sequence is above n
 * are left alone and reported in `[MODIFIED ...]` (message numbers for STORE, UIDs for UID
 * STORE), and the rest is stored by UID. Not atomic against another client storing between
 * the read and the write: the upstream has no conditional store to do better with.
 */
import type { CommandHandler } from './context.js';
import { condstoreView, messagesIn, parseMessageSet, rescanFlags } from './condstore-sync.js';
import { uidForm } from './uid-form.js';
import { answerAsUpstream } from './upstream-answer.js';
import { parseStoreModifiers } from '../../lemonade/qresync/params.js';
import { modifiedCode } from '../../lemonade/qresync/responses.js';
import { SequenceSet } from '../protocol/sequence-set.js';

export const store: CommandHandler = async (ctx, line) => {
  const { byUid, name, args } = uidForm(line, 'STORE');
  const setArg = args[0];
  if (setArg?.type !== 'atom') return ctx.tagged(line.tag, 'BAD', `${name} expects a sequence set`);
  const parsed = parseStoreModifiers(args.slice(1));
  if (!parsed.ok) return ctx.tagged(line.tag, parsed.error.status, parsed.error.text, parsed.error.code);
  const view = await condstoreView(ctx);
  if (view === undefined) return ctx.tagged(line.tag, 'BAD', 'No mailbox selected');
  const set = parseMessageSet(view, setArg.value, byUid);
  if (set === undefined) return ctx.tagged(line.tag, 'BAD', 'Invalid sequence set');
  const p = parsed.value;
  const item = `${p.operation === 'add' ? '+' : p.operation === 'remove' ? '-' : ''}FLAGS (${p.flags.join(' ')})`;
  if (p.unchangedSince === undefined) {
    const r = await ctx.internalCommand(`${name} ${setArg.value} ${item}`);
    return answerAsUpstream(ctx, line.tag, r);
  }
  if (!(await rescanFlags(ctx, view, setArg.value, byUid))) return ctx.tagged(line.tag, 'NO', 'Cannot read the flags of those messages');
  // mod-sequence-valzer up to 2^63-1; store values are far below 2^53.
  const limit = Number(p.unchangedSince);
  const messages = messagesIn(view, set, byUid);
  const failed = messages.filter((m) => view.modseqs[m.seq - 1]! > limit);
  const passing = messages.filter((m) => view.modseqs[m.seq - 1]! <= limit);
  let r: { status: string; line: string } | undefined;
  if (passing.length > 0) r = await ctx.internalCommand(`UID STORE ${SequenceSet.fromNumbers(passing.map((m) => m.uid)).toString()} ${item}`);
  const code = failed.length > 0 ? modifiedCode(failed.map((m) => (byUid ? m.uid : m.seq))) : undefined;
  if (r === undefined || r.status === 'OK') {
    return ctx.tagged(line.tag, 'OK', failed.length > 0 ? 'Conditional STORE failed for some messages' : `${name} completed`, code);
  }
  answerAsUpstream(ctx, line.tag, r);
};
