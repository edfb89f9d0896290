/**
 * The IMAP URL (RFC 5092): the project's one parser and formatter, used by CATENATE
 * (RFC 4469), URLAUTH / GENURLAUTH / URLFETCH (RFC 4467) and BURL (RFC 4468).
 *
 * Grammar (RFC 5092 §11, normative, which updates RFC 4467's; §6.1.2 for URLAUTH):
 *
 *   imapurl       = "imap://" iserver ipath-query
 *   iserver       = [iuserinfo "@"] host [":" port]
 *   iuserinfo     = enc-user [iauth] / [enc-user] iauth       ; §3.2
 *   iauth         = ";AUTH=" ( "*" / enc-auth-type )
 *   ipath-query   = ["/" [ icommand ]]
 *   icommand      = imessagelist / imessagepart [iurlauth]
 *   imessagelist  = imailbox-ref [ "?" enc-search ]           ; §5
 *   imessagepart  = imailbox-ref iuid [isection] [ipartial]   ; §6
 *   imailbox-ref  = enc-mailbox [";UIDVALIDITY=" nz-number]
 *   iuid          = "/;UID=" nz-number
 *   isection      = "/;SECTION=" enc-section
 *   ipartial      = "/;PARTIAL=" number ["." nz-number]
 *   iurlauth      = [";EXPIRE=" date-time] ";URLAUTH=" access [":" mechanism ":" enc-urlauth]
 *   access        = ("submit+" enc-user) / ("user+" enc-user) / "authuser" / "anonymous"
 *   enc-urlauth   = 32*HEXDIG
 *   achar = unreserved / "!$'()*+," / "&" / "=" / pct-encoded  (no ";" ":" "@" "/")
 *   bchar = achar / ":" / "@" / "/"
 *
 * Keywords and the scheme are case-insensitive (RFC 5234 quoted strings); percent-escape
 * hex digits are accepted in either case. What is parsed, beyond the bare grammar:
 *
 *   - Mailbox names are Unicode. RFC 5092 §8: IMAP's modified UTF-7 "MUST be converted
 *     to UTF-8", whose octets are then percent-encoded, so the URL carries the UTF-8 of
 *     the name the user sees, and `mailbox` here is that name ("Entwürfe");
 *     encodeMutf7 (mutf7.ts) gives the form to send upstream. %-escapes that are not
 *     UTF-8 are rejected.
 *   - enc-section must decode to an RFC 3501 §9 section-spec; its keywords are upper-cased.
 *     Header field names must be atoms or quoted strings, and "]" is refused in them
 *     (RFC 3501 allows it in an astring) so a section can never close a BODY[...] early.
 *   - enc-search is kept as decoded text (UTF-8); it is not checked against search-program.
 *   - ";EXPIRE=" must be an RFC 3339 §5.6 date-time with valid field ranges.
 *   - Numbers are RFC 3501 32-bit; nz-number has no leading zero; port is 1-65535.
 *   - host is a reg-name (RFC 3986 §3.2.2, without %-escapes), an IPv4 address, or an
 *     IPv6 literal in brackets (IPvFuture is refused); it is lower-cased (§6.2.2.1).
 *   - NUL is refused in every decoded field (IMAP's CHAR8 excludes it).
 *   - A path segment that is exactly "." or ".." and a mailbox name starting with "/" are
 *     refused, as RFC 5092 §7 and §7.1 require them percent-encoded (dot segments would be
 *     removed by RFC 3986 §5.2.4 resolution, and "//" would start a network path); the
 *     formatter writes them as %2E and %2F. No dot-segment removal is done: a URL that
 *     needs it ("/foo/;UID=20/..", RFC 5092 §9.1) is refused.
 *   - ";URLAUTH=" only in the absolute form: URLAUTH authorizes "authimapurl" (§11), which
 *     starts with "imap://", and a relative URL's rump would not be what was authorized.
 *
 * Forms (RFC 5092 §7, RFC 3986 §4.2): absolute `imap://...`, and absolute-path
 * references `/mailbox...` as CATENATE sends them (RFC 4469's examples), which take
 * the server from the base. Relative-path references (`;SECTION=1.2`) are refused as RFC 5092 §7.2
 * requires ("MUST NOT generate or accept"); network-path references (`//host/...`, §7)
 * are refused too: they are "rarely used" and an absolute URL says the same.
 *
 * Canonical form (formatImapUrl): "imap://", keywords upper-case as in the ABNF
 * (";UIDVALIDITY=", ";UID=", ";SECTION=", ";PARTIAL=", ";EXPIRE=", ";URLAUTH=",
 * ";AUTH="), access identifiers lower-case as in RFC 5092 §6.1.2's example, the mechanism
 * upper-case ("INTERNAL"), the token lower-case hex, %-escapes upper-case (RFC 3986
 * §2.1) and only where the grammar requires them, numbers without leading zeros, always
 * a "/" after the server. parse(format(u)) deep-equals u for every formattable u, and
 * format(parse(s)) === s for canonical s.
 *
 * Errors: every malformed input gives an ImapUrlError, never another exception.
 */
