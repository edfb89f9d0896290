/**
 * The delivery status notification (RFC 3464) sent to the sender when a held message
 * (RFC 4865) cannot be released to some of its recipients, or is still being retried.
 *
 * Layout (RFC 3464 §2, RFC 6522 §3, RFC 3461 §6.2):
 *
 *   multipart/report; report-type=delivery-status
 *     1. text/plain               what happened, for a person
 *     2. message/delivery-status  per-message fields, then one block per recipient
 *     3. text/rfc822-headers      the held message's header (RET=HDRS, no RET, or when
 *        or message/rfc822        the whole message cannot go back), or the whole message
 *                                 (RET=FULL)
 *
 * The result is a complete RFC 5322 message with CRLF line endings. It must be sent with
 * MAIL FROM:<> (RFC 3461 §6.1, RFC 3464 §2), without RET and with NOTIFY=NEVER if any
 * (RFC 3461 §6.1), to the sender (the DSN's To:), and never for a message whose MAIL FROM
 * was <> (RFC 3461 §5.2): buildDsn() refuses an empty sender.
 *
 * Everything that comes from outside (the sender and recipient addresses, ORCPT, ENVID,
 * the remote server's reply, its name) is reduced to what the field allows: no CR, LF or
 * other control characters reach a header field or a DSN field, and the
 * message/delivery-status part stays 7-bit (RFC 3464 §2.1) whatever the inputs hold.
 */

import { randomBytes } from 'node:crypto';
import { decodeXtext, splitOrcpt } from '../../smtp/protocol/parser.js';
import { rfc5322Date } from '../../smtp/trace.js';

export interface DsnRecipient {
  /** The recipient as given in RCPT TO (Final-Recipient, RFC 3461 §6.3 (e)). */
  address: string;
  /**
   * The RCPT TO ORCPT parameter exactly as received on the wire, still xtext-encoded,
   * e.g. "rfc822;bob+2Bdsn@example.org" (RFC 3461 §4.2). buildDsn() decodes the xtext
   * for the Original-Recipient field (RFC 3461 §6.3 (d)); leave it out when the client
   * sent no ORCPT, since the field MUST NOT appear then.
   */
  orcpt?: string;
  /** RFC 3464 §2.3.3; "delayed" DSNs are optional (RFC 3461 §5.2.5). */
  action: 'failed' | 'delayed';
  /**
   * RFC 3464 §2.3.4 status-code, e.g. "5.1.1". Normalized (leading zeros dropped); one
   * that is malformed or contradicts the action (2.x.x, or 5.x.x for "delayed") is
   * replaced by 5.0.0 / 4.0.0 as RFC 3461 §6.3 (g) says to when no specific code fits.
   */
  status: string;
  /**
   * The SMTP reply of the MTA that refused, e.g. "550 5.1.1 <bob@x>: Recipient address
   * rejected" (Diagnostic-Code: smtp; RFC 3461 §9.2). Lines of a multi-line reply may be
   * separated by CRLF or LF; they are folded with a leading space as §9.2 shows.
   */
  diagnostic?: string;
  /** Host name of the MTA that gave the diagnostic (Remote-MTA: dns; RFC 3464 §2.3.5). */
  remoteMta?: string;
  /** RFC 3464 §2.3.7. */
  lastAttemptDate?: Date;
  /** RFC 3464 §2.3.9; written for "delayed" recipients only (MUST NOT appear otherwise). */
  willRetryUntil?: Date;
}

export interface DsnInput {
  /** Our host name: Reporting-MTA (dns) and the From: domain. */
  reportingMta: string;
  /** The envelope sender of the held message (MAIL FROM): the DSN's To:. Not empty. */
  sender: string;
  /** MAIL FROM ENVID as received, still xtext-encoded (decoded per RFC 3461 §6.3 (a)). */
  envid?: string;
  /** MAIL FROM RET (RFC 3461 §4.3). */
  ret?: 'FULL' | 'HDRS';
  /** When the gateway accepted the message (Arrival-Date, required by RFC 4865 §5.1.2 item 1). */
  arrivalDate: Date;
  recipients: DsnRecipient[];
  /** The whole held message as stored. */
  original: Buffer;
  /** The DSN's Date:. */
  now: Date;
  /** Domain for the DSN's Message-ID. */
  messageIdDomain: string;
  /**
   * The held message's hold request, "for;N" or "until;date-time": HoldResult.requested
   * from hold-params.ts. Written as the Future-Release-Request per-message field that
   * RFC 4865 §5.1.2 item 2 requires in any DSN for a held message.
   */
  futureReleaseRequest?: string;
}

