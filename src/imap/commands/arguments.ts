/** Reading typed arguments out of parsed command values. */
import type { ImapValue } from '../protocol/parser.js';

/** An astring (RFC 3501 §9): atom, quoted string or literal, decoded as UTF-8. */
export function stringArgument(v: ImapValue | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (v.type === 'string') return v.value.toString('utf8');
  if (v.type === 'atom') return v.value;
  return undefined;
}
