/** Adding a response code to a status line the upstream wrote (RFC 3501 §7.1 resp-text-code). */

/** A tagged OK without a response code, given one (a line with a code, or not OK, is kept). */
export function withResponseCode(line: Buffer, code: string): Buffer {
  const m = /^(\S+ OK) (?!\[)/i.exec(line.subarray(0, 200).toString('latin1'));
  if (m === null) return line;
  return Buffer.concat([line.subarray(0, m[1]!.length), Buffer.from(` [${code}]`), line.subarray(m[1]!.length)]);
}