export interface DsnOptions {
  /**
   * RET=FULL returns the whole message only up to this size (default 1 MiB); larger
   * ones get their header back instead, as RFC 3461 §6.2 allows, and the text says so.
   */
  maxReturnedBytes?: number;
  /**
   * The DSN will travel over a path that takes 8-bit content (8BITMIME, RFC 6152).
   * Default false: an 8-bit original is then returned as its header only, and an 8-bit
   * header is quoted-printable encoded (RFC 6522 §3 last paragraph, §4).
   */
  eightBit?: boolean;
  /** From: address; default MAILER-DAEMON@<reportingMta>. */
  fromAddress?: string;
}

export const DEFAULT_MAX_RETURNED_BYTES = 1024 * 1024;

/** RFC 5322 §2.1.1: at most 998 octets a line. Field values are cut well below that. */
const MAX_FIELD_TEXT = 900;
/** Diagnostic lines kept from a multi-line reply. */
const MAX_DIAGNOSTIC_LINES = 20;

// ---- sanitizing --------------------------------------------------------------------

/** One line of printable US-ASCII: controls become spaces, anything else "?". */
function asciiLine(s: string, max = MAX_FIELD_TEXT): string {
  const out = s
    .replace(/[\x00-\x1f\x7f]/g, ' ')
    .replace(/[^\x20-\x7e]/gu, '?')
    .replace(/ {2,}/g, ' ')
    .trim();
  return out.length > max ? `${out.slice(0, max - 3)}...` : out;
}

/** One line of text for a UTF-8 header or the text part: controls (C0, DEL, C1) removed. */
function textLine(s: string, max = MAX_FIELD_TEXT): string {
  const out = s
    .replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
  return out.length > max ? `${out.slice(0, max - 3)}...` : out;
}

/** RFC 6533 §3 utf-8-addr-xtext: QCHAR as is, everything else as \x{HEX}. */
function utf8AddrXtext(s: string): string {
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0) as number;
    const qchar = (cp >= 0x21 && cp <= 0x2a) || (cp >= 0x2c && cp <= 0x3c) || (cp >= 0x3e && cp <= 0x5b) || (cp >= 0x5d && cp <= 0x7e);
    out += qchar ? ch : `\\x{${cp.toString(16).toUpperCase()}}`;
  }
  return out;
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * "type; address" for Final-Recipient / Original-Recipient. Printable US-ASCII goes as
 * is (RFC 3464 §2.3.2: report the address exactly, unless it holds characters such as
 * CR or LF, which become spaces); non-ASCII is written as RFC 6533 §3
 * "utf-8; utf-8-addr-xtext", which keeps the part 7-bit and the address recoverable.
 */
function addressField(type: string, address: string): string {
  // Controls (CR, LF, ...) are never part of an address a server accepted; drop them.
  const clean = address.replace(/[\x00-\x1f\x7f]+/g, ' ');
  if (PRINTABLE_ASCII.test(clean)) return `${type}; ${clean.slice(0, MAX_FIELD_TEXT)}`;
  return `utf-8; ${utf8AddrXtext(clean).slice(0, MAX_FIELD_TEXT)}`;
}

/** RFC 3461 §4.2 "addr-type;xtext" as received, to an Original-Recipient value. */
function originalRecipientField(orcpt: string): string | undefined {
  const split = splitOrcpt(orcpt);
  if (split === undefined) return undefined;
  const { type, value: raw } = split;
  if (type.toLowerCase() === 'utf-8') {
    // RFC 6533 §3: already utf-8-addr-xtext, or raw UTF-8 (unitext) under SMTPUTF8.
    return `utf-8; ${utf8AddrXtext(raw.replace(/\\x\{([0-9A-Fa-f]{1,6})\}/g, (m, hex: string) => {
      const cp = parseInt(hex, 16);
      return cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    })).slice(0, MAX_FIELD_TEXT)}`;
  }
  let address: string;
  try {
    address = decodeXtext(raw);
  } catch {
    address = raw; // not xtext after all: report it as given, still sanitized below
  }
  return addressField(type, address);
}

/** Host name or address literal for an mta-name of type dns (RFC 3461 §9.3). */
function mtaName(s: string): string {
  return s.replace(/[^A-Za-z0-9.:[\]_-]/g, '').slice(0, 255);
}

/**
 * The Diagnostic-Code value after "smtp; ": each line of the reply sanitized, lines after
 * the first folded onto continuation lines (RFC 3461 §9.2), so a CRLF inside the reply
 * can never start a field of its own.
 */
function diagnosticValue(s: string): string {
  return diagnosticLines(s, asciiLine).join('\r\n ');
}

