/**
 * SEARCH and UID SEARCH in a CONDSTORE session (RFC 7162 §3.1.5, §3.1.6) over an upstream
 * without mod-sequences. The MODSEQ key is taken out of the program (params.ts); the rest
 * is searched upstream by UID, and the result is cut to the messages whose mod-sequence is
 * at least the key's value after the mailbox's flags were read again. The answer carries
 * the highest mod-sequence of what it found (§3.1.6). A program without MODSEQ goes
 * upstream as it is.
 */
import type { CommandHandler } from './context.js';
import { condstoreView, rescanFlags } from './condstore-sync.js';
import { answerAsUpstream } from './upstream-answer.js';
import { uidForm } from './uid-form.js';
import { formatValues, parseSearchModseq } from '../../lemonade/qresync/params.js';
import { searchResponse } from '../../lemonade/qresync/responses.js';
import { searchResult } from '../protocol/responses.js';

export const search: CommandHandler = async (ctx, line) => {
  const { byUid, name, args } = uidForm(line, 'SEARCH');
  const parsed = parseSearchModseq(args);
  if (!parsed.ok) return ctx.tagged(line.tag, parsed.error.status, parsed.error.text, parsed.error.code);
  if (parsed.value.program.length === 0) return ctx.tagged(line.tag, 'BAD', `${name} expects search keys`);
  // Strings that need a literal: internalCommand announces each synchronizing and waits for "+".
  const program = formatValues(parsed.value.program);
  const min = parsed.value.modseq;
  if (min === undefined) {
    const r = await ctx.internalCommand(Buffer.concat([Buffer.from(`${name} `), program]));
    return answerAsUpstream(ctx, line.tag, r);
  }
  const view = await condstoreView(ctx);
  if (view === undefined) return ctx.tagged(line.tag, 'BAD', 'No mailbox selected');
  if (view.count > 0 && !(await rescanFlags(ctx, view, '1:*', false))) return ctx.tagged(line.tag, 'NO', 'Cannot read the mailbox flags');
  let found: number[] = [];
  const r = await ctx.internalCommand(Buffer.concat([Buffer.from('UID SEARCH '), program]), (l) => {
    const uids = searchResult(l);
    if (uids === undefined) return false;
    found = found.concat(uids);
    return true;
  });
  if (r.status !== 'OK') return answerAsUpstream(ctx, line.tag, r);
  const floor = Number(min);
  const numbers: number[] = [];
  let highest = 0;
  for (const uid of found) {
    const seq = view.seqOf(uid);
    if (seq === undefined) continue;
    const modseq = view.modseqs[seq - 1]!;
    if (modseq < floor) continue;
    numbers.push(byUid ? uid : seq);
    highest = Math.max(highest, modseq);
  }
  numbers.sort((a, b) => a - b);
  ctx.writeData(searchResponse(numbers, numbers.length > 0 ? highest : undefined));
  answerAsUpstream(ctx, line.tag, r);
};
