/** Formatting IMAP strings for the wire (RFC 3501 §4.3). */

/** Longest string sent quoted; longer ones go as literals. */
const MAX_QUOTED = 1000;

/** True when s can be sent as a quoted string: 7-bit, no CR/LF/NUL (RFC 3501 §9 QUOTED-CHAR). */
export function isQuotable(s: string): boolean {
  return s.length <= MAX_QUOTED && /^[\x01-\x09\x0b\x0c\x0e-\x7f]*$/.test(s);
}

/** A quoted string with quoted-specials escaped; callers check isQuotable first. */
export function quoted(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