/** The reply's lines (CRLF, CR or LF apart), each made safe by `clean`, empty ones dropped, at most 20. */
function diagnosticLines(s: string, clean: (line: string) => string): string[] {
  return s
    .split(/\r\n|\r|\n/)
    .map((l) => clean(l))
    .filter((l) => l !== '')
    .slice(0, MAX_DIAGNOSTIC_LINES);
}

/** RFC 3464 §2.3.4, normalized; RFC 3461 §6.3 (g) fallback when unusable. */
function statusCode(status: string, action: 'failed' | 'delayed'): string {
  const m = /^([245])\.([0-9]{1,3})\.([0-9]{1,3})$/.exec(status.trim());
  const fallback = action === 'failed' ? '5.0.0' : '4.0.0';
  if (m === null) return fallback;
  const cls = m[1] as string;
  const ok = action === 'failed' ? cls === '4' || cls === '5' : cls === '4';
  return ok ? `${cls}.${Number(m[2])}.${Number(m[3])}` : fallback;
}

// ---- MIME helpers --------------------------------------------------------------------

const CRLF = '\r\n';

/** Every line ending in `buf` made CRLF (bare CR and bare LF included). */
function toCrlf(buf: Buffer): Buffer {
  if (!buf.includes(0x0a) && !buf.includes(0x0d)) return buf;
  return Buffer.from(buf.toString('latin1').replace(/\r\n|\r|\n/g, CRLF), 'latin1');
}

/**
 * The header section of a message: everything before the first empty line, ending with
 * the CRLF of its last field (the whole message if there is no empty line), CRLF line
 * endings. This is what text/rfc822-headers returns (RFC 6522 §4).
 */
export function headerBlock(message: Buffer): Buffer {
  const text = toCrlf(message);
  if (text.length >= 2 && text[0] === 0x0d && text[1] === 0x0a) return Buffer.alloc(0);
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) {
    return text.length >= 2 && text.subarray(-2).toString('latin1') === CRLF ? text : Buffer.concat([text, Buffer.from(CRLF)]);
  }
  return text.subarray(0, end + 2);
}

function has8bit(buf: Buffer): boolean {
  for (const b of buf) if (b >= 0x80) return true;
  return false;
}

function hasNul(buf: Buffer): boolean {
  return buf.includes(0x00);
}

function hasLongLine(buf: Buffer): boolean {
  let start = 0;
  for (;;) {
    const nl = buf.indexOf('\r\n', start);
    const end = nl === -1 ? buf.length : nl;
    if (end - start > 998) return true;
    if (nl === -1) return false;
    start = nl + 2;
  }
}

/** RFC 2045 §6.7 quoted-printable with CRLF hard line breaks, soft breaks at 76. */
function quotedPrintable(buf: Buffer): string {
  const lines = buf.toString('latin1').split(CRLF);
  const out: string[] = [];
  for (let li = 0; li < lines.length; li++) {
    const line = lines[li] as string;
    if (li === lines.length - 1 && line === '') break;
    let cur = '';
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      const last = i === line.length - 1;
      let enc: string;
      if ((c >= 33 && c <= 126 && c !== 61) || ((c === 32 || c === 9) && !last)) enc = line[i] as string;
      else enc = `=${c.toString(16).toUpperCase().padStart(2, '0')}`;
      if (cur.length + enc.length > 75) {
        out.push(`${cur}=`);
        cur = '';
      }
      cur += enc;
    }
    out.push(cur);
  }
  return out.map((l) => l + CRLF).join('');
}

function newBoundary(avoid: Buffer[]): string {
  // "=_" never occurs in quoted-printable text; the check covers returned raw content.
  for (;;) {
    const b = `=_dsn_${randomBytes(12).toString('hex')}`;
    if (!avoid.some((part) => part.includes(b))) return b;
  }
}

// ---- the DSN -------------------------------------------------------------------------

const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$/;

type Returned =
  | { kind: 'headers'; body: Buffer; encoding: '7bit' | '8bit' | 'quoted-printable'; reason?: string }
  | { kind: 'full'; body: Buffer; encoding: '7bit' | '8bit' };