import { isIPv6 } from 'node:net';

/** Longest URL text accepted (RFC 5092 sets none; RFC 4469 URLs travel in one command line). */
export const MAX_IMAP_URL_LENGTH = 8192;

export class ImapUrlError extends Error {
  override name = 'ImapUrlError';
}

/** The server part (RFC 5092 §3, §4): who to ask and as whom. */
export interface ImapServer {
  /** Decoded enc-user: the IMAP authorization identity (§3.2). */
  user?: string;
  /** Decoded enc-auth-type, or "*" for "any mechanism" (§3.2). */
  auth?: string;
  /** Lower-cased; an IPv6 literal without its brackets. */
  host: string;
  port?: number;
}

/** RFC 5092 §6.1.2 access identifiers (same shape as lemonade/urlauth.ts `Access`). */
export type UrlAccess =
  | { kind: 'submit'; user: string }
  | { kind: 'user'; user: string }
  | { kind: 'authuser' }
  | { kind: 'anonymous' };

/** RFC 5092 §6.1.2 / §11 iurlauth: the rump part, and the verifier when the URL is authorized. */
export interface UrlAuth {
  /** RFC 3339 date-time as written (with "T" and "Z" upper-cased). See expireTime(). */
  expire?: string;
  access: UrlAccess;
  /** Upper-cased mechanism name, e.g. "INTERNAL"; with token, or neither (a rump URL). */
  mechanism?: string;
  /** Lower-case hex, 32 digits or more. */
  token?: string;
}

export interface PartialRange {
  offset: number;
  length?: number;
}

/**
 * One IMAP URL. Absent fields are absent keys (never undefined values). server is
 * absent only for an absolute-path reference parsed without a base.
 */
export interface ImapUrl {
  server?: ImapServer;
  /** The Unicode mailbox name; absent for a server-only URL (`imap://host/`). */
  mailbox?: string;
  uidValidity?: number;
  /** Decoded enc-search (only without uid). */
  search?: string;
  uid?: number;
  /** Decoded section-spec, keywords upper-cased: "1.2", "1.2.MIME", "HEADER.FIELDS (FROM TO)". */
  section?: string;
  partial?: PartialRange;
  urlauth?: UrlAuth;
}

/** 'absolute': `imap://...`; 'absolute-path': `/...`, server taken from the base. */
export type ImapUrlForm = 'absolute' | 'absolute-path';

export interface ParsedImapUrl {
  url: ImapUrl;
  form: ImapUrlForm;
  /** The text exactly as given. */
  text: string;
  /**
   * For a URL with ";URLAUTH=": the given text up to and including the access
   * identifier (RFC 5092 §11 authimapurlrump, RFC 4467's "rump URL"), without the
   * ":mech:token" verifier.
   */
  rumpText?: string;
}

export interface ParseImapUrlOptions {
  /** Default MAX_IMAP_URL_LENGTH. */
  maxLength?: number;
}

// --- Character sets (RFC 5092 §11, RFC 3986 §2) -------------------------------------

const UNRESERVED = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~';
/** achar without pct-encoded: unreserved, sub-delims-sh, "&", "=". */
const ACHAR = charTable(`${UNRESERVED}!$'()*+,&=`);
/** bchar without pct-encoded. */
const BCHAR = charTable(`${UNRESERVED}!$'()*+,&=:@/`);
/** RFC 3986 reg-name without pct-encoded: unreserved and all sub-delims. */
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=]+$/;

function charTable(chars: string): boolean[] {
  const table = new Array<boolean>(128).fill(false);
  for (const c of chars) table[c.charCodeAt(0)] = true;
  return table;
}

const LONE_SURROGATE = /\p{Cs}/u;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

function fail(message: string): never {
  throw new ImapUrlError(message);
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  const lower = code | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** Decode %XX escapes (RFC 3986 §2.1) in raw, whose bare characters must be in allowed. */
function pctDecode(raw: string, allowed: boolean[], what: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const code = raw.charCodeAt(i);
    if (code === 0x25) {
      const hi = hexValue(raw.charCodeAt(i + 1));
      const lo = hexValue(raw.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) fail(`bad percent-escape "${raw.slice(i, i + 3)}" in ${what}`);
      bytes.push(hi * 16 + lo);
      i += 2;
    } else if (code < 0x80 && allowed[code]) {
      bytes.push(code);
    } else {
      fail(`character ${describe(raw, i)} must be percent-encoded in ${what}`);
    }
  }
  let text: string;
  try {
    text = UTF8.decode(new Uint8Array(bytes));
  } catch {
    fail(`${what} is not UTF-8 once percent-decoded`);
  }
  if (text.includes('\0')) fail(`${what} contains NUL`);
  return text;
}

