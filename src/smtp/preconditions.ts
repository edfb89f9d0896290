/**
 * What each submission command needs before it runs, checked in one place before any
 * handler (as smtp-server's _onCommand does): the command is known and offered, takes no
 * arguments where it takes none, and the session is in a state that allows it (RFC 5321
 * §4.1.4 command order, RFC 4954 §4 AUTH, RFC 6409 §4.3 authentication required).
 *
 * The checks that depend on the MTA's verdicts on MAIL and RCPT (is there a transaction
 * with recipients to take content?) wait for those verdicts, so they are not here but in
 * session.ts openContent(), the one place DATA, BDAT and BURL open a message's content.
 */
import { Replies } from './protocol/replies.js';
import type { Reply } from './protocol/reply.js';

/** The session state the preconditions look at. */
export interface SessionView {
  /** EHLO / HELO was given (and not forgotten by STARTTLS). */
  greeted: boolean;
  authenticated: boolean;
  /** undefined: no MAIL given; refused: the MTA refused MAIL; started: content has begun. */
  transaction: undefined | { refused: boolean; contentStarted: boolean };
  /** Plaintext AUTH is allowed on this connection (TLS, or the loopback exception). */
  authAllowed: boolean;
  /** STARTTLS is offered here and TLS not yet on. */
  starttlsAvailable: boolean;
  /** BURL can be served (side connections to the IMAP upstream are configured). */
  burlOffered: boolean;
}

type Precondition = (s: SessionView, verb: string) => Reply | undefined;

const greeted: Precondition = (s) => (s.greeted ? undefined : Replies.ehloFirst);
const authenticated: Precondition = (s) => (s.authenticated ? undefined : Replies.authRequired);
const notAuthenticated: Precondition = (s) => (s.authenticated ? Replies.alreadyAuthenticated : undefined);
const authAllowed: Precondition = (s) => (s.authAllowed ? undefined : Replies.tlsFirst);
const starttlsAvailable: Precondition = (s) => (s.starttlsAvailable ? undefined : Replies.starttlsUnavailable);
/** Not after MAIL, even one the MTA refused (its RSET or a new MAIL ends that). */
const noTransaction: Precondition = (s, verb) => (s.transaction === undefined ? undefined : Replies.notDuringTransaction(verb));
/** A MAIL the MTA refused does not count: a new MAIL replaces it. */
const noOpenTransaction: Precondition = (s) => (s.transaction !== undefined && !s.transaction.refused ? Replies.nestedMail : undefined);
const mailGiven: Precondition = (s) => (s.transaction === undefined || s.transaction.refused ? Replies.needMail : undefined);
const beforeContent: Precondition = (s) => (s.transaction?.contentStarted === true ? Replies.contentStarted : undefined);

interface CommandRule {
  /** The command's only form is the bare verb (RFC 5321 §4.1.1.5, §4.1.1.9, §4.1.1.10; RFC 3207 §4). */
  noArguments?: boolean;
  /** Checked in order; the first that fails is the reply. */
  needs?: readonly Precondition[];
  /** Unless true, the command is answered as unknown. */
  offered?: (s: SessionView) => boolean;
}

const RULES: ReadonlyMap<string, CommandRule> = new Map<string, CommandRule>([
  ['EHLO', {}],
  ['HELO', {}],
  ['STARTTLS', { noArguments: true, needs: [starttlsAvailable] }],
  ['AUTH', { needs: [greeted, notAuthenticated, noTransaction, authAllowed] }],
  ['MAIL', { needs: [greeted, authenticated, noOpenTransaction] }],
  ['RCPT', { needs: [mailGiven, beforeContent] }],
  ['DATA', { noArguments: true }],
  ['BDAT', {}],
  ['BURL', { offered: (s) => s.burlOffered, needs: [authenticated] }],
  ['XCANCEL', { needs: [authenticated, noTransaction] }],
  ['RSET', { noArguments: true }],
  ['NOOP', {}],
  ['QUIT', { noArguments: true }],
  ['VRFY', {}],
  ['HELP', {}],
]);

/** The reply refusing `verb` in this state, or undefined when its handler may run. */
export function precondition(verb: string, args: string, s: SessionView): Reply | undefined {
  const rule = RULES.get(verb);
  if (rule === undefined || (rule.offered !== undefined && !rule.offered(s))) return Replies.unrecognized(verb);
  if (rule.noArguments === true && args !== '') return Replies.noArguments(verb);
  for (const check of rule.needs ?? []) {
    const refusal = check(s, verb);
    if (refusal !== undefined) return refusal;
  }
  return undefined;
}
