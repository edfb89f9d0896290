/** The commands the gateway answers itself; everything else after login is relayed. */
import type { CommandHandler, RelayHook } from './context.js';
import { capability } from './capability.js';
import { noop } from './noop.js';
import { logout } from './logout.js';
import { id } from './id.js';
import { starttls } from './starttls.js';
import { login } from './login.js';
import { authenticate } from './authenticate.js';
import { genurlauth } from './genurlauth.js';
import { urlfetch } from './urlfetch.js';
import { resetkey } from './resetkey.js';
import { uidExpunge } from './uid-expunge.js';
import { copy } from './copy.js';
import { enable } from './enable.js';
import { select } from './select.js';
import { fetch } from './fetch.js';
import { store } from './store.js';
import { search } from './search.js';
import { status } from './status.js';
import { catenateStart, type CatenateStart } from './catenate.js';
import { AppendGrammar } from '../protocol/append-grammar.js';
import { hasCapability } from '../capabilities.js';
import { appendUidHook } from '../../lemonade/appenduid-relay.js';
import { expungeModseqHook } from '../../lemonade/qresync/expunge-modseq.js';

/** Handled locally before authentication (there is no upstream session yet). */
export const preAuthHandlers = new Map<string, CommandHandler>([
  ['CAPABILITY', capability],
  ['NOOP', noop],
  ['LOGOUT', logout],
  ['ID', id],
  ['STARTTLS', starttls],
  ['LOGIN', login],
  ['AUTHENTICATE', authenticate],
]);

/**
 * Intercepted after authentication; all other valid commands go upstream. Apart from
 * CAPABILITY these are emulations, used only where the upstream lacks the extension
 * (lemonade/services.ts decides).
 */
export const postAuthHandlers = new Map<string, CommandHandler>([
  ['CAPABILITY', capability],
  ['GENURLAUTH', genurlauth], // RFC 4467
  ['URLFETCH', urlfetch],
  ['RESETKEY', resetkey],
  ['UID EXPUNGE', uidExpunge], // RFC 4315
  ['COPY', copy],
  ['UID COPY', copy],
  ['ENABLE', enable], // RFC 5161, RFC 7162 §3.2.3
  ['SELECT', select], // RFC 7162 §3.1.8, §3.2.5
  ['EXAMINE', select],
  ['FETCH', fetch], // RFC 7162 §3.1.4, §3.2.6
  ['UID FETCH', fetch],
  ['STORE', store], // RFC 7162 §3.1.3
  ['UID STORE', store],
  ['SEARCH', search], // RFC 7162 §3.1.5
  ['UID SEARCH', search],
  ['STATUS', status], // RFC 7162 §3.1.9: HIGHESTMODSEQ never reaches the upstream
]);

/**
 * Intercepted after authentication but not collected whole: the gateway reads them as
 * they stream in (a CATENATE's parts may be large), when the line's start says so.
 */
export const streamedCommands = new Map<string, (firstLine: Buffer) => CatenateStart | undefined>([
  ['APPEND', catenateStart], // RFC 4469: APPEND with CATENATE; a plain APPEND is relayed
]);

/**
 * Relayed commands whose answer an emulation changes (context.ts RelayHook): they go
 * upstream as the client sent them.
 */
export const relayHooks = new Map<string, RelayHook>([
  ['APPEND', appendUidHook], // RFC 4315 §3 APPENDUID without UIDPLUS upstream
  ['EXPUNGE', expungeModseqHook], // RFC 7162 §3.2.7 [HIGHESTMODSEQ] once QRESYNC is enabled
]);

/** Reads a relayed command's segments as they stream through: why one is refused, if it is. */
export interface RelayCheck {
  check(segment: Buffer): string | undefined;
}

/**
 * Relayed commands checked before any of their literals goes upstream: one the upstream
 * would frame differently from its client must get BAD from the gateway instead (issue 15).
 */
export const relayChecks = new Map<string, (upstreamCapabilities: readonly string[]) => RelayCheck>([
  // RFC 3501 §9 append, up to the message literal (protocol/append-grammar.ts).
  ['APPEND', (caps) => new AppendGrammar({ binary: hasCapability(caps, 'BINARY'), catenate: hasCapability(caps, 'CATENATE') })],
]);
