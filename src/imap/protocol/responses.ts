/**
 * Reading the data of parsed upstream responses the gateway asks for itself: the
 * attribute lists of FETCH (RFC 3501 §7.4.2) and STATUS (§7.2.4), "name value" pairs;
 * and the numbers of a SEARCH response line (§7.2.5).
 */
import type { ImapValue, ParsedLine } from './parser.js';

/** "(NAME value NAME value ...)" as a map keyed by upper-cased name. */
function attributes(list: ImapValue | undefined): Map<string, ImapValue> | undefined {
  if (list?.type !== 'list') return undefined;
  const out = new Map<string, ImapValue>();
  for (let i = 0; i + 1 < list.items.length; i += 2) {
    const key = list.items[i]!;
    if (key.type === 'atom') out.set(key.value.toUpperCase(), list.items[i + 1]!);
  }
  return out;
}

/** `* n FETCH (...)`: its attributes, or undefined for any other response. */
export function fetchAttributes(line: ParsedLine): Map<string, ImapValue> | undefined {
  const [, name, list] = line.items;
  return name?.type === 'atom' && name.value.toUpperCase() === 'FETCH' ? attributes(list) : undefined;
}

/** `* STATUS mailbox (...)`: its attributes, or undefined for any other response. */
export function statusAttributes(line: ParsedLine): Map<string, ImapValue> | undefined {
  const [name, , list] = line.items;
  return name?.type === 'atom' && name.value.toUpperCase() === 'STATUS' ? attributes(list) : undefined;
}

/** A number attribute (UID, RFC822.SIZE, UIDNEXT, ...); undefined when absent or not a number. */
export function numberValue(value: ImapValue | undefined): number | undefined {
  return value?.type === 'atom' && /^\d+$/.test(value.value) ? Number(value.value) : undefined;
}

/** `* URLFETCH url data` (RFC 4467 §9 urlfetch-data, one URL asked for): the data when it came as a string. */
export function urlfetchString(line: ParsedLine): Buffer | undefined {
  const [name, , data] = line.items;
  if (name?.type !== 'atom' || name.value.toUpperCase() !== 'URLFETCH') return undefined;
  return data?.type === 'string' ? data.value : undefined;
}

/** A parsed `* SEARCH 1 2 3` → [1, 2, 3] (RFC 3501 §7.2.5); undefined for any other response or a non-number in it. */
export function searchNumbers(line: ParsedLine): number[] | undefined {
  const [name, ...numbers] = line.items;
  if (name?.type !== 'atom' || name.value.toUpperCase() !== 'SEARCH') return undefined;
  const out = numbers.map(numberValue);
  return out.every((n) => n !== undefined) ? (out as number[]) : undefined;
}

/** The wire line `* SEARCH 1 2 3` → [1, 2, 3] (RFC 3501 §7.2.5); undefined for any other line. */
export function searchResult(line: string): number[] | undefined {
  const m = /^\* SEARCH((?: \d+)*)\s*$/i.exec(line);
  if (m === null) return undefined;
  return m[1]!.trim() === '' ? [] : m[1]!.trim().split(' ').map(Number);
}
