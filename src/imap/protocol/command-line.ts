/**
 * The start of a client's command line, read before the command is understood: its tag
 * and name (to route it), a tag to answer with when it does not parse, and a literal's
 * announcement rewritten for the upstream.
 */

/** Tag and command name at the start of a command line (RFC 3501 §9 "tag SP command"). */
export function commandHead(first: Buffer): { tag: string; name: string; rest: number } | undefined {
  const text = first.subarray(0, Math.min(first.length, 512)).toString('latin1');
  // tag = 1*<any ASTRING-CHAR except "+">; command names are atoms of letters.
  const m = /^([^\s(){%*"\\+\]\x00-\x1f\x7f]+) ([A-Za-z]+)(?: ([A-Za-z]+))?/.exec(text);
  if (!m) return undefined;
  const tag = m[1]!;
  let name = m[2]!.toUpperCase();
  if (name === 'UID' && m[3] !== undefined) name = `UID ${m[3].toUpperCase()}`;
  return { tag, name, rest: tag.length };
}

/** The best guess at a tag for answering a line that did not parse (RFC 3501 §7.1: "*" if none). */
export function guessTag(text: Buffer): string {
  const m = /^([^\s(){%*"\\+\]\x00-\x1f\x7f]+)[ \r\n]/.exec(text.subarray(0, 256).toString('latin1'));
  return m ? m[1]! : '*';
}

/** "{n}\r\n" at the end of a segment, rewritten for the upstream (RFC 7888 §3, RFC 3516 §4.1). */
export function rewriteLiteralAnnouncement(text: Buffer, size: number, binary: boolean, nonSync: boolean): Buffer {
  let end = text.length;
  if (text[end - 1] === 0x0a) end--;
  if (text[end - 1] === 0x0d) end--;
  const open = text.lastIndexOf(0x7b /* { */, end);
  let start = open;
  if (binary && start > 0 && text[start - 1] === 0x7e /* ~ */) start--;
  return Buffer.concat([text.subarray(0, start), Buffer.from(`${binary ? '~' : ''}{${size}${nonSync ? '+' : ''}}\r\n`)]);
}
