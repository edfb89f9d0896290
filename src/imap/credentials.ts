/**
 * What a client logged in with, as the upstream login and the warm-upstream key need it.
 * A module of its own: the connection layer (upstream.ts, warm-upstreams.ts) needs the
 * type, and taking it from the command layer (commands/context.ts) closed an import cycle.
 */
export interface Credentials {
  /** Authentication identity (RFC 4616 authcid). */
  user: string;
  password: string;
  /** Authorization identity when it differs from user (RFC 4616 authzid). */
  authzid?: string;
  mechanism: 'login' | 'plain';
}
