/** The commands the gateway answers itself; everything else after login is relayed. */
import type { CommandHandler } from './context.js';
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
]);
