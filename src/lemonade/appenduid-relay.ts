/**
 * APPENDUID for relayed APPENDs to an upstream without UIDPLUS (RFC 4315 §3; the lookup
 * is appenduid.ts): the relay hook on APPEND (commands/index.ts relayHooks). Before the
 * command goes upstream it takes the mailbox's lock and notes UIDNEXT; the tagged OK then
 * gets the new UID. The lock is held from before the APPEND to after the lookup, so no
 * other APPEND of the gateway's can land in between.
 */
import type { CommandContext, RelayHook, ResponseRewrite } from '../imap/commands/context.js';
import { parseStatusLine } from '../imap/protocol/status-line.js';
import { appendLockKey, appendedUid, mailboxUids, plainAppend, withAppendUid, type MailboxUids } from './appenduid.js';

export const appendUidHook: RelayHook = (ctx, firstLine) => {
  const upstream = ctx.upstream;
  if (upstream === undefined || !ctx.lemonade.synthesizesAppendUid(upstream.capabilities)) return undefined;
  const append = plainAppend(firstLine);
  return append === undefined ? undefined : appendUidRewrite(ctx, append.mailbox, append.size);
};

async function appendUidRewrite(ctx: CommandContext, mailbox: string, size: number): Promise<ResponseRewrite | undefined> {
  const user = ctx.authenticatedUser;
  if (user === undefined) return undefined;
  const lemonade = ctx.lemonade;
  // A session that ends while waiting never gets the lock (mailbox-locks.ts).
  const lease = await lemonade.appendLocks.acquire(appendLockKey(user, mailbox), ctx.ended);
  if (lease === undefined) return undefined;
  let before: MailboxUids | undefined;
  try {
    before = await lemonade.sidePool.withConnection(user, (c) => mailboxUids(c, mailbox));
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'APPENDUID: mailbox status unavailable');
  }
  return {
    abandon: () => lease.release(),
    rewriteTagged: async (line) => {
      try {
        if (parseStatusLine(line)?.status !== 'OK') return line;
        let uid: number | undefined;
        if (before !== undefined && !lease.expired) {
          const known = before;
          uid = await lemonade.sidePool.withConnection(user, (c) => appendedUid(c, mailbox, known, size)).catch((err: unknown) => {
            ctx.log.warn({ err: (err as Error).message }, 'APPENDUID: new UID unavailable');
            return undefined;
          });
        }
        // Past the hold bound another APPEND may have run meanwhile: no code rather than a wrong one.
        return withAppendUid(line, before?.uidValidity ?? 0, lease.expired ? undefined : uid);
      } finally {
        lease.release();
      }
    },
  };
}
