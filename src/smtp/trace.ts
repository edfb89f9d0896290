/** The Received: trace header the submission front prepends (RFC 5321 §4.4, RFC 3848 protocol names). */

/** RFC 5322 §3.3 date-time, in UTC. */
export function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

export interface TraceInfo {
  heloName: string;
  clientAddress: string;
  hostname: string;
  tls: boolean;
  authenticated: boolean;
  id: string;
  /** Named only when there is exactly one, so a Bcc recipient is not shown to others. */
  recipients: string[];
  date?: Date;
  /** A comment after the id, e.g. the FUTURERELEASE hold (RFC 5322 §3.2.2 CFWS is allowed there). */
  comment?: string;
}

export function receivedHeader(info: TraceInfo): Buffer {
  // RFC 3848: ESMTPSA = ESMTP + TLS + AUTH, ESMTPA without TLS, ESMTPS with TLS only.
  const protocol = `ESMTP${info.tls ? 'S' : ''}${info.authenticated ? 'A' : ''}`;
  const helo = info.heloName.replace(/[^\x21-\x7e]/g, '?').slice(0, 255);
  const addr = info.clientAddress.replace(/^::ffff:/, '');
  const literal = addr.includes(':') ? `IPv6:${addr}` : addr;
  const forClause = info.recipients.length === 1 ? `\r\n\tfor <${info.recipients[0]}>` : '';
  // Parentheses and backslashes would end or escape the comment early.
  const comment = info.comment !== undefined ? `\r\n\t(${info.comment.replace(/[()\\\r\n]/g, ' ')})` : '';
  return Buffer.from(
    `Received: from ${helo} ([${literal}])\r\n\tby ${info.hostname} (lemonade-gateway) with ${protocol} id ${info.id}${comment}${forClause};\r\n\t${rfc5322Date(info.date ?? new Date())}\r\n`,
    'utf8',
  );
}
