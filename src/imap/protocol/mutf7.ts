/**
 * Modified UTF-7, the encoding of mailbox names on the IMAP wire (RFC 3501 §5.1.3).
 *
 *   - Printable US-ASCII (0x20-0x7e) stands for itself, except "&", which is "&-".
 *   - Everything else is a run of UTF-16 code units in "modified BASE64" (RFC 2045
 *     alphabet with "," instead of "/", no "=" padding) between "&" and "-".
 *   - Base64 must not encode a printable ASCII character that could stand for itself, and
 *     a name must end in ASCII (a run is always closed by "-").
 *
 * The decoder is strict: it accepts exactly what encodeMutf7 produces, so for every
 * string s that decodes, encodeMutf7(decodeMutf7(s)) === s and names can be compared in
 * either form. Beyond the RFC's explicit rules that means: the bits left over at the end
 * of a run must be zero and fewer than six (no partial code unit), the code units must
 * form well-formed UTF-16 (no lone surrogates), and two runs may not follow each other
 * ("&AOQ-&APY-" must be "&AOQA9g-"), since an encoder never splits a run.
 */

export class Mutf7Error extends Error {
  override name = 'Mutf7Error';
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,';
const B64_VALUE = new Map<string, number>([...B64].map((c, i) => [c, i]));

/** Lone surrogates (in a u-mode regexp a well-formed pair is one code point, not matched). */
const LONE_SURROGATE = /\p{Cs}/u;

function isDirect(code: number): boolean {
  return code >= 0x20 && code <= 0x7e;
}

/** The wire form of a mailbox name. Throws Mutf7Error for a string with lone surrogates. */
export function encodeMutf7(name: string): string {
  if (LONE_SURROGATE.test(name)) throw new Mutf7Error('mailbox name is not well-formed UTF-16 (lone surrogate)');
  let out = '';
  let i = 0;
  while (i < name.length) {
    const code = name.charCodeAt(i);
    if (isDirect(code)) {
      out += code === 0x26 ? '&-' : name[i];
      i++;
      continue;
    }
    // A run: every following code unit that cannot stand for itself (RFC 3501 §5.1.3).
    let end = i;
    while (end < name.length && !isDirect(name.charCodeAt(end))) end++;
    out += `&${base64Units(name, i, end)}-`;
    i = end;
  }
  return out;
}

/** Modified BASE64 of the UTF-16 code units name[start..end), big-endian, unpadded. */
function base64Units(name: string, start: number, end: number): string {
  let out = '';
  let bits = 0;
  let nbits = 0;
  for (let k = start; k < end; k++) {
    bits = (bits << 16) | name.charCodeAt(k);
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += B64[(bits >>> nbits) & 0x3f];
    }
    bits &= (1 << nbits) - 1;
  }
  if (nbits > 0) out += B64[(bits << (6 - nbits)) & 0x3f];
  return out;
}

/** The Unicode form of a wire mailbox name. Throws Mutf7Error for anything malformed. */
export function decodeMutf7(wire: string): string {
  let out = '';
  let i = 0;
  let afterRun = false;
  while (i < wire.length) {
    const code = wire.charCodeAt(i);
    if (!isDirect(code)) {
      throw new Mutf7Error(`character 0x${code.toString(16)} at offset ${i} must be base64-encoded`);
    }
    if (code !== 0x26) {
      out += wire[i];
      i++;
      afterRun = false;
      continue;
    }
    const close = wire.indexOf('-', i + 1);
    if (close < 0) throw new Mutf7Error(`unterminated "&" at offset ${i}`);
    if (close === i + 1) {
      out += '&';
      i += 2;
      afterRun = false;
      continue;
    }
    if (afterRun) throw new Mutf7Error(`base64 run at offset ${i} directly follows another (must be one run)`);
    out += decodeRun(wire.slice(i + 1, close), i);
    i = close + 1;
    afterRun = true;
  }
  return out;
}

function decodeRun(run: string, at: number): string {
  const units: number[] = [];
  let bits = 0;
  let nbits = 0;
  for (const c of run) {
    const v = B64_VALUE.get(c);
    if (v === undefined) throw new Mutf7Error(`invalid modified BASE64 character "${c}" in run at offset ${at}`);
    bits = (bits << 6) | v;
    nbits += 6;
    if (nbits >= 16) {
      nbits -= 16;
      units.push((bits >>> nbits) & 0xffff);
      bits &= (1 << nbits) - 1;
    }
  }
  // Only the padding of the last code unit may be left over, and it must be zero bits.
  if (nbits >= 6 || bits !== 0) throw new Mutf7Error(`run at offset ${at} does not end on a code unit boundary`);
  // One code unit at a time: spreading a long run into fromCharCode could overflow the stack.
  let text = '';
  for (const u of units) text += String.fromCharCode(u);
  if (LONE_SURROGATE.test(text)) throw new Mutf7Error(`run at offset ${at} holds a lone surrogate`);
  for (const u of units) {
    if (isDirect(u)) throw new Mutf7Error(`run at offset ${at} encodes printable ASCII, which must stand for itself`);
  }
  return text;
}

/** True when decodeMutf7(wire) would succeed. */
export function isMutf7(wire: string): boolean {
  try {
    decodeMutf7(wire);
    return true;
  } catch (err) {
    if (err instanceof Mutf7Error) return false;
    throw err;
  }
}
