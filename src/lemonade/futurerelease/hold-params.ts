/**
 * FUTURERELEASE (RFC 4865) on the submission front: the EHLO keyword line, the MAIL FROM
 * hold-param (HOLDFOR / HOLDUNTIL) and its replies, and the trace comment for a held
 * message. Pure functions of (parameters, policy, now); the session and the spool do the
 * rest.
 *
 * What RFC 4865 fixes, by section:
 *
 *   §3 item 2   future-release-integer = %x31-39 *8DIGIT (1..999999999, no leading zero);
 *               max-future-release-interval is one; max-future-release-date-time is a
 *               date-time "normalized to UTC".
 *   §3 item 3   the EHLO line is "FUTURERELEASE" SP interval SP date-time.
 *   §3 item 4   hold-param = "HOLDFOR=" future-release-integer
 *                          / "HOLDUNTIL=" future-release-date-time, the latter an
 *               RFC 3339 §5.6 date-time (erratum 2040 replaced the dangling
 *               "Internet-style-date-time-UTC" production). The prose calls the value
 *               "normalized to UTC", but the corrected grammar admits numeric offsets;
 *               they name one instant unambiguously, so they are accepted and converted.
 *   §3 item 5   the hold-param may lengthen MAIL by 34 characters.
 *   §3 item 7,  only on the submission port: the caller must not advertise or accept
 *   §4.2 item 2 FUTURERELEASE on port 25.
 *   §4.2 items 7, 8, 9   reject a HOLDFOR above the interval, a HOLDUNTIL later than the
 *               date-time, anything "otherwise invalid", and more than one hold-param;
 *   §4.2 items 10, 11    with 501 and 5.5.4 (both SHOULD).
 *   §4.2 item 4 a valid hold-param MUST be accepted. Nothing in the RFC calls a HOLDUNTIL
 *               in the past invalid, and item 6 only forbids releasing *before* the time,
 *               so a past HOLDUNTIL is accepted and released at once.
 *   §5.1.2      a DSN for a held message carries Arrival-Date and
 *               "Future-Release-Request: for;N / until;date-time" (see dsn.ts); `requested`
 *               below is that value.
 *   §6 items 3-5  a full hold quota refuses MAIL with 552 and X.7.16 (per user) or X.7.17
 *               (system): holdQuotaRefusal().
 */

import { Replies } from '../../smtp/protocol/replies.js';

/** RFC 4865 §3 item 2: the largest future-release-integer (9 digits). */
export const MAX_FUTURE_RELEASE_INTEGER = 999_999_999;

/** A MAIL reply: code, RFC 3463 enhanced code, text. */
export interface HoldRefusal {
  ok: false;
  code: number;
  enhanced: string;
  text: string;
}

export type HoldResult =
  | {
      ok: true;
      /** When the message may be released (ms since epoch); never earlier than now. */
      releaseAtMs: number;
      /**
       * The request as RFC 4865 §5.1.2 wants it in a DSN's Future-Release-Request field:
       * "for;" + the HOLDFOR value or "until;" + the HOLDUNTIL value, as the client sent it.
       */
      requested: string;
    }
  | HoldRefusal;

export interface HoldPolicy {
  /**
   * max-future-release-interval in seconds, 1..999999999; 0 = FUTURERELEASE disabled by
   * policy (not advertised, and HOLDFOR / HOLDUNTIL refused as unknown parameters). The
   * max-future-release-date-time is now + this interval.
   */
  maxIntervalSeconds: number;
}

/** Why a policy is unusable, or undefined when it is fine. */
export function checkHoldPolicy(policy: HoldPolicy): string | undefined {
  const n = policy.maxIntervalSeconds;
  if (!Number.isInteger(n) || n < 0 || n > MAX_FUTURE_RELEASE_INTEGER) {
    return `maxIntervalSeconds must be an integer from 0 (disabled) to ${MAX_FUTURE_RELEASE_INTEGER} (RFC 4865 §3 item 2)`;
  }
  return undefined;
}

