/**
 * RESETKEY (RFC 4467 §6.2), emulated: new access keys for one mailbox of the logged-in
 * user, or for all of them without an argument, so every URL issued before stops working
 * at once. The mailbox argument is the wire name (modified UTF-7); keys are kept by the
 * Unicode name URLs carry (RFC 5092 §8).
 */
import type { CommandHandler } from './context.js';
import { stringArgument } from './arguments.js';
import { Mutf7Error, decodeMutf7 } from '../protocol/mutf7.js';
import { MECHANISM } from '../../lemonade/urlauth.js';

export const resetkey: CommandHandler = async (ctx, line) => {
  const [, mailboxArg, ...mechanisms] = line.items;
  const user = ctx.authenticatedUser!;
  if (mailboxArg === undefined) {
    await ctx.lemonade.urlauth.reset(user);
    return ctx.tagged(line.tag, 'OK', 'All mailbox access keys reset');
  }
  const wire = stringArgument(mailboxArg);
  if (wire === undefined) return ctx.tagged(line.tag, 'BAD', 'RESETKEY expects a mailbox name');
  for (const m of mechanisms) {
    if (m.type !== 'atom') return ctx.tagged(line.tag, 'BAD', 'RESETKEY mechanisms are atoms');
    if (m.value.toUpperCase() !== MECHANISM) return ctx.tagged(line.tag, 'NO', `Unsupported URLAUTH mechanism ${m.value.slice(0, 40)}`);
  }
  let mailbox: string;
  try {
    mailbox = decodeMutf7(wire);
  } catch (err) {
    if (!(err instanceof Mutf7Error)) throw err;
    return ctx.tagged(line.tag, 'BAD', 'Mailbox name is not valid modified UTF-7');
  }
  await ctx.lemonade.urlauth.reset(user, mailbox);
  ctx.tagged(line.tag, 'OK', 'Mailbox access key reset');
};