function chooseReturned(input: DsnInput, options: DsnOptions): Returned {
  const eightBitOk = options.eightBit === true;
  const headersOnly = (reason?: string): Returned => {
    const body = headerBlock(input.original);
    if (!has8bit(body) && !hasNul(body)) return { kind: 'headers', body, encoding: '7bit', reason };
    if (eightBitOk && !hasNul(body)) return { kind: 'headers', body, encoding: '8bit', reason };
    return { kind: 'headers', body, encoding: 'quoted-printable', reason };
  };
  if (input.ret !== 'FULL') return headersOnly();
  // RFC 3461 §4.3, §6.2: only a DSN reporting a failure returns the whole message.
  if (!input.recipients.some((r) => r.action === 'failed')) return headersOnly();
  const max = options.maxReturnedBytes ?? DEFAULT_MAX_RETURNED_BYTES;
  if (input.original.length > max) {
    return headersOnly(`The message was ${input.original.length} bytes, more than the ${max} returned in full, so only its header is attached.`);
  }
  const body = toCrlf(input.original);
  // RFC 2046 §5.2.1: message/rfc822 is 7bit, 8bit or binary only; binary cannot be sent
  // without BINARYMIME, and 8bit only on an 8BITMIME path (RFC 6522 §3).
  if (hasNul(body) || hasLongLine(body) || (has8bit(body) && !eightBitOk)) {
    return headersOnly('The message holds 8-bit or binary content that cannot be returned here, so only its header is attached.');
  }
  return { kind: 'full', body, encoding: has8bit(body) ? '8bit' : '7bit' };
}

/**
 * Part 2, message/delivery-status (RFC 3464 §2.1-§2.3, fields in the order of the ABNF):
 * the per-message fields, then one block per recipient, each block preceded by a blank
 * line. 7-bit whatever the inputs hold.
 */
function deliveryStatusPart(input: DsnInput): Buffer {
  const perMessage: string[] = [];
  if (input.envid !== undefined) {
    // RFC 3461 §6.3 (a): ENVID is xtext on the wire, not in the field; decode it.
    let envid: string;
    try {
      envid = decodeXtext(input.envid);
    } catch {
      envid = input.envid;
    }
    perMessage.push(`Original-Envelope-Id: ${asciiLine(envid)}`);
  }
  perMessage.push(`Reporting-MTA: dns; ${input.reportingMta}`); // RFC 3464 §2.2.2, RFC 3461 §6.3 (b)
  perMessage.push(`Arrival-Date: ${rfc5322Date(input.arrivalDate)}`); // RFC 3464 §2.2.5, RFC 4865 §5.1.2 item 1
  if (input.futureReleaseRequest !== undefined) {
    // RFC 4865 §5.1.2 item 2: an extension per-message field (RFC 3464 §2.4).
    perMessage.push(`Future-Release-Request: ${asciiLine(input.futureReleaseRequest)}`);
  }
  const blocks = [perMessage.join(CRLF) + CRLF, ...input.recipients.map((r) => recipientFields(r).join(CRLF) + CRLF)];
  return Buffer.from(blocks.join(CRLF), 'latin1');
}

