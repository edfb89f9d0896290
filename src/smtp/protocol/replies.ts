/**
 * Every reply the submission front gives in its own name, by name (as go-smtp's
 * ErrAuthRequired and friends): RFC 5321 §4.2.2-§4.2.3 reply codes, RFC 3463 enhanced
 * status codes. A reply that carries a value is a function of it. The MTA's own replies
 * are relayed as they came (session.ts relayReply) and are not listed here.
 *
 * Free text from outside (verbs, keywords, ids) is cut here, so a reply line stays short
 * whatever the client sent; reply.ts strips CR/LF/NUL and bounds the line.
 */
import type { CodedReply, Reply } from './reply.js';
import { STORE_UNAVAILABLE_TEXT } from '../../store/availability.js';

/** RFC 3463 X.5.4 "invalid command arguments", 501 (RFC 5321 §4.2.3). */
const badArguments = (text: string): CodedReply => ({ code: 501, enhanced: '5.5.4', text });
/** RFC 3463 X.5.1 "invalid command", 503 "bad sequence of commands" (RFC 5321 §4.2.3). */
const badSequence = (text: string): CodedReply => ({ code: 503, enhanced: '5.5.1', text });

export const Replies = {
  // ---- connection (RFC 5321 §3.1, §3.8, §4.5.3.2) ----
  greeting: (hostname: string): Reply => ({ code: 220, text: `${hostname} ESMTP lemonade-gateway` }),
  tooManyConnections: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.3.2', text: `${hostname} Too many connections, try again later` }),
  bye: (hostname: string): CodedReply => ({ code: 221, enhanced: '2.0.0', text: `${hostname} Bye` }),
  shuttingDown: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.3.2', text: `${hostname} Service shutting down` }),
  timeout: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.4.2', text: `${hostname} Timeout exceeded, closing connection` }),
  authTimeout: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.4.2', text: `${hostname} Authentication time limit exceeded, closing connection` }),
  tooManyErrors: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.7.0', text: `${hostname} Too many errors, closing connection` }),
  tooManyCommandsBeforeAuth: (hostname: string): CodedReply => ({
    code: 421,
    enhanced: '4.7.0',
    text: `${hostname} Too many commands before authentication, closing connection`,
  }),
  internalError: (hostname: string): CodedReply => ({ code: 421, enhanced: '4.3.0', text: `${hostname} Internal error, closing connection` }),

  // ---- commands: syntax (RFC 5321 §4.2.3) ----
  ok: { code: 250, enhanced: '2.0.0', text: 'Ok' },
  help: { code: 214, enhanced: '2.0.0', text: 'See RFC 5321 and RFC 6409' },
  /** RFC 5321 §3.5.3: 252 when the server will not verify but would try delivery. */
  cannotVrfy: { code: 252, enhanced: '2.5.0', text: 'Cannot VRFY user, but will accept message and attempt delivery' },
  unrecognized: (verb: string): CodedReply => ({ code: 500, enhanced: '5.5.1', text: `Command unrecognized: ${verb.slice(0, 20)}` }),
  noVerb: { code: 500, enhanced: '5.5.2', text: 'Syntax error, command unrecognized' },
  lineTooLong: { code: 500, enhanced: '5.5.2', text: 'Line too long' },
  badArguments,
  noArguments: (verb: string): CodedReply => badArguments(`${verb} takes no arguments`),
  /** RFC 5321 §4.1.1.11: 555 for a MAIL / RCPT parameter that is not recognized or not offered. */
  unsupportedParameter: (keyword: string): CodedReply => ({ code: 555, enhanced: '5.5.4', text: `Unsupported parameter ${keyword.slice(0, 30)}` }),

  // ---- sequence (RFC 5321 §4.1.4, RFC 4954 §4, RFC 3207 §4, RFC 3030 §2, RFC 4468 §3.2) ----
  ehloFirst: badSequence('Send EHLO first'),
  starttlsUnavailable: badSequence('STARTTLS not available'),
  alreadyAuthenticated: badSequence('Already authenticated'),
  notDuringTransaction: (verb: string): CodedReply => badSequence(`${verb} not allowed during a mail transaction`),
  nestedMail: badSequence('Nested MAIL command'),
  needMail: badSequence('Need MAIL command first'),
  contentStarted: badSequence('Message content already started'),
  /** DATA after BDAT, BDAT or BURL during DATA (RFC 3030 §2: one or the other per message). */
  contentConflict: (verb: string, other: 'DATA' | 'BDAT'): CodedReply => badSequence(`${verb} not allowed ${other === 'BDAT' ? 'after' : 'during'} ${other}`),
  /** RFC 5321 §3.3: DATA with no recipient accepted. */
  noValidRecipients: { code: 554, enhanced: '5.5.1', text: 'No valid recipients' },

  // ---- STARTTLS and AUTH (RFC 3207 §4, RFC 4954 §4, §6) ----
  readyForTls: { code: 220, enhanced: '2.0.0', text: 'Ready to start TLS' },
  /** RFC 4954 §4 / RFC 3207: no plaintext passwords before TLS. */
  tlsFirst: { code: 530, enhanced: '5.7.0', text: 'Must issue a STARTTLS command first' },
  /** RFC 6409 §4.3: submission requires authentication (RFC 4954 §6: 530 5.7.0). */
  authRequired: { code: 530, enhanced: '5.7.0', text: 'Authentication required' },
  authMechanismUnknown: { code: 504, enhanced: '5.5.4', text: 'Unrecognized authentication mechanism' },
  authCancelled: { code: 501, enhanced: '5.0.0', text: 'Authentication cancelled' },
  authUndecodable: { code: 501, enhanced: '5.5.2', text: 'Cannot decode response' },
  authMalformedPlain: { code: 501, enhanced: '5.5.2', text: 'Malformed PLAIN response' },
  authSucceeded: { code: 235, enhanced: '2.7.0', text: 'Authentication successful' },
  authTemporaryFailure: { code: 454, enhanced: '4.7.0', text: 'Temporary authentication failure' },
  authInvalid: { code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' },

  // ---- the transaction ----
  helo: (hostname: string): Reply => ({ code: 250, text: hostname }),
  /** RFC 6409 §6.1: the sender must belong to the user; RFC 3463 X.7.1. */
  senderNotOwned: (user: string): CodedReply => ({ code: 553, enhanced: '5.7.1', text: `Sender address rejected: not owned by user ${user}` }),
  senderHeld: (releaseAt: Date): CodedReply => ({ code: 250, enhanced: '2.1.0', text: `Sender ok, the message will be held until ${releaseAt.toISOString()}` }),
  recipientOk: { code: 250, enhanced: '2.1.5', text: 'Recipient ok' },
  /** RFC 5321 §4.5.3.1.8: 452 for too many recipients, the client may send the rest later. */
  tooManyRecipients: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' },
  /** RFC 1870 §6, RFC 3463 X.3.4. */
  messageTooBig: { code: 552, enhanced: '5.3.4', text: 'Message size exceeds fixed maximum message size' },
  /** RFC 5321 §4.5.3.1.6: a text line over 1000 octets. */
  messageLineTooLong: { code: 500, enhanced: '5.5.2', text: 'Message line too long (RFC 5321 limit 1000)' },
  startData: { code: 354, text: 'End data with <CR><LF>.<CR><LF>' },
  chunkReceived: (size: number, refusedLater: boolean): CodedReply => ({
    code: 250,
    enhanced: '2.0.0',
    text: `${size} octets received${refusedLater ? ', message will be refused' : ''}`,
  }),
  /** RFC 3030 §2: without a valid size the chunk's end cannot be found. */
  badBdatClosing: badArguments('Syntax: BDAT size [LAST]; closing connection'),
  /** RFC 3463 X.3.0: a local system problem; the client keeps the message and retries. */
  localError: (detail: string): CodedReply => ({ code: 451, enhanced: '4.3.0', text: `Local error in processing, try again later (${detail.slice(0, 80)})` }),
  /** RFC 3463 X.3.0 for a store outage (store/availability.ts): temporary, and without the database's address. */
  storeUnavailable: { code: 451, enhanced: '4.3.0', text: STORE_UNAVAILABLE_TEXT },
  /** RFC 4865: the held message is in the spool, fsynced and indexed. */
  held: (id: string, releaseAt: Date): CodedReply => ({ code: 250, enhanced: '2.0.0', text: `Ok: held as ${id} until ${releaseAt.toISOString()}` }),
  /** RFC 3463 X.4.1: no answer from host; temporary, so the client keeps the message. */
  mtaUnavailable: { code: 451, enhanced: '4.4.1', text: 'Upstream mail server unavailable, try again later' },

  // ---- BURL (RFC 4468 §6) ----
  burlAdded: (size: number): CodedReply => ({ code: 250, enhanced: '2.5.0', text: `${size} octets added` }),
  burlInvalidUrl: { code: 554, enhanced: '5.5.4', text: 'Invalid IMAP URL' },
  burlTrustRequired: { code: 554, enhanced: '5.7.8', text: 'IMAP URL resolution requires trust relationship' },
  burlNotAuthorized: { code: 554, enhanced: '5.7.0', text: 'IMAP URL resolution failed: not authorized' },
  /** RFC 4467 §3: the token is good, the access identifier is not for this submission. */
  burlAccessDenied: {
    code: 554,
    enhanced: '5.7.0',
    text: 'IMAP URL resolution failed: the URL access identifier does not permit this submission',
  },
  burlFailed: (detail?: string): CodedReply => ({ code: 554, enhanced: '5.6.6', text: `IMAP URL resolution failed${detail === undefined ? '' : `: ${detail}`}` }),
  burlSubmitLoginRefused: { code: 454, enhanced: '4.7.0', text: 'IMAP server refused the submit credentials, try again later' },
  imapUnavailable: { code: 451, enhanced: '4.4.1', text: 'IMAP server unavailable, try again later' },

  // ---- FUTURERELEASE (RFC 4865) and XCANCEL ----
  /** RFC 4865 §6 items 3-5: X.7.16 per-user quota, X.7.17 system quota (hold-params.ts). */
  holdQuotaUser: { code: 552, enhanced: '5.7.16', text: 'Future release per-user message quota exceeded' },
  holdQuotaSystem: { code: 552, enhanced: '5.7.17', text: 'Future release system message quota exceeded' },
  heldCancelled: (id: string): CodedReply => ({ code: 250, enhanced: '2.0.0', text: `Held message ${id} cancelled` }),
  /** One answer for "no such message" and "not yours": others' ids are not confirmed. */
  noHeldMessage: (id: string): CodedReply => ({
    code: 550,
    enhanced: '5.0.0',
    text: `No held message ${id.slice(0, 40)} of yours to cancel (unknown, not yours, or already being released)`,
  }),
} as const;