function assertPolicy(policy: HoldPolicy): void {
  const problem = checkHoldPolicy(policy);
  if (problem !== undefined) throw new RangeError(problem);
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/**
 * An instant as an RFC 3339 §5.6 date-time in UTC ("Z"), as RFC 4865 §3 item 2 wants the
 * max-future-release-date-time "normalized to UTC". Whole seconds, rounded down, unless
 * `withMillis` (then ".sss" when not zero).
 */
export function formatUtcDateTime(ms: number, withMillis = false): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) throw new RangeError('not a representable instant');
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError('RFC 3339 date-fullyear is 4 digits');
  const frac = withMillis && d.getUTCMilliseconds() !== 0 ? `.${pad(d.getUTCMilliseconds(), 3)}` : '';
  return (
    `${pad(year, 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` +
    `T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac}Z`
  );
}

/** The latest instant a hold may end at (the max-future-release-date-time), in ms. */
function maxReleaseMs(policy: HoldPolicy, nowMs: number): number {
  return nowMs + policy.maxIntervalSeconds * 1000;
}

/**
 * The EHLO keyword line (RFC 4865 §3 items 1-3): "FUTURERELEASE <interval> <date-time>",
 * or undefined when the policy disables the extension (then it is not advertised at all:
 * §4.2 item 3 requires both parameters whenever the keyword is shown).
 *
 * The date-time is UTC with "Z" and no fraction, rounded down to the second, so a client
 * that stays at or before it (§4.1 item 4) is always inside what parseHold() accepts.
 */
export function futureReleaseKeyword(policy: HoldPolicy, nowMs: number): string | undefined {
  assertPolicy(policy);
  if (policy.maxIntervalSeconds === 0) return undefined;
  return `FUTURERELEASE ${policy.maxIntervalSeconds} ${formatUtcDateTime(maxReleaseMs(policy, nowMs))}`;
}

/** RFC 4865 §3 item 2: %x31-39 *8DIGIT. */
const FUTURE_RELEASE_INTEGER = /^[1-9][0-9]{0,8}$/;

/**
 * RFC 3339 §5.6 date-time. "T" and "Z" may be lower case (§5.6 NOTE; ABNF strings are
 * case-insensitive). time-secfrac is "." 1*DIGIT; time-numoffset is ("+" / "-") hh ":" mm.
 */
const RFC3339_DATE_TIME =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))$/;

/** Long enough for any sensible fraction, short enough that no value is unbounded. */
const MAX_DATE_TIME_LENGTH = 64;

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Date.UTC without its two-digit-year quirk (years 0..99 mean 1900..1999 there). */
function utcMs(year: number, month: number, day: number, hour: number, minute: number, second: number): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute, second, 0);
  return d.getTime();
}

/**
 * Parses an RFC 3339 §5.6 date-time to ms since the epoch, or undefined when it is not
 * one. Any numeric offset is accepted and converted to UTC (erratum 2040 makes the
 * HOLDUNTIL grammar RFC 3339's date-time, which has offsets; "-00:00" is UTC per §4.3).
 *
 * Fractions are rounded *up* to the millisecond, so the instant returned is never before
 * the one written (RFC 4865 §4.2 item 6: not released before the date-time occurs).
 *
 * Leap seconds (§5.6 time-second 00-60, §5.7): second 60 is accepted only where a leap
 * second can be, at 23:59:60 UTC on the last day of a month once the offset is applied
 * (e.g. 1990-12-31T15:59:60-08:00). JavaScript time has no leap seconds, so the instant
 * returned is the end of the leap second, 00:00:00 UTC of the next day.
 */
export function parseRfc3339DateTime(s: string): number | undefined {
  if (s.length > MAX_DATE_TIME_LENGTH) return undefined;
  const m = RFC3339_DATE_TIME.exec(s);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const frac = m[7];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  let offsetMinutes = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const leap = second === 60;
  // Local time minus the offset is UTC.
  let ms = utcMs(year, month, day, hour, minute, leap ? 59 : second) - offsetMinutes * 60_000;
  if (leap) {
    const utc = new Date(ms);
    const lastDay = daysInMonth(utc.getUTCFullYear(), utc.getUTCMonth() + 1);
    if (utc.getUTCHours() !== 23 || utc.getUTCMinutes() !== 59 || utc.getUTCDate() !== lastDay) return undefined;
    return ms + 1000;
  }
  if (frac !== undefined) {
    const millis = Number(frac.slice(0, 3).padEnd(3, '0'));
    const rest = frac.slice(3);
    ms += millis + (/[1-9]/.test(rest) ? 1 : 0);
  }
  return ms;
}