/** One recipient's block of part 2 (RFC 3464 §2.3). */
function recipientFields(r: DsnRecipient): string[] {
  const f: string[] = [];
  if (r.orcpt !== undefined) {
    const orig = originalRecipientField(r.orcpt); // RFC 3464 §2.3.1, RFC 3461 §6.3 (d)
    if (orig !== undefined) f.push(`Original-Recipient: ${orig}`);
  }
  f.push(`Final-Recipient: ${addressField('rfc822', r.address)}`); // RFC 3464 §2.3.2
  f.push(`Action: ${r.action}`); // RFC 3464 §2.3.3
  f.push(`Status: ${statusCode(r.status, r.action)}`); // RFC 3464 §2.3.4
  if (r.remoteMta !== undefined && mtaName(r.remoteMta) !== '') f.push(`Remote-MTA: dns; ${mtaName(r.remoteMta)}`); // §2.3.5
  if (r.diagnostic !== undefined) {
    const diag = diagnosticValue(r.diagnostic);
    if (diag !== '') f.push(`Diagnostic-Code: smtp; ${diag}`); // RFC 3464 §2.3.6, RFC 3461 §9.2
  }
  if (r.lastAttemptDate !== undefined) f.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttemptDate)}`); // §2.3.7
  if (r.willRetryUntil !== undefined && r.action === 'delayed') f.push(`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`); // §2.3.9
  return f;
}

/** Part 1, text/plain for a person (RFC 6522 §3 item 1): what happened to whom, and what is attached. */
function notificationText(input: DsnInput, returned: Returned, anyFailed: boolean): Buffer {
  const text: string[] = [];
  text.push(`This is the mail system at ${input.reportingMta}.`, '');
  if (anyFailed) {
    text.push('Your message was held for later delivery, as you asked when sending it, but when');
    text.push('its time came it could not be delivered to one or more of its recipients.');
  } else {
    text.push('Your message was held for later delivery, as you asked when sending it. Its time has');
    text.push('come, but delivery to the recipients below has not succeeded yet. It is still being');
    text.push('retried; you do not need to send it again.');
  }
  text.push('');
  for (const r of input.recipients) {
    text.push(`<${textLine(r.address)}>: ${r.action === 'failed' ? 'delivery failed' : 'delivery delayed'} (${statusCode(r.status, r.action)})`);
    if (r.diagnostic !== undefined) {
      const lines = diagnosticLines(r.diagnostic, textLine);
      const who = r.remoteMta !== undefined && mtaName(r.remoteMta) !== '' ? `${mtaName(r.remoteMta)} said` : 'The reply was';
      if (lines.length > 0) text.push(`    ${who}: ${textLine(lines.join(' / '))}`);
    }
  }
  text.push('');
  if (returned.kind === 'full') text.push('The message is attached.');
  else text.push(returned.reason ?? "The message's header is attached.");
  return Buffer.from(text.join(CRLF) + CRLF, 'utf8');
}

/** The header of one body part, after its boundary line (RFC 2046 §5.1.1). */
function partHeader(boundary: string, type: string, encoding: string, description: string): Buffer {
  return Buffer.from(
    `${CRLF}--${boundary}${CRLF}` +
      `Content-Type: ${type}${CRLF}` +
      `Content-Transfer-Encoding: ${encoding}${CRLF}` +
      `Content-Description: ${description}${CRLF}${CRLF}`,
    'latin1',
  );
}

/**
 * Builds the DSN. Throws RangeError for an empty sender (RFC 3461 §5.2: no DSN for a
 * message from <>), no recipients, or a reportingMta / messageIdDomain that is not a
 * host name.
 */
export function buildDsn(input: DsnInput, options: DsnOptions = {}): Buffer {
  if (input.sender === '') throw new RangeError('No DSN for the null reverse-path (RFC 3461 §5.2)');
  if (input.recipients.length === 0) throw new RangeError('A DSN needs at least one recipient (RFC 3464 §2.1)');
  if (!HOST.test(input.reportingMta)) throw new RangeError('reportingMta must be a host name');
  if (!HOST.test(input.messageIdDomain)) throw new RangeError('messageIdDomain must be a host name');

  const anyFailed = input.recipients.some((r) => r.action === 'failed');
  // Part 3, the returned content (RFC 3464 §2 (d), RFC 6522 §3 item 3 and §4).
  const returned = chooseReturned(input, options);
  const deliveryStatus = deliveryStatusPart(input);
  const textBody = notificationText(input, returned, anyFailed);
  const textIsAscii = !has8bit(textBody);
  const part1Body = textIsAscii ? textBody : Buffer.from(quotedPrintable(textBody), 'latin1');
  const part3Body = returned.encoding === 'quoted-printable' ? Buffer.from(quotedPrintable(returned.body), 'latin1') : returned.body;
  const boundary = newBoundary([part1Body, deliveryStatus, part3Body]);

  // The header (RFC 5322 §3.6; RFC 3834 §5 Auto-Submitted; RFC 6522 §3).
  const from = options.fromAddress ?? `MAILER-DAEMON@${input.reportingMta}`;
  const messageId = `<${input.now.getTime().toString(36)}.${randomBytes(8).toString('hex')}@${input.messageIdDomain}>`;
  const topEncoding = returned.encoding === '8bit' ? '8bit' : '7bit';
  const header = [
    `From: Mail Delivery System <${textLine(from, 320)}>`,
    `To: <${textLine(input.sender, 320)}>`,
    `Subject: ${anyFailed ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)'}`,
    `Date: ${rfc5322Date(input.now)}`,
    `Message-ID: ${messageId}`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF}\tboundary="${boundary}"`,
    `Content-Transfer-Encoding: ${topEncoding}`,
  ];

  const full = returned.kind === 'full';
  return Buffer.concat([
    Buffer.from(header.join(CRLF) + CRLF + CRLF + 'This is a MIME-encapsulated message.' + CRLF, 'utf8'),
    partHeader(boundary, `text/plain; charset=${textIsAscii ? 'us-ascii' : 'utf-8'}`, textIsAscii ? '7bit' : 'quoted-printable', 'Notification'),
    part1Body,
    partHeader(boundary, 'message/delivery-status', '7bit', 'Delivery report'),
    deliveryStatus,
    partHeader(boundary, full ? 'message/rfc822' : 'text/rfc822-headers', returned.encoding, full ? 'Undelivered message' : 'Undelivered message header'),
    part3Body,
    Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'latin1'),
  ]);
}
