/**
 * BURL for a URL naming another IMAP server with which the operator configured a trust
 * relationship (submission.burl.allowedHosts): RFC 4468 §3.3. The gateway acts as an IMAP
 * client there, over TLS, logs in with the submit credentials configured for that host,
 * and resolves the URL with URLFETCH (RFC 4467 §6.3), streaming the literal into the
 * message. One connection per BURL, logged out afterwards: remote BURLs are rare next to
 * the gateway's own URLs, and a pool would keep credentials logged in for no one.
 */
import type { BurlHostConfig, UpstreamConfig } from '../config/schema.js';
import { loginUpstream, UpstreamConnection } from '../imap/upstream.js';
import { astringParts } from '../imap/protocol/writer.js';
import type { SinkFactory } from '../lemonade/fetch-part.js';
import { ImapUrlError, parseImapUrl, type ImapUrl } from '../imap/protocol/url.js';
import { UpstreamUnavailable } from '../upstream/connect.js';
import { urlfetchString } from '../imap/protocol/responses.js';

export type RemoteRefusal =
  | 'untrusted_host' // not listed: 554 5.7.8, nothing contacted
  | 'access' // not a submit+<this user> URLAUTH URL: 554 5.7.0, nothing contacted
  | 'login' // the trusted server refused the submit credentials
  | 'unavailable' // it could not be reached or spoke no IMAP over TLS
  | 'no_data'; // URLFETCH answered NIL or failed: RFC 4468 §6 "554 5.6.6"

export type RemoteResult = { ok: true; size: number } | { ok: false; reason: RemoteRefusal; detail?: string };

/** The trusted server a URL names, if any; the URL's port, when it has one, must be the configured one. */
export function trustedHostFor(url: ImapUrl, hosts: readonly BurlHostConfig[]): BurlHostConfig | undefined {
  if (url.server === undefined) return undefined;
  const host = url.server.host.toLowerCase();
  const entry = hosts.find((h) => h.host.toLowerCase() === host);
  if (entry === undefined) return undefined;
  if (url.server.port !== undefined && url.server.port !== portOf(entry)) return undefined;
  return entry;
}

function portOf(entry: BurlHostConfig): number {
  return entry.port ?? (entry.tls === 'implicit' ? 993 : 143);
}

/** The connection settings for a trusted host, in the shape the IMAP client takes. */
function connectionConfig(entry: BurlHostConfig): UpstreamConfig {
  return {
    host: entry.address ?? entry.host,
    port: portOf(entry),
    tls: entry.tls,
    // The certificate must name the host the URL names, whatever address we connect to.
    tlsOptions: { ...entry.tlsOptions, servername: entry.tlsOptions.servername ?? entry.host },
    connectTimeoutMs: entry.connectTimeoutMs,
  };
}

/** The absolute URL a BURL names, or undefined when it is not one (RFC 5092). */
export function parseAbsoluteUrl(text: string): ImapUrl | undefined {
  try {
    const parsed = parseImapUrl(text);
    return parsed.form === 'absolute' ? parsed.url : undefined;
  } catch (err) {
    if (err instanceof ImapUrlError) return undefined;
    throw err;
  }
}

/**
 * Whether the gateway may resolve the URL at a trusted server for smtpUser: RFC 4468 §3.3
 * "the submit server MUST refuse the BURL command unless the userid in the URL's <access>
 * token matches the submit client's authorization identity". Plain (non-URLAUTH) URLs would
 * need the user's own credentials there; they are refused.
 */
export function submitAccessMatches(url: ImapUrl, smtpUser: string): boolean {
  const auth = url.urlauth;
  return auth?.token !== undefined && auth.access.kind === 'submit' && auth.access.user === smtpUser;
}

/** URLFETCH (RFC 4467 §6.3) of one URL at a trusted server, its literal streamed to the sink. */
export async function fetchRemote(entry: BurlHostConfig, text: string, sinkFor: SinkFactory): Promise<RemoteResult> {
  let conn: UpstreamConnection;
  try {
    conn = await UpstreamConnection.open(connectionConfig(entry));
  } catch (err) {
    if (err instanceof UpstreamUnavailable) return { ok: false, reason: 'unavailable', detail: err.message };
    throw err;
  }
  try {
    const login = await loginUpstream(conn, { user: entry.user, password: entry.password, mechanism: 'plain' });
    if (login.status !== 'OK') return { ok: false, reason: 'login', detail: login.text };
    let streamed: number | undefined;
    const result = await conn.command(['URLFETCH ', ...astringParts(text)], {
      literalSink: (_announcedBy, size) => {
        // One URL was asked for: only the first literal is its content.
        if (streamed !== undefined) return undefined;
        streamed = size;
        return sinkFor(size);
      },
    });
    if (result.status !== 'OK' || streamed === undefined) {
      // RFC 4467 §6.3: NIL for a URL the server will not resolve; a quoted string would be
      // content too, but servers send literals for message data.
      const quotedContent = result.untagged.map(urlfetchString).find((data) => data !== undefined);
      if (result.status === 'OK' && quotedContent !== undefined) {
        const sink = sinkFor(quotedContent.length);
        sink.write(quotedContent);
        sink.end();
        return { ok: true, size: quotedContent.length };
      }
      return { ok: false, reason: 'no_data', detail: result.status === 'OK' ? 'NIL' : result.text };
    }
    return { ok: true, size: streamed };
  } catch (err) {
    if (err instanceof UpstreamUnavailable) return { ok: false, reason: 'unavailable', detail: err.message };
    throw err;
  } finally {
    conn.end();
  }
}