/** 501 5.5.4: RFC 4865 §4.2 items 10 and 11. */
function syntax(text: string): HoldRefusal {
  return { ok: false, ...Replies.badArguments(text) };
}

/**
 * Reads the hold-param of a MAIL command (RFC 4865 §3 item 4, §4.2). `params` are the
 * values as parsed from MAIL FROM (esmtp-value, or true for a keyword without "=").
 *
 *   - neither present: undefined (no hold requested);
 *   - policy disabled (maxIntervalSeconds 0): 555 5.5.4, the reply for a parameter the
 *     server does not offer (RFC 5321 §4.1.1.11; RFC 3463 X.5.4), as extensions.ts gives
 *     every parameter that is not advertised. RFC 4865 itself says nothing about a server
 *     that does not offer the extension;
 *   - both present: 501 5.5.4 (§4.2 items 9-11);
 *   - HOLDFOR not 1..999999999 without leading zeros (so 0, 0060, 10 digits, non-digits),
 *     HOLDUNTIL not an RFC 3339 date-time: 501 5.5.4 ("otherwise invalid", §4.2 items 7,
 *     8, 10, 11);
 *   - HOLDFOR above the policy interval, HOLDUNTIL later than now + interval: 501 5.5.4
 *     (§4.2 items 7, 8, 10, 11);
 *   - HOLDUNTIL now or in the past: accepted, released at once (releaseAtMs = nowMs;
 *     §4.2 items 4 and 6, see the module comment).
 */
export function parseHold(
  params: { holdfor?: string | true; holduntil?: string | true },
  policy: HoldPolicy,
  nowMs: number,
): HoldResult | undefined {
  assertPolicy(policy);
  const { holdfor, holduntil } = params;
  if (holdfor === undefined && holduntil === undefined) return undefined;
  if (policy.maxIntervalSeconds === 0) {
    return { ok: false, ...Replies.unsupportedParameter(holdfor !== undefined ? 'HOLDFOR' : 'HOLDUNTIL') };
  }
  if (holdfor !== undefined && holduntil !== undefined) {
    return syntax('Only one of HOLDFOR and HOLDUNTIL may be given');
  }
  if (holdfor !== undefined) {
    if (holdfor === true || !FUTURE_RELEASE_INTEGER.test(holdfor)) {
      return syntax('HOLDFOR must be a number of seconds from 1 to 999999999');
    }
    const seconds = Number(holdfor);
    if (seconds > policy.maxIntervalSeconds) {
      return syntax(`HOLDFOR exceeds the maximum of ${policy.maxIntervalSeconds} seconds`);
    }
    return { ok: true, releaseAtMs: nowMs + seconds * 1000, requested: `for;${holdfor}` };
  }
  const value = holduntil as string | true;
  const at = value === true ? undefined : parseRfc3339DateTime(value);
  if (value === true || at === undefined) {
    return syntax('HOLDUNTIL must be an RFC 3339 date-time, e.g. 2030-01-31T08:00:00Z');
  }
  const max = maxReleaseMs(policy, nowMs);
  if (at > max) {
    return syntax(`HOLDUNTIL is later than ${formatUtcDateTime(max)}`);
  }
  return { ok: true, releaseAtMs: Math.max(at, nowMs), requested: `until;${value}` };
}

/**
 * RFC 4865 §6 items 3-5: MAIL refused because holding the message would exceed a quota
 * on held messages. 552 with X.7.16 (per-user quota) or X.7.17 (system quota).
 *
 * Note: RFC 6710 and RFC 7293 later defined X.7.16 and X.7.17 again with other meanings
 * (message too big for its priority; mailbox owner changed), so a client may render them
 * oddly; they are still the codes RFC 4865 §6 item 5 gives for this.
 */
export function holdQuotaRefusal(scope: 'user' | 'system'): HoldRefusal {
  return { ok: false, ...(scope === 'user' ? Replies.holdQuotaUser : Replies.holdQuotaSystem) };
}

/**
 * A comment for the Received: header of a held message, e.g.
 * "held until 2026-12-01T10:00:00Z (RFC 4865)". Contains only characters that are safe
 * inside an RFC 5322 comment (its own parentheses nest, which §3.2.2 allows).
 */
export function describeHold(releaseAtMs: number): string {
  return `held until ${formatUtcDateTime(releaseAtMs, true)} (RFC 4865)`;
}
