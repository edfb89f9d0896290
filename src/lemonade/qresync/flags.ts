/**
 * Canonical flag sets for the mod-sequence state (RFC 7162 emulation): one spelling and
 * one order per set, so "did this message's flags change?" is a string comparison and
 * the store keeps each set as one short string.
 *
 * - System flags (RFC 3501 §2.3.2) are protocol tokens, case-insensitive like every
 *   alphabetic token of the grammar (RFC 3501 §9, note 2): "\seen" is "\Seen".
 * - \Recent is left out. It belongs to one session (RFC 3501 §2.3.2: set for the first
 *   session to see a message, never by STORE), so it is not message state every session
 *   shares and must not move a mod-sequence (RFC 7162 §3.1 ties mod-sequences to changes
 *   of the metadata items a STORE can change). The legacy Dovecot shows \Recent in every
 *   EXAMINE until a SELECT takes it: comparing it would report changes that are not.
 * - Keywords keep the upstream's spelling and are compared exactly. RFC 3501 does not say
 *   whether keywords are case-insensitive; Dovecot treats them so but reports one spelling
 *   per mailbox (STORE +FLAGS (FOO) on a message with Foo changes nothing and FETCH still
 *   says Foo). Exact comparison can at worst count a spelling change as a change (a new
 *   mod-sequence that costs a client one flag refetch, RFC 7162 allows it); folding case
 *   could hide a change the client would see.
 * - Other "\"-flags (RFC 3501 §9 flag-extension) are kept as given.
 */

/** RFC 3501 §2.3.2 system flags (\Recent aside), in the order a canonical set lists them. */
export const SYSTEM_FLAGS = ['\\Seen', '\\Answered', '\\Flagged', '\\Deleted', '\\Draft'] as const;

const systemByLower = new Map<string, string>(SYSTEM_FLAGS.map((f) => [f.toLowerCase(), f]));
const systemOrder = new Map<string, number>(SYSTEM_FLAGS.map((f, i) => [f, i]));

/** The one spelling of a flag, or undefined for \Recent (never part of the state). */
export function canonicalFlag(flag: string): string | undefined {
  const lower = flag.toLowerCase();
  if (lower === '\\recent') return undefined;
  return systemByLower.get(lower) ?? flag;
}

function compareFlags(a: string, b: string): number {
  const sa = systemOrder.get(a);
  const sb = systemOrder.get(b);
  if (sa !== undefined || sb !== undefined) return (sa ?? SYSTEM_FLAGS.length) - (sb ?? SYSTEM_FLAGS.length);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The canonical set: \Recent dropped, system flags spelled as in SYSTEM_FLAGS and first, then the rest in code-unit order, no duplicates. */
export function canonicalFlags(flags: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const flag of flags) {
    if (flag.length === 0) continue;
    const c = canonicalFlag(flag);
    if (c !== undefined) out.add(c);
  }
  return [...out].sort(compareFlags);
}

/**
 * The canonical set as one string (flags joined by a space: an IMAP flag is an atom and
 * holds no space, RFC 3501 §9), for storing and comparing.
 */
export function flagsKey(flags: Iterable<string>): string {
  return canonicalFlags(flags).join(' ');
}

/** The flags of a key made by flagsKey. */
export function flagsFromKey(key: string): string[] {
  return key === '' ? [] : key.split(' ');
}
