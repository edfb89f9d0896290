/**
 * UID EXPUNGE (RFC 4315 §2.1) over an upstream without UIDPLUS: expunge only the \Deleted
 * messages in the given UID set. On the client's own connection: clear \Deleted on the
 * other deleted messages, EXPUNGE, set it back (the client sees the EXPUNGE responses as
 * usual). Not atomic: a message another session marks \Deleted during these steps is
 * expunged too (RFC 4315 §2.1 makes the same remark about clients emulating it).
 */
import type { CommandHandler } from './context.js';
import { searchResult } from '../protocol/responses.js';
import { formatSequenceSet as uidSet } from '../protocol/sequence-set.js';
import { isSequenceSet } from '../protocol/sequence-set.js';
import { highestModseqCode } from '../../lemonade/qresync/responses.js';


export const uidExpunge: CommandHandler = async (ctx, line) => {
  const set = line.items[2];
  if (line.items.length !== 3 || set?.type !== 'atom' || !isSequenceSet(set.value)) {
    return ctx.tagged(line.tag, 'BAD', 'UID EXPUNGE expects a UID set');
  }
  let keep: number[] | undefined;
  const search = await ctx.internalCommand(`UID SEARCH DELETED NOT UID ${set.value}`, (l) => {
    // Any other untagged line (an EXISTS, say) is the client's and must not reset the result.
    const uids = searchResult(l);
    if (uids !== undefined) keep = uids;
    return uids !== undefined;
  });
  if (search.status !== 'OK') return ctx.tagged(line.tag, search.status === 'NO' ? 'NO' : 'BAD', 'UID EXPUNGE needs a selected mailbox');
  const others = keep ?? [];
  if (others.length > 0) {
    const r = await ctx.internalCommand(`UID STORE ${uidSet(others)} -FLAGS.SILENT (\\Deleted)`);
    if (r.status !== 'OK') return ctx.tagged(line.tag, 'NO', 'UID EXPUNGE failed: cannot protect other deleted messages');
  }
  const expunged = await ctx.internalCommand('EXPUNGE');
  if (others.length > 0) await ctx.internalCommand(`UID STORE ${uidSet(others)} +FLAGS.SILENT (\\Deleted)`);
  if (expunged.status !== 'OK') return ctx.tagged(line.tag, 'NO', 'UID EXPUNGE failed');
  // RFC 7162 §3.2.9: once QRESYNC is enabled, the mailbox's HIGHESTMODSEQ after the expunges.
  const view = ctx.condstore.qresync ? ctx.condstore.view : undefined;
  if (view !== undefined) await view.settled();
  ctx.tagged(line.tag, 'OK', 'UID EXPUNGE completed', view === undefined ? undefined : highestModseqCode(view.highestModseq));
};
