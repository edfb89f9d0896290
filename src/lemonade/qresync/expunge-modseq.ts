/**
 * RFC 7162 §3.2.7: once QRESYNC is enabled, the tagged OK of EXPUNGE carries the
 * mailbox's HIGHESTMODSEQ after the expunges, which the view records as their untagged
 * responses pass. The relay hook on EXPUNGE (commands/index.ts relayHooks).
 */
import type { RelayHook } from '../../imap/commands/context.js';
import { withResponseCode } from '../../imap/protocol/status-line.js';
import { highestModseqCode } from './responses.js';

export const expungeModseqHook: RelayHook = (ctx) => {
  const view = ctx.condstore.view;
  if (view === undefined || !ctx.condstore.qresync) return undefined;
  return {
    rewriteTagged: async (line) => {
      await view.settled();
      return withResponseCode(line, highestModseqCode(view.highestModseq));
    },
  };
};