function describe(s: string, i: number): string {
  const cp = s.codePointAt(i) ?? 0;
  const printable = cp > 0x20 && cp < 0x7f;
  return printable ? `"${String.fromCodePoint(cp)}"` : `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** One byte as RFC 3986 §2.1 pct-encoded: "%" and two upper-case hex digits. */
export function percentEncoded(byte: number): string {
  return `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
}

/** Percent-encode every UTF-8 byte of value that may not appear bare. */
function pctEncode(value: string, allowed: boolean[], what: string): string {
  if (LONE_SURROGATE.test(value)) fail(`${what} is not well-formed Unicode (lone surrogate)`);
  if (value.includes('\0')) fail(`${what} contains NUL`);
  let out = '';
  for (const b of Buffer.from(value, 'utf8')) {
    out += b < 0x80 && allowed[b] ? String.fromCharCode(b) : percentEncoded(b);
  }
  return out;
}

/**
 * bchar-encode a value that lies in the path (mailbox, section). RFC 5092 §7: dot
 * segments "MUST be percent-encoded"; §7.1: so must a leading "/", or an absolute-path
 * reference would read as a network-path one ("//...").
 */
function encodePathValue(value: string, what: string): string {
  return pctEncode(value, BCHAR, what)
    .replace(/^\//, '%2F')
    .split('/')
    .map((seg) => (seg === '.' ? '%2E' : seg === '..' ? '%2E%2E' : seg))
    .join('/');
}

/**
 * Decode a path value, refusing what RFC 5092 §7 and §7.1 require to be percent-encoded:
 * a leading "/" and "." or ".." segments (RFC 3986 §5.2.4 would remove them). When
 * ";UIDVALIDITY=" follows, it belongs to the last segment, which is then no dot segment
 * (RFC 5092 §5, §9.1: "..;UIDVALIDITY=385759045/;UID=20").
 */
function decodePathValue(raw: string, what: string, lastIsDotSafe = false): string {
  if (raw === '') fail(`empty ${what}`);
  if (raw.startsWith('/')) fail(`${what} starts with "/" (RFC 5092 §7.1: write it as %2F)`);
  const segs = raw.split('/');
  if (lastIsDotSafe) segs.pop();
  for (const seg of segs) {
    if (seg === '.' || seg === '..') fail(`"${seg}" path segment in ${what} (RFC 5092 §7: write it as %2E)`);
  }
  return pctDecode(raw, BCHAR, what);
}

// --- Numbers (RFC 3501 §9 number / nz-number: unsigned 32-bit) ------------------------

const MAX_U32 = 0xffffffff;

function parseNumber(raw: string, what: string, nonZero: boolean): number {
  if (!(nonZero ? /^[1-9][0-9]*$/ : /^[0-9]+$/).test(raw)) {
    fail(`${what} must be ${nonZero ? 'a non-zero number without leading zeros' : 'a number'}, got "${clip(raw)}"`);
  }
  const trimmed = raw.replace(/^0+(?=.)/, '');
  const n = trimmed.length > 10 ? Infinity : Number(trimmed);
  if (n > MAX_U32) fail(`${what} ${clip(raw)} exceeds 4294967295`);
  return n;
}

function checkNumber(n: unknown, what: string, nonZero: boolean): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < (nonZero ? 1 : 0) || n > MAX_U32) {
    fail(`${what} must be an integer ${nonZero ? 1 : 0}..4294967295`);
  }
  return n;
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

// --- Server (RFC 5092 §3, §4; RFC 3986 §3.2) ------------------------------------------

