/**
 * Which client commands exist, in which state they are valid, and which upstream
 * capability a pass-through needs. A command the upstream did not advertise is answered
 * by the gateway with BAD and never sent upstream.
 */

export type SessionState = 'not-authenticated' | 'authenticated' | 'selected' | 'logout';

export interface CommandSpec {
  /** RFC 3501 §6: the states in which the command is valid ("any" = all three). */
  states: 'any' | 'not-authenticated' | 'authenticated';
  /** Upstream capability required to pass it through (RFC 3501 base commands need none). */
  capability?: string | ((caps: readonly string[]) => boolean);
}

const anyState: CommandSpec = { states: 'any' };
const authed: CommandSpec = { states: 'authenticated' };
const preauth: CommandSpec = { states: 'not-authenticated' };
const needs = (capability: CommandSpec['capability']): CommandSpec => ({ states: 'authenticated', capability });
const prefixed =
  (prefix: string) =>
  (caps: readonly string[]): boolean =>
    caps.some((c) => c.toUpperCase().startsWith(prefix));

/** Keyed by upper-case command name; "UID <cmd>" keys cover the UID forms (RFC 3501 §6.4.8). */
const commands = new Map<string, CommandSpec>([
  // RFC 3501 §6.1 any state
  ['CAPABILITY', anyState],
  ['NOOP', anyState],
  ['LOGOUT', anyState],
  ['ID', { states: 'any', capability: 'ID' }], // RFC 2971
  // RFC 3501 §6.2 not authenticated
  ['STARTTLS', preauth],
  ['AUTHENTICATE', preauth],
  ['LOGIN', preauth],
  // RFC 3501 §6.3 authenticated
  ['SELECT', authed],
  ['EXAMINE', authed],
  ['CREATE', authed],
  ['DELETE', authed],
  ['RENAME', authed],
  ['SUBSCRIBE', authed],
  ['UNSUBSCRIBE', authed],
  ['LIST', authed],
  ['LSUB', authed],
  ['STATUS', authed],
  ['APPEND', authed],
  // RFC 3501 §6.4 selected (the upstream enforces the selected state itself)
  ['CHECK', authed],
  ['CLOSE', authed],
  ['EXPUNGE', authed],
  ['SEARCH', authed],
  ['FETCH', authed],
  ['STORE', authed],
  ['COPY', authed],
  ['UID FETCH', authed],
  ['UID SEARCH', authed],
  ['UID STORE', authed],
  ['UID COPY', authed],
  // extensions, each passed through only when the upstream advertises it
  ['IDLE', needs('IDLE')], // RFC 2177
  ['NAMESPACE', needs('NAMESPACE')], // RFC 2342
  ['ENABLE', needs('ENABLE')], // RFC 5161
  ['UNSELECT', needs('UNSELECT')], // RFC 3691
  ['MOVE', needs('MOVE')], // RFC 6851
  ['UID MOVE', needs('MOVE')],
  ['UID EXPUNGE', needs('UIDPLUS')], // RFC 4315
  ['GETQUOTA', needs('QUOTA')], // RFC 2087
  ['GETQUOTAROOT', needs('QUOTA')],
  ['SETQUOTA', needs('QUOTA')],
  ['GETACL', needs('ACL')], // RFC 4314
  ['SETACL', needs('ACL')],
  ['DELETEACL', needs('ACL')],
  ['LISTRIGHTS', needs('ACL')],
  ['MYRIGHTS', needs('ACL')],
  ['SORT', needs('SORT')], // RFC 5256
  ['UID SORT', needs('SORT')],
  ['THREAD', needs(prefixed('THREAD='))],
  ['UID THREAD', needs(prefixed('THREAD='))],
  ['GETMETADATA', needs(prefixed('METADATA'))], // RFC 5464
  ['SETMETADATA', needs(prefixed('METADATA'))],
  ['NOTIFY', needs('NOTIFY')], // RFC 5465
  ['GENURLAUTH', needs('URLAUTH')], // RFC 4467; relayed only where the gateway does not emulate URLAUTH (lemonade/services.ts)
  ['URLFETCH', needs('URLAUTH')],
  ['RESETKEY', needs('URLAUTH')],
  ['REPLACE', needs('REPLACE')], // RFC 8508
  ['UID REPLACE', needs('REPLACE')],
]);

export function commandSpec(name: string): CommandSpec | undefined {
  return commands.get(name.toUpperCase());
}

export function validInState(spec: CommandSpec, state: SessionState): boolean {
  if (spec.states === 'any') return true;
  if (spec.states === 'not-authenticated') return state === 'not-authenticated';
  return state === 'authenticated' || state === 'selected';
}

export function upstreamSupports(spec: CommandSpec, caps: readonly string[]): boolean {
  const need = spec.capability;
  if (need === undefined) return true;
  if (typeof need === 'function') return need(caps);
  return caps.some((c) => c.toUpperCase() === need);
}
