/**
 * Parsing of submission command lines and their arguments: the verb split, MAIL FROM /
 * RCPT TO paths and parameters (RFC 5321 §4.1.2), the DSN parameter values (RFC 3461 §4),
 * SIZE (RFC 1870), BODY (RFC 6152, RFC 3030 §3), BDAT (RFC 3030 §2) and AUTH (RFC 4954 §4).
 *
 * Strict by default, lenient only where deployed clients need it:
 *
 *   - "MAIL FROM: <a@b>" (a space after the colon, sent by several old clients) is
 *     accepted, and FROM / TO match in any case (RFC 5321 §2.4).
 *   - Trailing white space after the arguments is ignored (RFC 5321 §4.1.1 asks receivers
 *     to tolerate it); parameters may be separated by more than one space.
 *   - Source routes ("<@a,@b:u@c>") are accepted and dropped (RFC 5321 §4.1.2, Appendix C).
 *   - An address is otherwise held to the grammar, since it is relayed to the upstream
 *     MTA and should not be something it parses differently.
 *
 * Non-ASCII in addresses and parameter values is allowed only when the caller says the
 * transaction is SMTPUTF8 (RFC 6531 §3.3). Lines arrive decoded as UTF-8; a U+FFFD from an
 * invalid sequence is refused, because relaying it would change the address.
 */

import { isIPv6 } from 'node:net';

export interface SmtpCommand {
  /** Upper-case. */
  verb: string;
  /** Everything after the single SP following the verb, trailing white space removed; may be ''. */
  args: string;
}

export class SmtpSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SmtpSyntaxError';
  }
}

export interface PathAndParams {
  /** The mailbox as written (route dropped); '' for the null reverse-path "<>". */
  address: string;
  /** Keyword (upper-case) -> value (xtext still encoded), or true for a keyword alone. */
  params: Map<string, string | true>;
}

export interface ParseOptions {
  /** The transaction uses SMTPUTF8 (RFC 6531): UTF-8 allowed in addresses and values. */
  utf8?: boolean;
}

/** RFC 4422 §3.1 sasl-mech: 1*20 of upper-case letters, digits, "-" and "_" (any case accepted). */
const SASL_MECH = /^[A-Za-z0-9_-]{1,20}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** RFC 5321 §4.1.2 esmtp-keyword. */
const ESMTP_KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** RFC 5321 §4.1.2 esmtp-value: 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF8-non-ascii. */
const ESMTP_VALUE = /^[\x21-\x3c\x3e-\x7e]+$/;
const ESMTP_VALUE_UTF8 = /^[\x21-\x3c\x3e-\x7e\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}]+$/u;
/** RFC 5322 §3.2.3 atext (RFC 5321 §4.1.2 Atom), and with RFC 6531 §3.3 UTF8-non-ascii. */
const DOT_STRING = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const DOT_STRING_UTF8 =
  /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}-]+)*$/u;
/** RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str]; RFC 6531 §3.3 adds U-label (checked loosely). */
const SUB_DOMAIN = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
const SUB_DOMAIN_UTF8 = /^[A-Za-z0-9\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}](?:[A-Za-z0-9\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}-]*[A-Za-z0-9\u0080-\ufffc\ufffe\uffff\u{10000}-\u{10ffff}])?$/u;
/** RFC 5321 §4.1.3 Snum. */
const SNUM = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
/** RFC 5321 §4.1.3 General-address-literal: Standardized-tag ":" 1*dcontent. */
const GENERAL_LITERAL = /^[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+$/;
const IPV6_LITERAL = /^IPv6:([0-9A-Fa-f:.]+)$/i;

/**
 * Local parts longer than RFC 5321 §4.5.3.1.1's 64 octets exist in the wild (VERP, SRS);
 * the bound is generous but keeps an address from filling a whole command line.
 */
const MAX_LOCAL_PART = 256;
/** RFC 5321 §4.5.3.1.2 (255 octets), which DNS imposes anyway. */
const MAX_DOMAIN = 255;
const MAX_LABEL = 63;
/** RFC 3461 §4.2: ORCPT's address is bounded so that DSNs stay usable. */
const MAX_ORCPT = 500;
/** RFC 3461 §4.4. */
const MAX_ENVID = 100;

/** Splits a command line into verb and arguments; undefined when there is no verb. */
export function parseCommandLine(line: string): SmtpCommand | undefined {
  // RFC 5321 §4.1.1: verbs are alphabetic, case-insensitive, separated by one SP.
  let i = 0;
  while (i < line.length && isAlpha(line.charCodeAt(i))) i++;
  if (i === 0) return undefined;
  if (i < line.length && line.charCodeAt(i) !== 0x20) return undefined;
  return { verb: line.slice(0, i).toUpperCase(), args: line.slice(i + 1).replace(/[ \t]+$/, '') };
}

/**
 * BDAT arguments (RFC 3030 §2: chunk-size [SP end-marker]). Used by both the reader,
 * which must switch to chunk mode on its own, and the session, so they can never disagree
 * about whether a chunk follows. 15 digits keep the size exact in a double.
 */
export function parseBdatArgs(args: string): { size: number; last: boolean } | undefined {
  const m = /^(\d{1,15})(?: +(LAST))?$/i.exec(args.trim());
  if (m === null) return undefined;
  return { size: Number(m[1]), last: m[2] !== undefined };
}

/** "FROM:<path> [params]"; "<>" gives address ''. */
export function parseMailFrom(args: string, opts: ParseOptions = {}): PathAndParams {
  return parsePathCommand(args, 'FROM:', opts, true);
}

/** "TO:<path> [params]"; the null path is refused, "<Postmaster>" accepted (RFC 5321 §4.1.1.3). */
export function parseRcptTo(args: string, opts: ParseOptions = {}): PathAndParams {
  return parsePathCommand(args, 'TO:', opts, false);
}

function parsePathCommand(args: string, prefix: string, opts: ParseOptions, mail: boolean): PathAndParams {
  if (args.slice(0, prefix.length).toUpperCase() !== prefix) {
    throw new SmtpSyntaxError(`Syntax: ${mail ? 'MAIL FROM:<address>' : 'RCPT TO:<address>'}`);
  }
  let i = prefix.length;
  while (args.charCodeAt(i) === 0x20) i++;
  if (args.charCodeAt(i) !== 0x3c) throw new SmtpSyntaxError('Address must be enclosed in <>');
  const close = pathEnd(args, i);
  const path = args.slice(i, close + 1);
  let address: string;
  if (path === '<>') {
    if (!mail) throw new SmtpSyntaxError('Null recipient not allowed');
    address = '';
  } else if (!mail && /^<postmaster>$/i.test(path)) {
    address = path.slice(1, -1);
  } else {
    address = parseAddress(path, opts);
  }
  return { address, params: parseParams(args.slice(close + 1), opts) };
}

/** Index of the ">" closing the path opened at `open`, skipping quoted strings. */
function pathEnd(s: string, open: number): number {
  let quoted = false;
  for (let i = open + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c) i++;
      else if (c === 0x22) quoted = false;
    } else if (c === 0x22) {
      quoted = true;
    } else if (c === 0x3e) {
      return i;
    }
  }
  throw new SmtpSyntaxError(quoted ? 'Unbalanced quotes in address' : 'Missing > after address');
}

/** Mail-parameters / Rcpt-parameters (RFC 5321 §4.1.2): SP-separated esmtp-params. */
function parseParams(rest: string, opts: ParseOptions): Map<string, string | true> {
  const params = new Map<string, string | true>();
  if (rest === '') return params;
  if (rest.charCodeAt(0) !== 0x20) throw new SmtpSyntaxError('Parameters must follow the address after a space');
  for (const item of rest.split(' ')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const keyword = eq === -1 ? item : item.slice(0, eq);
    if (!ESMTP_KEYWORD.test(keyword)) throw new SmtpSyntaxError('Bad parameter keyword');
    const upper = keyword.toUpperCase();
    if (params.has(upper)) throw new SmtpSyntaxError(`Duplicate parameter ${upper.slice(0, 30)}`);
    if (eq === -1) {
      params.set(upper, true);
      continue;
    }
    const value = item.slice(eq + 1);
    if (!(opts.utf8 ? ESMTP_VALUE_UTF8 : ESMTP_VALUE).test(value)) {
      throw new SmtpSyntaxError(`Bad value for parameter ${upper.slice(0, 30)}`);
    }
    params.set(upper, value);
  }
  return params;
}

/**
 * A Path ("<[route:]mailbox>") or a bare Mailbox; returns the mailbox as written (quoted
 * local parts keep their quotes), without the route. The null path is not an address.
 */
