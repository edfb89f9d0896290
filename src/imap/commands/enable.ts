/**
 * ENABLE (RFC 5161) where the gateway provides CONDSTORE and QRESYNC (RFC 7162 §3.1,
 * §3.2.3). What the gateway enables itself is answered here; other capabilities go to the
 * upstream when it has ENABLE (its ENABLED response is merged into ours) and are ignored
 * otherwise, as §3.1 says of capabilities a server does not support.
 */
import type { CommandHandler } from './context.js';
import { parseEnable, resolveEnable } from '../../lemonade/qresync/params.js';
import { enabledResponse } from '../../lemonade/qresync/responses.js';
import { hasCapability } from '../capabilities.js';

/** What the gateway enables itself. */
const EMULATED = ['CONDSTORE', 'QRESYNC'];

export const enable: CommandHandler = async (ctx, line) => {
  const parsed = parseEnable(line.items.slice(1));
  if (!parsed.ok) return ctx.tagged(line.tag, parsed.error.status, parsed.error.text, parsed.error.code);
  // RFC 5161 §3.1: "The ENABLE command is only valid in the authenticated state".
  if (ctx.state !== 'authenticated') return ctx.tagged(line.tag, 'BAD', 'ENABLE is only valid before a mailbox is selected');
  const cs = ctx.condstore;
  const outcome = resolveEnable(parsed.value.capabilities, EMULATED, cs.enabled);
  const enabled = [...outcome.enabled];
  if (outcome.others.length > 0 && ctx.upstream !== undefined && hasCapability(ctx.upstream.capabilities, 'ENABLE')) {
    const r = await ctx.internalCommand(`ENABLE ${outcome.others.join(' ')}`, (l) => {
      const m = /^\* ENABLED ?(.*?)\r?\n?$/i.exec(l);
      if (m === null) return false;
      for (const cap of m[1]!.split(' ')) if (cap !== '') enabled.push(cap);
      return true;
    });
    if (r.status === 'BAD') return ctx.tagged(line.tag, 'BAD', 'ENABLE refused by the upstream server');
  }
  for (const cap of outcome.state) cs.enabled.add(cap);
  ctx.writeData(enabledResponse(enabled));
  ctx.tagged(line.tag, 'OK', 'ENABLE completed');
};