function parseServer(authority: string): ImapServer {
  const at = authority.indexOf('@');
  if (at !== authority.lastIndexOf('@')) fail('more than one "@" in the server part');
  const server: ImapServer = { host: '' };
  let hostPort = authority;
  if (at >= 0) {
    parseUserinfo(authority.slice(0, at), server);
    hostPort = authority.slice(at + 1);
  }
  let portRaw: string | undefined;
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']');
    if (close < 0) fail('unterminated IPv6 literal "[" in host');
    const inner = hostPort.slice(1, close);
    if (inner.includes('%') || !isIPv6(inner)) fail(`"[${clip(inner)}]" is not an IPv6 address (IPvFuture and zone ids are not supported)`);
    server.host = inner.toLowerCase();
    const rest = hostPort.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) fail('unexpected text after IPv6 literal');
      portRaw = rest.slice(1);
    }
  } else {
    const colon = hostPort.indexOf(':');
    const host = colon < 0 ? hostPort : hostPort.slice(0, colon);
    if (colon >= 0) portRaw = hostPort.slice(colon + 1);
    if (host === '') fail('empty host');
    if (!REG_NAME.test(host)) fail(`host "${clip(host)}" is not a valid host name or IPv4 address`);
    server.host = host.toLowerCase();
  }
  // RFC 3986 §3.2.3: port = *DIGIT, so "host:" is a host with no port.
  if (portRaw !== undefined && portRaw !== '') {
    if (!/^[0-9]+$/.test(portRaw)) fail(`port "${clip(portRaw)}" is not a number`);
    const port = portRaw.length > 5 ? Infinity : Number(portRaw);
    if (port < 1 || port > 65535) fail(`port ${clip(portRaw)} is out of range 1-65535`);
    server.port = port;
  }
  return server;
}

/** RFC 5092 §3.2: iuserinfo = enc-user [";AUTH=" ...] / [enc-user] ";AUTH=" ... */
function parseUserinfo(raw: string, server: ImapServer): void {
  const semi = raw.indexOf(';');
  const userRaw = semi < 0 ? raw : raw.slice(0, semi);
  if (semi >= 0) {
    const rest = raw.slice(semi);
    if (rest.slice(0, 6).toUpperCase() !== ';AUTH=') fail(`unexpected "${clip(rest)}" in user part (only ";AUTH=" may follow the user)`);
    const authRaw = rest.slice(6);
    if (authRaw === '') fail('empty ";AUTH=" mechanism');
    if (authRaw === '*') {
      server.auth = '*';
    } else {
      const auth = pctDecode(authRaw, ACHAR, 'enc-auth-type');
      // RFC 3501 §9 auth-type = atom, so a decoded "%2A" is refused: RFC 5092 §3.2 says
      // ";AUTH=%2A" does not mean ";AUTH=*".
      if (!ATOM.test(auth)) fail(`";AUTH=" mechanism "${clip(auth)}" is not an IMAP atom`);
      server.auth = auth;
    }
  }
  if (userRaw !== '') server.user = pctDecode(userRaw, ACHAR, 'enc-user');
  else if (semi < 0) fail('empty user name before "@"');
}

function formatServer(server: ImapServer): string {
  if (typeof server !== 'object' || server === null) fail('server must be an object');
  let out = '';
  if (server.user !== undefined || server.auth !== undefined) {
    if (server.user !== undefined) {
      if (typeof server.user !== 'string' || server.user === '') fail('server.user must be a non-empty string');
      out += pctEncode(server.user, ACHAR, 'user');
    }
    if (server.auth !== undefined) {
      if (typeof server.auth !== 'string' || (server.auth !== '*' && !ATOM.test(server.auth))) {
        fail('server.auth must be "*" or an IMAP atom');
      }
      out += `;AUTH=${server.auth === '*' ? '*' : pctEncode(server.auth, ACHAR, 'auth')}`;
    }
    out += '@';
  }
  const host = typeof server.host === 'string' ? server.host.toLowerCase() : '';
  if (host.includes(':')) {
    if (host.includes('%') || !isIPv6(host)) fail(`host "${clip(host)}" is not an IPv6 address`);
    out += `[${host}]`;
  } else {
    if (!REG_NAME.test(host)) fail(`host "${clip(host)}" is not a valid host name or IPv4 address`);
    out += host;
  }
  if (server.port !== undefined) {
    const p = server.port;
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) fail('port must be an integer 1-65535');
    out += `:${p}`;
  }
  return out;
}

// --- Section (RFC 3501 §9 section-spec) ------------------------------------------------