export function parseAddress(path: string, opts: ParseOptions = {}): string {
  let inner = path;
  if (path.startsWith('<')) {
    if (!path.endsWith('>') || path.length < 2) throw new SmtpSyntaxError('Missing > after address');
    inner = path.slice(1, -1);
    if (inner.startsWith('@')) {
      // RFC 5321 §4.1.2 A-d-l; §3.3 / Appendix C: servers SHOULD accept and ignore it.
      const colon = inner.indexOf(':');
      if (colon === -1) throw new SmtpSyntaxError('Bad source route');
      for (const hop of inner.slice(0, colon).split(',')) {
        if (!hop.startsWith('@') || !isDomain(hop.slice(1), opts)) throw new SmtpSyntaxError('Bad source route');
      }
      inner = inner.slice(colon + 1);
    }
  }
  if (inner === '') throw new SmtpSyntaxError('Empty address');
  const at = localPartEnd(inner, opts.utf8 === true);
  if (at >= inner.length || inner.charCodeAt(at) !== 0x40) throw new SmtpSyntaxError('Address needs a domain');
  const local = inner.slice(0, at);
  const domain = inner.slice(at + 1);
  if (!local.startsWith('"') && !(opts.utf8 ? DOT_STRING_UTF8 : DOT_STRING).test(local)) {
    throw new SmtpSyntaxError('Bad local part');
  }
  if (Buffer.byteLength(local) > MAX_LOCAL_PART) throw new SmtpSyntaxError('Local part too long');
  if (domain.startsWith('[')) {
    if (!isAddressLiteral(domain)) throw new SmtpSyntaxError('Bad address literal');
  } else if (!isDomain(domain, opts)) {
    throw new SmtpSyntaxError('Bad domain');
  }
  return inner;
}

/** Index just past the local part: after its closing quote, or the first "@". */
function localPartEnd(s: string, utf8: boolean): number {
  if (s.charCodeAt(0) !== 0x22) {
    const at = s.indexOf('@');
    return at === -1 ? s.length : at;
  }
  // RFC 5321 §4.1.2 Quoted-string: qtextSMTP = %d32-33 / %d35-91 / %d93-126,
  // quoted-pairSMTP = "\" %d32-126 (RFC 6531 §3.3: plus UTF8-non-ascii).
  for (let i = 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) return i + 1;
    if (c === 0x5c) {
      i++;
      const q = s.charCodeAt(i);
      if (!(q >= 0x20 && q <= 0x7e)) throw new SmtpSyntaxError('Bad quoted pair in local part');
    } else if (c < 0x20 || c === 0x7f || (c > 0x7f && (!utf8 || c === 0xfffd))) {
      throw new SmtpSyntaxError('Bad character in quoted local part');
    }
  }
  throw new SmtpSyntaxError('Unbalanced quotes in address');
}

function isDomain(domain: string, opts: ParseOptions): boolean {
  if (domain === '' || Buffer.byteLength(domain) > MAX_DOMAIN) return false;
  const re = opts.utf8 ? SUB_DOMAIN_UTF8 : SUB_DOMAIN;
  for (const label of domain.split('.')) {
    if (!re.test(label) || Buffer.byteLength(label) > MAX_LABEL) return false;
  }
  return true;
}

/** RFC 5321 §4.1.3 address-literal. */
function isAddressLiteral(s: string): boolean {
  if (!s.endsWith(']')) return false;
  const body = s.slice(1, -1);
  const parts = body.split('.');
  if (parts.length === 4 && parts.every((p) => SNUM.test(p))) return true;
  const v6 = IPV6_LITERAL.exec(body);
  // RFC 5321 §4.1.3 IPv6-addr is the RFC 4291 text form, which node:net checks.
  if (v6 !== null) return isIPv6(v6[1] as string);
  return !/^IPv6:/i.test(body) && GENERAL_LITERAL.test(body);
}

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

// ---- RFC 3461 xtext and DSN parameters ------------------------------------------------

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** RFC 3461 §4 xtext bytes; lower-case hex is accepted though the RFC asks for upper. */
function xtextBytes(s: string): Buffer {
  const out = Buffer.allocUnsafe(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const h1 = s.charCodeAt(i + 1);
      const h2 = s.charCodeAt(i + 2);
      if (!isHex(h1) || !isHex(h2)) throw new SmtpSyntaxError('Bad xtext: "+" needs two hex digits');
      out[n++] = parseInt(s.slice(i + 1, i + 3), 16);
      i += 2;
    } else if (c >= 0x21 && c <= 0x7e && c !== 0x3d) {
      out[n++] = c;
    } else {
      throw new SmtpSyntaxError('Bad xtext character');
    }
  }
  return out.subarray(0, n);
}

