/**
 * The submission front's SMTP service extensions in one place: which EHLO keywords are
 * advertised when, and which MAIL FROM / RCPT TO parameters each one allows. Later
 * extensions (BURL, FUTURERELEASE) add their entries here.
 */
import { parseSize, validateBody, validateEnvid, validateNotify, validateOrcpt, validateRet } from './protocol/parser.js';
import type { CodedReply } from './protocol/reply.js';
import { Replies } from './protocol/replies.js';

export interface ExtensionContext {
  tlsActive: boolean;
  /** The listener offers STARTTLS. */
  starttlsOffered: boolean;
  /** AUTH may run now (TLS, or plaintext allowed on loopback). */
  authAllowed: boolean;
  /** EHLO keywords of the upstream MTA, when known. */
  upstream: ReadonlyMap<string, string> | undefined;
  maxMessageSize: number;
  /** BURL can be resolved (the gateway has side connections to the IMAP server). */
  burl: boolean;
  /** The session has authenticated. */
  authenticated: boolean;
  /** The FUTURERELEASE keyword with its parameters (RFC 4865 §3), when offered. */
  futureRelease?: string;
}

/** SIZE to advertise: ours, or the upstream's if smaller (it would refuse more anyway). */
export function effectiveMaxSize(ctx: ExtensionContext): number {
  const theirs = Number(ctx.upstream?.get('SIZE') ?? 0);
  return theirs > 0 ? Math.min(theirs, ctx.maxMessageSize) : ctx.maxMessageSize;
}

const upstreamHas = (ctx: ExtensionContext, keyword: string) => ctx.upstream?.has(keyword) === true;

/** EHLO keywords, in the order they are listed (RFC 5321 §4.1.1.1). */
export function ehloKeywords(ctx: ExtensionContext): string[] {
  const out = [
    'PIPELINING', // RFC 2920
    '8BITMIME', // RFC 6152
    `SIZE ${effectiveMaxSize(ctx)}`, // RFC 1870
    'ENHANCEDSTATUSCODES', // RFC 2034
    'CHUNKING', // RFC 3030
  ];
  // RFC 3461: only when the upstream MTA will act on the parameters.
  if (upstreamHas(ctx, 'DSN')) out.push('DSN');
  // RFC 6531: the upstream must carry UTF-8 envelopes on.
  if (upstreamHas(ctx, 'SMTPUTF8')) out.push('SMTPUTF8');
  if (ctx.starttlsOffered && !ctx.tlsActive) out.push('STARTTLS'); // RFC 3207 §4.2
  if (ctx.authAllowed) out.push('AUTH PLAIN LOGIN'); // RFC 4954
  // RFC 4468 §3: "BURL imap" once authenticated; bare "BURL" before.
  if (ctx.burl) out.push(ctx.authenticated ? 'BURL imap' : 'BURL');
  // RFC 4865 §3, with its interval and date-time limits (a zero interval when refused by policy).
  if (ctx.futureRelease !== undefined) out.push(ctx.futureRelease);
  return out;
}

export interface ParamSpec {
  /** Checks the value; returns an error text for a 501/555 reply, or undefined. */
  check(value: string | true, ctx: ExtensionContext): string | undefined;
  /** Relayed to the upstream MTA as given (only when the upstream advertises `upstreamKeyword`). */
  upstreamKeyword?: string;
  /** Advertised by us, so allowed; undefined = always. */
  offered?(ctx: ExtensionContext): boolean;
}

const needsValue = (fn: (v: string) => boolean, what: string) => (value: string | true) =>
  value === true || !fn(value) ? `Bad ${what} parameter` : undefined;

/** MAIL FROM parameters (RFC 5321 §4.1.2 Mail-parameters). */
export const mailParams = new Map<string, ParamSpec>([
  [
    'SIZE', // RFC 1870 §6: checked against the limit by the session
    { check: needsValue((v) => parseSize(v) !== undefined, 'SIZE'), upstreamKeyword: 'SIZE' },
  ],
  ['BODY', { check: needsValue((v) => validateBody(v) !== undefined && validateBody(v) !== 'BINARYMIME', 'BODY'), upstreamKeyword: '8BITMIME' }],
  ['RET', { check: needsValue(validateRet, 'RET'), upstreamKeyword: 'DSN', offered: (ctx) => upstreamHas(ctx, 'DSN') }],
  ['ENVID', { check: needsValue(validateEnvid, 'ENVID'), upstreamKeyword: 'DSN', offered: (ctx) => upstreamHas(ctx, 'DSN') }],
  [
    'SMTPUTF8',
    {
      check: (v) => (v === true ? undefined : 'SMTPUTF8 takes no value'),
      upstreamKeyword: 'SMTPUTF8',
      offered: (ctx) => upstreamHas(ctx, 'SMTPUTF8'),
    },
  ],
  // RFC 4865 §4: the values are checked by the FUTURERELEASE service (futurerelease/hold-params.ts),
  // which answers with the RFC's codes; never relayed (the MTA gets the message when it is due).
  ['HOLDFOR', { check: () => undefined, offered: (ctx) => ctx.futureRelease !== undefined }],
  ['HOLDUNTIL', { check: () => undefined, offered: (ctx) => ctx.futureRelease !== undefined }],
  // RFC 4954 §5: AUTH=<> or an identity; accepted and not relayed (the gateway vouches by submitting).
  ['AUTH', { check: (v) => (v === true ? 'Bad AUTH parameter' : undefined) }],
]);

/** RCPT TO parameters (RFC 5321 §4.1.2 Rcpt-parameters). */
export const rcptParams = new Map<string, ParamSpec>([
  ['NOTIFY', { check: needsValue(validateNotify, 'NOTIFY'), upstreamKeyword: 'DSN', offered: (ctx) => upstreamHas(ctx, 'DSN') }],
  ['ORCPT', { check: needsValue(validateOrcpt, 'ORCPT'), upstreamKeyword: 'DSN', offered: (ctx) => upstreamHas(ctx, 'DSN') }],
]);

/**
 * Validates parameters against a table; returns the ones to relay upstream, or an error
 * with the reply to give (RFC 5321 §4.1.1.11: 555 for unrecognized parameters).
 */
export function checkParams(
  params: ReadonlyMap<string, string | true>,
  table: ReadonlyMap<string, ParamSpec>,
  ctx: ExtensionContext,
): { relay: Array<[string, string | true]> } | CodedReply {
  const relay: Array<[string, string | true]> = [];
  for (const [keyword, value] of params) {
    const spec = table.get(keyword);
    if (spec === undefined || (spec.offered !== undefined && !spec.offered(ctx))) {
      return Replies.unsupportedParameter(keyword);
    }
    const problem = spec.check(value, ctx);
    if (problem !== undefined) return Replies.badArguments(problem);
    if (spec.upstreamKeyword !== undefined && upstreamHas(ctx, spec.upstreamKeyword)) relay.push([keyword, value]);
  }
  return { relay };
}