/** RFC 3501 §9 ATOM-CHAR: CHAR except atom-specials ( ) { SP CTL % * " \ ]. */
const ATOM = /^[^\x00-\x20\x7f-\uffff(){%*"\\\]]+$/;
const ATOM_CHAR = /[^\x00-\x20\x7f-\uffff(){%*"\\\]]/;

/**
 * Check a decoded section against section-spec and return it with its keywords
 * upper-cased:
 *   section-spec    = section-msgtext / (section-part ["." section-text])
 *   section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
 *   section-part    = nz-number *("." nz-number)
 *   section-text    = section-msgtext / "MIME"
 */
function normalizeSection(spec: string): string {
  let i = 0;
  let out = '';
  // section-part
  while (/[0-9]/.test(spec[i] ?? '')) {
    const m = /^[0-9]+/.exec(spec.slice(i))!;
    out += parseNumber(m[0], 'section part number', true);
    i += m[0].length;
    if (i === spec.length) return out;
    if (spec[i] !== '.') fail(`unexpected "${clip(spec.slice(i))}" in section "${clip(spec)}"`);
    out += '.';
    i++;
  }
  const partDone = out !== '';
  const rest = spec.slice(i);
  const upper = rest.toUpperCase();
  if (upper === 'HEADER' || upper === 'TEXT' || (partDone && upper === 'MIME')) return out + upper;
  const fields = /^HEADER\.FIELDS(\.NOT)? /i.exec(rest);
  if (fields === null) fail(`"${clip(spec)}" is not an IMAP section-spec (RFC 3501 §9)`);
  return out + fields[0].toUpperCase() + headerList(rest.slice(fields[0].length), spec);
}

/** header-list = "(" header-fld-name *(SP header-fld-name) ")", names as atoms or quoted. */
function headerList(s: string, spec: string): string {
  const bad = (): never => fail(`bad header list in section "${clip(spec)}"`);
  if (s[0] !== '(' || s[s.length - 1] !== ')') bad();
  let i = 1;
  const end = s.length - 1;
  for (;;) {
    if (s[i] === '"') {
      i++;
      while (i < end && s[i] !== '"') {
        if (s[i] === '\\') {
          i++;
          if (s[i] !== '"' && s[i] !== '\\') bad();
        } else if (!/[\x01-\x09\x0b\x0c\x0e-\x7f]/.test(s[i]!)) {
          bad();
        }
        i++;
      }
      if (s[i] !== '"') bad();
      i++;
    } else {
      const start = i;
      while (i < end && ATOM_CHAR.test(s[i]!)) i++;
      if (i === start) bad();
    }
    if (i === end) return s;
    if (s[i] !== ' ') bad();
    i++;
  }
}

// --- URLAUTH (RFC 5092 §6.1.2 and §11, which update RFC 4467's grammar) ---------------

/** RFC 3339 §5.6 date-time; "T" and "Z" may be lower case (§5.6 NOTE). */
const DATE_TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$/;

/**
 * Milliseconds since the epoch for an RFC 3339 date-time (";EXPIRE=", RFC 5092 §6.1.2). A
 * leap second (:60) counts as the next second. Throws ImapUrlError if it is not one.
 */
export function expireTime(dateTime: string): number {
  const m = typeof dateTime === 'string' ? DATE_TIME.exec(dateTime) : null;
  if (m === null) fail(`";EXPIRE=" value "${clip(String(dateTime))}" is not an RFC 3339 date-time`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (days === undefined || day < 1 || day > days || hour > 23 || minute > 59 || second > 60) {
    fail(`";EXPIRE=" value "${clip(dateTime)}" has a field out of range`);
  }
  let offsetMinutes = 0;
  const zone = m[8]!;
  if (zone !== 'Z' && zone !== 'z') {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 23 || om > 59) fail(`";EXPIRE=" value "${clip(dateTime)}" has a bad time offset`);
    offsetMinutes = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const frac = m[7] === undefined ? 0 : Math.floor(Number(`0${m[7]}`) * 1000);
  // Not Date.UTC, which takes years 0-99 as 1900-1999. setUTCHours rolls :60 over.
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, frac);
  return d.getTime() - offsetMinutes * 60_000;
}

function normalizeExpire(raw: string): string {
  expireTime(raw);
  return raw.replace(/[tz]/g, (c) => c.toUpperCase());
}

const MECHANISM = /^[A-Za-z0-9\-.]+$/;
const TOKEN = /^[0-9A-Fa-f]{32,}$/;

function parseAccess(raw: string): UrlAccess {
  const lower = raw.toLowerCase();
  if (lower === 'authuser') return { kind: 'authuser' };
  if (lower === 'anonymous') return { kind: 'anonymous' };
  const m = /^(submit|user)\+/i.exec(raw);
  if (m === null) fail(`";URLAUTH=" access "${clip(raw)}" is not submit+user, user+user, authuser or anonymous`);
  const userRaw = raw.slice(m[0].length);
  if (userRaw === '') fail(`empty user name in ";URLAUTH=${clip(raw)}"`);
  return { kind: m[1]!.toLowerCase() as 'submit' | 'user', user: pctDecode(userRaw, ACHAR, 'access user') };
}

function formatAccess(access: UrlAccess): string {
  switch (access?.kind) {
    case 'authuser':
    case 'anonymous':
      return access.kind;
    case 'submit':
    case 'user':
      if (typeof access.user !== 'string' || access.user === '') fail('access user must be a non-empty string');
      return `${access.kind}+${pctEncode(access.user, ACHAR, 'access user')}`;
    default:
      return fail('access must be submit, user, authuser or anonymous');
  }
}

function checkVerifier(mechanism: unknown, token: unknown): { mechanism: string; token: string } {
  if (typeof mechanism !== 'string' || !MECHANISM.test(mechanism)) fail('URLAUTH mechanism must be 1*(ALPHA / DIGIT / "-" / ".")');
  if (typeof token !== 'string' || !TOKEN.test(token)) fail('URLAUTH token must be 32 or more hex digits');
  return { mechanism: mechanism.toUpperCase(), token: token.toLowerCase() };
}

/** Parse iurlauth from its first ";" (RFC 5092 §6.1.2). Returns the rump's length in s. */
function parseUrlauth(s: string, url: ImapUrl): number {
  let i = 0;
  let expire: string | undefined;
  if (s.slice(0, 8).toUpperCase() === ';EXPIRE=') {
    const next = s.indexOf(';', 8);
    if (next < 0) fail('";EXPIRE=" without ";URLAUTH="');
    expire = normalizeExpire(s.slice(8, next));
    i = next;
  }
  if (s.slice(i, i + 9).toUpperCase() !== ';URLAUTH=') fail(`unexpected "${clip(s.slice(i))}" after the message part`);
  i += 9;
  const colon = s.indexOf(':', i);
  const rumpEnd = colon < 0 ? s.length : colon;
  const auth: UrlAuth = { access: parseAccess(s.slice(i, rumpEnd)) };
  if (expire !== undefined) auth.expire = expire;
  if (colon >= 0) {
    const second = s.indexOf(':', colon + 1);
    if (second < 0) fail('URLAUTH verifier must be ":" mechanism ":" token');
    Object.assign(auth, checkVerifier(s.slice(colon + 1, second), s.slice(second + 1)));
  }
  url.urlauth = auth;
  return rumpEnd;
}

// --- Path (RFC 5092 §5, §6) -------------------------------------------------------------

/** Case-insensitive "starts with keyword at i". */
function keywordAt(s: string, i: number, keyword: string): boolean {
  return s.slice(i, i + keyword.length).toUpperCase() === keyword;
}

/** Index of the first of the given characters at or after from, or s.length. */
function findAny(s: string, chars: string, from: number): number {
  for (let i = from; i < s.length; i++) if (chars.includes(s[i]!)) return i;
  return s.length;
}

/**
 * Parse icommand (the path after the server's "/"), into url. Returns the length of the
 * rump inside path when there is a ";URLAUTH=", else -1.
 */
function parsePath(path: string, url: ImapUrl): number {
  if (path === '') return -1;
  // enc-mailbox is 1*bchar and bchar has no ";": the mailbox runs to the first ";",
  // less the "/" of "/;UID=" when that follows directly.
  let i = path.indexOf(';');
  if (i < 0) i = path.length;
  let mailboxRaw = path.slice(0, i);
  const hasUidValidity = keywordAt(path, i, ';UIDVALIDITY=');
  if (!hasUidValidity && i < path.length) {
    if (!keywordAt(path, i, ';UID=') || !mailboxRaw.endsWith('/')) {
      fail(`unexpected "${clip(path.slice(i))}" after the mailbox (a ";" in a name must be written %3B)`);
    }
    mailboxRaw = mailboxRaw.slice(0, -1);
  }
  url.mailbox = decodePathValue(mailboxRaw, 'mailbox name', hasUidValidity);
  if (hasUidValidity) {
    i += 13;
    const end = findAny(path, '/;', i);
    url.uidValidity = parseNumber(path.slice(i, end), 'UIDVALIDITY', true);
    i = end;
    if (i === path.length) return -1;
    // Only iuid may follow, with its "/" (which the mailbox branch above strips itself).
    if (path[i] !== '/') fail(`unexpected "${clip(path.slice(i))}" after ";UIDVALIDITY="`);
    i++;
  } else if (i === path.length) {
    return -1;
  }
  if (!keywordAt(path, i, ';UID=')) fail(`expected ";UID=" but found "${clip(path.slice(i))}"`);
  i += 5;
  let end = findAny(path, '/;', i);
  url.uid = parseNumber(path.slice(i, end), 'UID', true);
  i = end;
  if (keywordAt(path, i, '/;SECTION=')) {
    // enc-section may hold "/" too: it runs to the next ";", less the "/" of "/;PARTIAL=".
    i += 10;
    end = path.indexOf(';', i);
    if (end < 0) end = path.length;
    let raw = path.slice(i, end);
    if (keywordAt(path, end, ';PARTIAL=')) {
      if (!raw.endsWith('/')) fail('";PARTIAL=" must be preceded by "/"');
      raw = raw.slice(0, -1);
      end--;
    }
    url.section = normalizeSection(decodePathValue(raw, 'section'));
    i = end;
  }
  if (keywordAt(path, i, '/;PARTIAL=')) {
    i += 10;
    end = findAny(path, '/;', i);
    const m = /^([^.]*)(?:\.(.*))?$/.exec(path.slice(i, end))!;
    const partial: PartialRange = { offset: parseNumber(m[1]!, 'PARTIAL offset', false) };
    if (m[2] !== undefined) partial.length = parseNumber(m[2], 'PARTIAL length', true);
    url.partial = partial;
    i = end;
  }
  if (i === path.length) return -1;
  if (path[i] !== ';') fail(`unexpected "${clip(path.slice(i))}" after the message part`);
  return i + parseUrlauth(path.slice(i), url);
}

function formatPath(url: ImapUrl): string {
  if (url.mailbox === undefined) {
    if (url.uidValidity !== undefined || url.search !== undefined || url.uid !== undefined || url.section !== undefined || url.partial !== undefined || url.urlauth !== undefined) {
      fail('a URL without a mailbox can have nothing after the server');
    }
    return '';
  }
  if (typeof url.mailbox !== 'string' || url.mailbox === '') fail('mailbox must be a non-empty string');
  let out = encodePathValue(url.mailbox, 'mailbox name');
  if (url.uidValidity !== undefined) out += `;UIDVALIDITY=${checkNumber(url.uidValidity, 'uidValidity', true)}`;
  if (url.uid === undefined) {
    if (url.section !== undefined || url.partial !== undefined || url.urlauth !== undefined) {
      fail('section, partial and urlauth need a uid (RFC 5092 §6)');
    }
    if (url.search !== undefined) {
      if (typeof url.search !== 'string' || url.search === '') fail('search must be a non-empty string');
      out += `?${pctEncode(url.search, BCHAR, 'search')}`;
    }
    return out;
  }
  if (url.search !== undefined) fail('search is only for message lists (no uid) (RFC 5092 §5)');
  out += `/;UID=${checkNumber(url.uid, 'uid', true)}`;
  if (url.section !== undefined) {
    if (typeof url.section !== 'string') fail('section must be a string');
    const section = normalizeSection(url.section);
    if (section !== url.section) fail(`section "${clip(url.section)}" is not in canonical form (want "${clip(section)}")`);
    out += `/;SECTION=${encodePathValue(section, 'section')}`;
  }
  if (url.partial !== undefined) {
    const p = url.partial;
    out += `/;PARTIAL=${checkNumber(p?.offset, 'partial.offset', false)}`;
    if (p.length !== undefined) out += `.${checkNumber(p.length, 'partial.length', true)}`;
  }
  if (url.urlauth !== undefined) out += formatUrlauth(url.urlauth, true);
  return out;
}

function formatUrlauth(auth: UrlAuth, withVerifier: boolean): string {
  if (typeof auth !== 'object' || auth === null) fail('urlauth must be an object');
  let out = '';
  if (auth.expire !== undefined) {
    const expire = typeof auth.expire === 'string' ? normalizeExpire(auth.expire) : fail('expire must be a string');
    if (expire !== auth.expire) fail('expire must use upper-case "T" and "Z"');
    out += `;EXPIRE=${expire}`;
  }
  out += `;URLAUTH=${formatAccess(auth.access)}`;
  if (auth.mechanism !== undefined || auth.token !== undefined) {
    const v = checkVerifier(auth.mechanism, auth.token);
    if (v.mechanism !== auth.mechanism || v.token !== auth.token) fail('mechanism must be upper-case and token lower-case hex');
    if (withVerifier) out += `:${v.mechanism}:${v.token}`;
  }
  return out;
}

// --- Public API --------------------------------------------------------------------------

/**
 * Parse an absolute IMAP URL, or an absolute-path reference ("/INBOX/;UID=20") whose
 * server comes from base (copied; absent without a base). Throws ImapUrlError for
 * anything the grammar (with the restrictions above) does not allow.
 */
export function parseImapUrl(text: string, base?: ImapServer, options: ParseImapUrlOptions = {}): ParsedImapUrl {
  if (typeof text !== 'string') fail('IMAP URL must be a string');
  const max = options.maxLength ?? MAX_IMAP_URL_LENGTH;
  if (text.length > max) fail(`IMAP URL longer than ${max} characters`);
  if (text === '') fail('empty IMAP URL');
  if (text.includes('#')) fail('IMAP URLs have no fragment ("#" must be written %23)');

  const url: ImapUrl = {};
  let form: ImapUrlForm;
  let pathStart: number;
  if (/^imap:\/\//i.test(text)) {
    form = 'absolute';
    const end = findAny(text, '/?', 7);
    url.server = parseServer(text.slice(7, end));
    if (text[end] === '?') fail('a search query needs a mailbox');
    pathStart = end + 1;
  } else if (text.startsWith('//')) {
    fail('network-path references ("//host/...") are not supported: use imap://');
  } else if (text.startsWith('/')) {
    form = 'absolute-path';
    if (base !== undefined) url.server = { ...base };
    pathStart = 1;
  } else if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(text)) {
    fail(`not an IMAP URL (scheme "${clip(text.slice(0, text.indexOf(':')))}")`);
  } else {
    fail('relative-path references are not supported: give imap://... or /mailbox...');
  }

  const rest = pathStart > text.length ? '' : text.slice(pathStart);
  const q = rest.indexOf('?');
  const path = q < 0 ? rest : rest.slice(0, q);
  const rumpInPath = parsePath(path, url);
  if (q >= 0) {
    if (url.mailbox === undefined || url.uid !== undefined) fail('a search query ("?") is only allowed after a mailbox without ";UID=" (RFC 5092 §5)');
    const search = pctDecode(rest.slice(q + 1), BCHAR, 'search');
    if (search === '') fail('empty search query');
    url.search = search;
  }

  const parsed: ParsedImapUrl = { url, form, text };
  if (url.urlauth !== undefined) {
    if (form !== 'absolute') fail('";URLAUTH=" is only allowed in an absolute imap:// URL (RFC 5092 §11 authimapurl)');
    parsed.rumpText = text.slice(0, pathStart + rumpInPath);
  }
  return parsed;
}

export interface FormatImapUrlOptions {
  /** 'absolute-path' writes "/mailbox..." without the server (as CATENATE may send). */
  form?: ImapUrlForm;
}

/** The canonical text of url (see the module comment). Throws ImapUrlError for invalid data. */
export function formatImapUrl(url: ImapUrl, options: FormatImapUrlOptions = {}): string {
  if (typeof url !== 'object' || url === null) fail('url must be an object');
  const path = formatPath(url);
  if (options.form === 'absolute-path') {
    if (url.urlauth !== undefined) fail('";URLAUTH=" is only allowed in an absolute imap:// URL (RFC 5092 §11 authimapurl)');
    return `/${path}`;
  }
  if (url.server === undefined) fail('an absolute IMAP URL needs a server');
  return `imap://${formatServer(url.server)}/${path}`;
}

/**
 * The canonical rump URL (RFC 5092 §11 authimapurlrump): the URL up to and including ";URLAUTH=access",
 * without any ":mech:token". This is the text the gateway computes tokens over (see
 * lemonade/urlauth.ts): being canonical, it is the same for every spelling of the URL
 * (keyword case, %-escape case, "%41" for "A"), so a token does not depend on how the
 * client happened to write an equivalent URL.
 */
export function rumpUrl(url: ImapUrl): string {
  if (typeof url !== 'object' || url === null || url.urlauth === undefined) fail('URL has no ";URLAUTH=" (not a rump URL)');
  const { mechanism: _m, token: _t, ...rump } = url.urlauth;
  return formatImapUrl({ ...url, urlauth: rump });
}

/** url with the verifier set (RFC 5092 §11 iua-verifier): mechanism upper-cased, token lower-cased. */
export function withAuthorization(url: ImapUrl, mechanism: string, tokenHex: string): ImapUrl {
  if (typeof url !== 'object' || url === null || url.urlauth === undefined) fail('URL has no ";URLAUTH=" to authorize');
  if (url.uid === undefined || url.server === undefined) fail('only an absolute message URL can be authorized (RFC 5092 §11 authimapurl)');
  return { ...url, urlauth: { ...url.urlauth, ...checkVerifier(mechanism, tokenHex) } };
}

/**
 * GENURLAUTH's answer (RFC 4467): the rump URL exactly as the client gave it, plus
 * ":" mechanism ":" token. rumpText must parse as an absolute rump URL.
 */
export function appendAuthorization(rumpText: string, mechanism: string, tokenHex: string): string {
  const parsed = parseImapUrl(rumpText);
  if (parsed.rumpText !== rumpText || parsed.url.urlauth?.token !== undefined) fail('not a rump URL (it must end with ";URLAUTH=" access)');
  const v = checkVerifier(mechanism, tokenHex);
  return `${rumpText}:${v.mechanism}:${v.token}`;
}