/** Decodes RFC 3461 §4 xtext; the bytes are read as UTF-8. */
export function decodeXtext(s: string): string {
  return xtextBytes(s).toString('utf8');
}

/** Encodes to RFC 3461 §4 xtext ("+", "=", and bytes outside "!".."~" as "+HH"). */
export function encodeXtext(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    if (b >= 0x21 && b <= 0x7e && b !== 0x2b && b !== 0x3d) out += String.fromCharCode(b);
    else out += `+${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** RFC 3461 §4.1: "NEVER", or a comma list of SUCCESS / FAILURE / DELAY, each at most once. */
export function validateNotify(v: string): boolean {
  const items = v.toUpperCase().split(',');
  if (items.length === 1 && items[0] === 'NEVER') return true;
  const seen = new Set<string>();
  for (const item of items) {
    if (item !== 'SUCCESS' && item !== 'FAILURE' && item !== 'DELAY') return false;
    if (seen.has(item)) return false;
    seen.add(item);
  }
  return true;
}

/**
 * RFC 3461 §4.2 orcpt-parameter: addr-type ";" xtext, addr-type an atom (RFC 5322 §3.2.3).
 * The value is returned as sent (still xtext, or RFC 6533 utf-8-addr); undefined when
 * there is no addr-type. Both the RCPT check and the DSN's Original-Recipient use it.
 */
export function splitOrcpt(v: string): { type: string; value: string } | undefined {
  const semi = v.indexOf(';');
  if (semi <= 0) return undefined;
  const type = v.slice(0, semi);
  if (!/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/.test(type)) return undefined;
  return { type, value: v.slice(semi + 1) };
}

/** RFC 3461 §4.2: a valid ORCPT value, its decoded address 1..500 octets. */
export function validateOrcpt(v: string): boolean {
  const orcpt = splitOrcpt(v);
  if (orcpt === undefined) return false;
  const type = orcpt.type;
  let value = orcpt.value;
  if (type.toLowerCase() === 'utf-8') {
    // RFC 6533 §3: utf-8-addr-unitext may carry raw UTF-8 under SMTPUTF8; check the rest as xtext.
    if (value.includes('\ufffd')) return false;
    value = value.replace(/[^\x00-\x7f]/gu, 'x');
  }
  try {
    const bytes = xtextBytes(value);
    return bytes.length > 0 && bytes.length <= MAX_ORCPT;
  } catch {
    return false;
  }
}

/** RFC 3461 §4.3. */
export function validateRet(v: string): boolean {
  const u = v.toUpperCase();
  return u === 'FULL' || u === 'HDRS';
}

/** RFC 3461 §4.4: xtext, at most 100 characters once decoded. */
export function validateEnvid(v: string): boolean {
  try {
    const bytes = xtextBytes(v);
    return bytes.length > 0 && bytes.length <= MAX_ENVID;
  } catch {
    return false;
  }
}

/** RFC 1870 §4 size-value: 1*20DIGIT. Very large values lose precision but stay huge. */
export function parseSize(v: string): number | undefined {
  return /^\d{1,20}$/.test(v) ? Number(v) : undefined;
}

/** BODY values: RFC 6152 §2 (7BIT, 8BITMIME) and RFC 3030 §3 (BINARYMIME). */
export function validateBody(v: string): '7BIT' | '8BITMIME' | 'BINARYMIME' | undefined {
  const u = v.toUpperCase();
  return u === '7BIT' || u === '8BITMIME' || u === 'BINARYMIME' ? u : undefined;
}

// ---- RFC 4954 AUTH --------------------------------------------------------------------

/**
 * "mechanism [SP initial-response]" (RFC 4954 §4). The mechanism is returned upper-case;
 * initial is returned as sent, so "=" (an empty initial response) stays "=" and the
 * caller tells it apart from a missing one.
 */
export function parseAuthArgs(args: string): { mechanism: string; initial?: string } | undefined {
  const parts = args.split(' ');
  if (parts.length > 2) return undefined;
  const [mechanism, initial] = parts as [string, string | undefined];
  if (!SASL_MECH.test(mechanism)) return undefined;
  if (initial === undefined) return { mechanism: mechanism.toUpperCase() };
  if (initial !== '=' && (initial === '' || !BASE64.test(initial))) return undefined;
  return { mechanism: mechanism.toUpperCase(), initial };
}

/** Base64 (RFC 4648 §4) with correct padding and nothing else; '' decodes to no bytes. */
export function decodeBase64Strict(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !BASE64.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}
