/**
 * STATUS (RFC 3501 §6.3.10) while the gateway emulates CONDSTORE (RFC 7162) over an
 * upstream without it. The HIGHESTMODSEQ status item (§3.1.9) is the emulation's to
 * answer: the upstream never sees it, because a Dovecot that has not advertised CONDSTORE
 * still executes it and turns on its own mod-sequences for the mailbox, and every later
 * SELECT then carries the upstream's [HIGHESTMODSEQ] next to ours (issue 15 §4).
 *
 *   C: a STATUS Drafts (MESSAGES HIGHESTMODSEQ)
 *   (upstream: STATUS "Drafts" (MESSAGES UIDVALIDITY))
 *   S: * STATUS "Drafts" (MESSAGES 3 HIGHESTMODSEQ 1789000000000012)
 *   S: a OK Status completed.
 *
 * The other items go upstream as the client wrote them, so the upstream decides what is
 * valid (a bad item still gets its BAD); UIDVALIDITY is asked for too, to find the
 * mailbox's mod-sequence state in the store, and left out of the answer when the client
 * did not ask for it. The value is the store's after a rescan of the mailbox on a side
 * connection (condstore-sync.ts reconcileAside), so changes made upstream since the last
 * rescan count. Without side connections (no imap.master) it is the store's as it is,
 * like SELECT's in a session without CONDSTORE. When the rescan fails it is 0, which
 * §3.1.2.2 / §7 give to a mailbox without persistent mod-sequences: the client then does a
 * full resync rather than trust a value that may hide a change.
 *
 * §3.1: a STATUS with HIGHESTMODSEQ is a CONDSTORE enabling command (once it succeeded).
 */
import type { CommandHandler } from './context.js';
import { reconcileAside } from './condstore-sync.js';
import { answerAsUpstream } from './upstream-answer.js';
import { formatValues } from '../../lemonade/qresync/params.js';
import { stringArgument } from './arguments.js';
import { isStoreUnavailable } from '../../store/availability.js';
import type { ImapValue } from '../protocol/parser.js';

/** `* STATUS mailbox (att value ...)` with the mailbox quoted or an atom (a literal's first segment does not match). */
const STATUS_LINE = /^\* STATUS ((?:"(?:[^"\\\r\n]|\\.)*"|[^\s(){"\\]+)) \(([^()\r\n]*)\)\r?\n?$/i;

export const status: CommandHandler = async (ctx, line) => {
  const args = line.items.slice(1);
  const mailbox = stringArgument(args[0]);
  const list = args[1];
  const asked = list?.type === 'list' && args.length === 2 && list.items.some(isHighestModseq);
  // Strings that need a literal: internalCommand announces each synchronizing and waits for "+".
  const send = (items: readonly ImapValue[]): Buffer => Buffer.concat([Buffer.from('STATUS '), formatValues(items)]);
  if (!asked || mailbox === undefined) {
    // Nothing of CONDSTORE in it: the command as the client wrote it (a malformed one gets the upstream's BAD).
    return answerAsUpstream(ctx, line.tag, await ctx.internalCommand(send(args)));
  }
  const items = list.items.filter((v) => !isHighestModseq(v));
  const wantsUidValidity = items.some((v) => isAtom(v, 'UIDVALIDITY'));
  if (!wantsUidValidity) items.push({ type: 'atom', value: 'UIDVALIDITY' });
  const command = send([args[0]!, { type: 'list', items }]);

  let seen: { mailbox: string; attributes: string[]; uidValidity: number } | undefined;
  const r = await ctx.internalCommand(command, (l) => {
    if (seen !== undefined) return false;
    const m = STATUS_LINE.exec(l);
    if (m === null) return false;
    const tokens = m[2]!.split(' ').filter((s) => s !== '');
    const attributes: string[] = [];
    let uidValidity: number | undefined;
    for (let i = 0; i + 1 < tokens.length; i += 2) {
      if (tokens[i]!.toUpperCase() === 'UIDVALIDITY') {
        uidValidity = Number(tokens[i + 1]);
        if (!wantsUidValidity) continue;
      }
      attributes.push(`${tokens[i]} ${tokens[i + 1]}`);
    }
    if (uidValidity === undefined || !Number.isSafeInteger(uidValidity)) return false;
    seen = { mailbox: m[1]!, attributes, uidValidity };
    return true;
  });
  if (r.status !== 'OK' || seen === undefined) return answerAsUpstream(ctx, line.tag, r);
  const highest = await highestModseq(ctx, mailbox, seen.uidValidity);
  // Once it succeeded: a refused command (the upstream's NO, the store unavailable) enables nothing.
  ctx.condstore.enabled.add('CONDSTORE');
  ctx.untagged(`STATUS ${seen.mailbox} (${[...seen.attributes, `HIGHESTMODSEQ ${highest}`].join(' ')})`);
  answerAsUpstream(ctx, line.tag, r);
};

async function highestModseq(ctx: Parameters<CommandHandler>[0], mailbox: string, uidValidity: number): Promise<number> {
  if (!ctx.lemonade.sidePool.available) return (await ctx.lemonade.store.modseqOpen(ctx.authenticatedUser!, mailbox, uidValidity)).highestModseq;
  try {
    return await reconcileAside(ctx, mailbox, uidValidity);
  } catch (err) {
    // HIGHESTMODSEQ was asked for and the store has it: NO [UNAVAILABLE] (imap/session.ts), not a made-up 0.
    if (isStoreUnavailable(err)) throw err;
    ctx.log.warn({ err: (err as Error).message }, 'STATUS: mailbox reconciliation failed');
    return 0;
  }
}

function isAtom(v: ImapValue, name: string): boolean {
  return v.type === 'atom' && v.value.toUpperCase() === name;
}

function isHighestModseq(v: ImapValue): boolean {
  return isAtom(v, 'HIGHESTMODSEQ');
}
