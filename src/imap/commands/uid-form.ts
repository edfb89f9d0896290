/**
 * RFC 3501 §6.4.8: COPY, FETCH, STORE and SEARCH come plain or prefixed by UID, and the
 * prefix changes what their set means. One reading of a line for the four handlers.
 */
import type { ParsedLine } from '../protocol/parser.js';

export interface UidForm {
  byUid: boolean;
  /** The command as the client named it ("UID FETCH" or "FETCH"), for replies and relaying. */
  name: string;
  /** The arguments after the command word. */
  args: ParsedLine['items'];
}

export function uidForm(line: ParsedLine, verb: string): UidForm {
  const byUid = line.items[0]?.type === 'atom' && line.items[0].value.toUpperCase() === 'UID';
  return { byUid, name: byUid ? `UID ${verb}` : verb, args: line.items.slice(byUid ? 2 : 1) };
}
