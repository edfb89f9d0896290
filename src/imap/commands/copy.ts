/**
 * COPY and UID COPY with COPYUID (RFC 4315 §3) over an upstream without UIDPLUS. The
 * source UIDs come from the client's own session (UID SEARCH of the given set), the copy
 * runs as UID COPY of exactly those, in order, and the new UIDs are read from the target
 * mailbox on a side connection under the same per-mailbox lock APPENDs take. When anything
 * else arrived there meanwhile the answer has no COPYUID rather than a wrong one.
 */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { isQuotable, quoted } from '../protocol/writer.js';
import { appendLockKey, copiedUids, mailboxUids, type MailboxUids } from '../../lemonade/appenduid.js';
import { searchResult } from '../protocol/responses.js';
import { formatSequenceSet as uidSet, isSequenceSet } from '../protocol/sequence-set.js';
import { answerAsUpstream } from './upstream-answer.js';
import { uidForm } from './uid-form.js';

/** The upstream's own COPYUID (if any) is not what the gateway advertised: never shown. */
const COPYUID = /^COPYUID /i;

export const copy: CommandHandler = async (ctx, line) => {
  const { byUid, name, args } = uidForm(line, 'COPY');
  const set = args[0];
  const mailbox = stringArgument(args[1]);
  if (args.length !== 2 || set?.type !== 'atom' || !isSequenceSet(set.value) || mailbox === undefined) {
    return ctx.tagged(line.tag, 'BAD', `${name} expects a set and a mailbox`);
  }
  if (!isQuotable(mailbox)) return ctx.tagged(line.tag, 'BAD', 'Mailbox name not supported here');
  let source: number[] | undefined;
  const search = await ctx.internalCommand(`UID SEARCH ${byUid ? 'UID ' : ''}${set.value}`, (l) => {
    // Any other untagged line (an EXISTS, say) is the client's and must not reset the result.
    const uids = searchResult(l);
    if (uids !== undefined) source = uids;
    return uids !== undefined;
  });
  if (search.status !== 'OK') return ctx.tagged(line.tag, search.status === 'NO' ? 'NO' : 'BAD', `${name} needs a selected mailbox and a valid set`);
  const uids = (source ?? []).sort((a, b) => a - b);
  if (uids.length === 0) {
    // Nothing matches: the upstream's own answer (OK, or NO for a missing mailbox) is the answer.
    const r = await ctx.internalCommand(`${name} ${set.value} ${quoted(mailbox)}`);
    return answerAsUpstream(ctx, line.tag, r, undefined, COPYUID);
  }
  const user = ctx.authenticatedUser!;
  const lemonade = ctx.lemonade;
  const lease = await lemonade.appendLocks.acquire(appendLockKey(user, mailbox), ctx.ended);
  // The session ended while waiting: nothing was copied, and no one is there to answer.
  if (lease === undefined) return;
  try {
    // A side lookup that fails costs the COPYUID code, not the COPY; logged as APPEND's (session.ts).
    const before: MailboxUids | undefined = await lemonade.sidePool.withConnection(user, (c) => mailboxUids(c, mailbox)).catch((err: unknown) => {
      ctx.log.warn({ err: (err as Error).message }, 'COPYUID: mailbox status unavailable');
      return undefined;
    });
    const r = await ctx.internalCommand(`UID COPY ${uidSet(uids)} ${quoted(mailbox)}`);
    let code: string | undefined;
    if (r.status === 'OK' && before !== undefined) {
      const known = before;
      const target = await lemonade.sidePool.withConnection(user, (c) => copiedUids(c, mailbox, known, uids.length)).catch((err: unknown) => {
        ctx.log.warn({ err: (err as Error).message }, 'COPYUID: new UIDs unavailable');
        return undefined;
      });
      // Past the hold bound another command may have added to the mailbox: no code rather than a wrong one.
      if (target !== undefined && !lease.expired) code = `COPYUID ${before.uidValidity} ${uidSet(uids)} ${uidSet(target)}`;
    }
    return answerAsUpstream(ctx, line.tag, r, code, COPYUID);
  } finally {
    lease.release();
  }
};
