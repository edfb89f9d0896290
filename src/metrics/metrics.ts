/**
 * Every metric the gateway exports, defined in this one module on one registry.
 * Conventions: `lemonade_` prefix, base units (seconds, bytes), `_total` counters, and
 * label values from small fixed sets — never a user name or a mailbox — so the number of
 * series stays bounded whatever clients send.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'lemonade_' });
// prom-client's gauges named *_total break the convention that _total marks a counter
// (promtool check metrics flags them); the same numbers are the sums of the per-type gauges
// lemonade_nodejs_active_{handles,requests,resources}.
for (const kind of ['handles', 'requests', 'resources']) registry.removeSingleMetric(`lemonade_nodejs_active_${kind}_total`);

/** The label values each bounded label may take; the series for them are created at zero below. */
export const PROTOCOLS = ['imap', 'submission'] as const;
export const LISTENER_TLS = ['none', 'starttls', 'implicit'] as const;
export const COMMAND_RESULTS = ['ok', 'no', 'bad', 'error'] as const;
export const CONNECT_FAILURE_REASONS = ['refused', 'timeout', 'tls', 'closed', 'other'] as const;
export const DIRECTIONS = ['client_in', 'client_out', 'upstream_in', 'upstream_out'] as const;
export const AUTH_MECHANISMS = ['login', 'plain'] as const;
export const AUTH_RESULTS = ['ok', 'no'] as const;
export const MALFORMED_REASONS = ['line_too_long', 'literal_too_large', 'syntax', 'state'] as const;
export const RELOAD_RESULTS = ['ok', 'error'] as const;

export type Protocol = (typeof PROTOCOLS)[number];
export type CommandResult = (typeof COMMAND_RESULTS)[number];
export type ConnectFailureReason = (typeof CONNECT_FAILURE_REASONS)[number];
export type Direction = (typeof DIRECTIONS)[number];
export type MalformedReason = (typeof MALFORMED_REASONS)[number];

export const sessionsOpen = new Gauge({
  name: 'lemonade_sessions_open',
  help: 'Client sessions currently open, by protocol.',
  labelNames: ['protocol'] as const,
  registers: [registry],
});

export const sessionsTotal = new Counter({
  name: 'lemonade_sessions_total',
  help: 'Client sessions accepted, by protocol and the TLS mode of the listener (none, starttls, implicit).',
  labelNames: ['protocol', 'listener_tls'] as const,
  registers: [registry],
});

export const imapCommandsTotal = new Counter({
  name: 'lemonade_imap_commands_total',
  help: 'IMAP commands completed, by command (unknown ones as OTHER) and result (ok, no, bad, or error when the session failed before a tagged response).',
  labelNames: ['command', 'result'] as const,
  registers: [registry],
});

export const commandDuration = new Histogram({
  name: 'lemonade_imap_command_duration_seconds',
  help: 'Time from receiving an IMAP command to its tagged response, by command.',
  labelNames: ['command'] as const,
  // 1 ms (answered locally) to 30 s (a large FETCH or APPEND); IDLE ends up in +Inf.
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const upstreamConnectFailures = new Counter({
  name: 'lemonade_upstream_connect_failures_total',
  help: 'Failed connections to an upstream server, by protocol and reason (refused, timeout, tls, closed, other).',
  labelNames: ['protocol', 'reason'] as const,
  registers: [registry],
});

export const upstreamConnectionsOpen = new Gauge({
  name: 'lemonade_upstream_connections_open',
  help: 'Connections to upstream servers currently open, by protocol.',
  labelNames: ['protocol'] as const,
  registers: [registry],
});

export const bytesTotal = new Counter({
  name: 'lemonade_bytes_total',
  help: 'Bytes carried, by protocol and direction (client_in, client_out, upstream_in, upstream_out).',
  labelNames: ['protocol', 'direction'] as const,
  registers: [registry],
});

export const imapAuthTotal = new Counter({
  name: 'lemonade_imap_auth_total',
  help: 'IMAP authentications through the gateway, by mechanism (login, plain) and result (ok, no).',
  labelNames: ['mechanism', 'result'] as const,
  registers: [registry],
});

export const malformedCommands = new Counter({
  name: 'lemonade_imap_malformed_commands_total',
  help: 'Client input the gateway refused itself, by reason (line_too_long, literal_too_large, syntax, state).',
  labelNames: ['reason'] as const,
  registers: [registry],
});

export const tlsReloads = new Counter({
  name: 'lemonade_tls_reloads_total',
  help: 'TLS certificate reloads (SIGHUP), by result (ok, error).',
  labelNames: ['result'] as const,
  registers: [registry],
});

export const SUBMISSION_RESULTS = ['accepted', 'rejected'] as const;
/** Why a submission was refused: by the gateway's own checks, or by the upstream MTA. */
export const SUBMISSION_REASONS = ['none', 'size', 'sender', 'line_too_long', 'upstream', 'upstream_unavailable', 'burl'] as const;
export const SUBMISSION_AUTH_RESULTS = ['ok', 'failed', 'unavailable'] as const;

export const submissionMessages = new Counter({
  name: 'lemonade_submission_messages_total',
  help: 'Messages submitted, by result (accepted, rejected) and reason (none when accepted; size, sender, line_too_long, upstream, upstream_unavailable).',
  labelNames: ['result', 'reason'] as const,
  registers: [registry],
});

export const submissionAuthTotal = new Counter({
  name: 'lemonade_submission_auth_total',
  help: 'Submission AUTH attempts, by mechanism (plain, login) and result (ok, failed, unavailable).',
  labelNames: ['mechanism', 'result'] as const,
  registers: [registry],
});

// A series that has never been touched is absent, not 0, and rate()/increase() over it
// are empty: alerts on "reloads failing" or "upstream refused" would never fire the first time.
for (const protocol of PROTOCOLS) {
  sessionsOpen.set({ protocol }, 0);
  upstreamConnectionsOpen.set({ protocol }, 0);
  for (const listener_tls of LISTENER_TLS) sessionsTotal.inc({ protocol, listener_tls }, 0);
  for (const reason of CONNECT_FAILURE_REASONS) upstreamConnectFailures.inc({ protocol, reason }, 0);
  for (const direction of DIRECTIONS) bytesTotal.inc({ protocol, direction }, 0);
}
for (const mechanism of AUTH_MECHANISMS) {
  for (const result of AUTH_RESULTS) imapAuthTotal.inc({ mechanism, result }, 0);
}
for (const reason of MALFORMED_REASONS) malformedCommands.inc({ reason }, 0);
for (const result of RELOAD_RESULTS) tlsReloads.inc({ result }, 0);
submissionMessages.inc({ result: 'accepted', reason: 'none' }, 0);
for (const reason of SUBMISSION_REASONS.filter((r) => r !== 'none')) submissionMessages.inc({ result: 'rejected', reason }, 0);
for (const mechanism of AUTH_MECHANISMS) {
  for (const result of SUBMISSION_AUTH_RESULTS) submissionAuthTotal.inc({ mechanism, result }, 0);
}

/**
 * Command names used as label values: RFC 3501 and the extensions a client may send
 * through the gateway. Anything else is counted as OTHER, because command names come from
 * the client and an unbounded label would let any client create series at will.
 */
const KNOWN_COMMANDS: ReadonlySet<string> = new Set([
  // RFC 3501 (and RFC 9051)
  'CAPABILITY', 'NOOP', 'LOGOUT', 'STARTTLS', 'AUTHENTICATE', 'LOGIN',
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB',
  'STATUS', 'APPEND', 'CHECK', 'CLOSE', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY',
  'UID FETCH', 'UID SEARCH', 'UID STORE', 'UID COPY',
  // Extensions
  'IDLE', // RFC 2177
  'NAMESPACE', // RFC 2342
  'ID', // RFC 2971
  'ENABLE', // RFC 5161
  'UNSELECT', // RFC 3691
  'UID EXPUNGE', // RFC 4315 UIDPLUS
  'MOVE', 'UID MOVE', // RFC 6851
  'GETQUOTA', 'GETQUOTAROOT', 'SETQUOTA', // RFC 9208
  'GETACL', 'SETACL', 'DELETEACL', 'LISTRIGHTS', 'MYRIGHTS', // RFC 4314
  'GENURLAUTH', 'URLFETCH', 'RESETKEY', // RFC 4467
  'COMPRESS', // RFC 4978
  'SORT', 'UID SORT', 'THREAD', 'UID THREAD', // RFC 5256
  'ESEARCH', // RFC 7377
  'CANCELUPDATE', // RFC 5267
  'LANGUAGE', 'COMPARATOR', // RFC 5255
  'CONVERT', 'UID CONVERT', // RFC 5259
  'GETMETADATA', 'SETMETADATA', // RFC 5464
  'NOTIFY', // RFC 5465
  'REPLACE', 'UID REPLACE', // RFC 8508
  'UNAUTHENTICATE', // RFC 8437
  'XLIST', // pre-RFC 6154 special-use listing, still sent by older clients
]);

/** The `command` label value for a command NAME ("uid fetch" → "UID FETCH"); OTHER when not a known command. */
export function commandLabel(name: string): string {
  // Longer than any known name: skip the work on a client's junk.
  if (name.length > 20) return 'OTHER';
  const upper = name.trim().split(/\s+/).join(' ').toUpperCase();
  return KNOWN_COMMANDS.has(upper) ? upper : 'OTHER';
}

export const RELAY_CONTENT_MODES = ['data', 'bdat'] as const;
export const RELAY_RESULTS = ['accepted', 'rejected', 'error'] as const;

/** What one relay pool holds now (smtp/relay-pool.ts): the gauge below is read from it. */
export interface RelayPoolState {
  readonly idleCount: number;
  readonly inUseCount: number;
}

const relayPools = new Set<RelayPoolState>();

/** Counts a pool's connections in lemonade_smtp_relay_connections_open until the returned function is called. */
export function trackRelayPool(pool: RelayPoolState): () => void {
  relayPools.add(pool);
  return () => {
    relayPools.delete(pool);
  };
}

// Read from the pools at each scrape instead of kept by inc/dec: a count kept beside the
// pool drifted whenever a transaction ended by some path that forgot to decrement it
// (issue 15 §4), while the pool's own sets cannot disagree with themselves.
export const smtpRelayConnections = new Gauge({
  name: 'lemonade_smtp_relay_connections_open',
  help: 'Pooled connections to the upstream MTA, by state (idle, in_use).',
  labelNames: ['state'] as const,
  registers: [registry],
  collect() {
    let idle = 0;
    let inUse = 0;
    for (const pool of relayPools) {
      idle += pool.idleCount;
      inUse += pool.inUseCount;
    }
    this.set({ state: 'idle' }, idle);
    this.set({ state: 'in_use' }, inUse);
  },
});

export const smtpRelayDuration = new Histogram({
  name: 'lemonade_smtp_relay_duration_seconds',
  help: 'Time from starting message content upstream (DATA or first BDAT) to the final reply, by mode (data, bdat) and result (accepted, rejected, error).',
  labelNames: ['mode', 'result'] as const,
  // Small messages on a local MTA take milliseconds; large ones over a WAN a minute or more.
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

for (const mode of RELAY_CONTENT_MODES) {
  for (const result of RELAY_RESULTS) smtpRelayDuration.zero({ mode, result });
}

// ---- side connections (URLFETCH, CATENATE, BURL) --------------------------------------

export const sideConnections = new Gauge({
  name: 'lemonade_imap_side_connections_open',
  help: 'Upstream IMAP connections the gateway opened on its own behalf, by state (idle, in_use).',
  labelNames: ['state'] as const,
  registers: [registry],
});
for (const state of ['idle', 'in_use']) sideConnections.set({ state }, 0);

// ---- URLAUTH (RFC 4467) ----------------------------------------------------------------

/** Why a URLAUTH URL was not served (lemonade/authorize-url.ts Refusal plus fetch failures). */
export const URLAUTH_FETCH_REASONS = [
  'none',
  'syntax',
  'not_ours',
  'no_token',
  'mechanism',
  'token',
  'expired',
  'access',
  'anonymous_disabled',
  'no_mailbox',
  'uidvalidity',
  'no_message',
  'no_section',
  'unavailable',
  'size',
  // BURL of a URL naming another server (RFC 4468 §3.3): not listed, login refused there, NIL.
  'untrusted_host',
  'login',
  'no_data',
] as const;

export const urlauthIssued = new Counter({
  name: 'lemonade_urlauth_issued_total',
  help: 'URLAUTH-authorized URLs issued by GENURLAUTH, by access identifier kind (submit, user, authuser, anonymous).',
  labelNames: ['access'] as const,
  registers: [registry],
});

export const urlauthFetches = new Counter({
  name: 'lemonade_urlauth_fetches_total',
  help: 'URLAUTH URLs resolved (URLFETCH, BURL), by user (urlfetch, burl for this gateway\'s URLs, burl_remote for a trusted server\'s), result (allowed, refused) and reason.',
  labelNames: ['by', 'result', 'reason'] as const,
  registers: [registry],
});

export const urlauthFetchBytes = new Counter({
  name: 'lemonade_urlauth_fetch_bytes_total',
  help: 'Bytes of message data served for URLAUTH URLs, which the client never had to download and upload.',
  labelNames: ['by'] as const,
  registers: [registry],
});

for (const access of ['submit', 'user', 'authuser', 'anonymous']) urlauthIssued.inc({ access }, 0);
for (const by of ['urlfetch', 'burl', 'burl_remote']) {
  urlauthFetchBytes.inc({ by }, 0);
  urlauthFetches.inc({ by, result: 'allowed', reason: 'none' }, 0);
  for (const reason of URLAUTH_FETCH_REASONS.slice(1)) urlauthFetches.inc({ by, result: 'refused', reason }, 0);
}

// ---- CATENATE (RFC 4469) ----------------------------------------------------------------

export const catenateAppends = new Counter({
  name: 'lemonade_catenate_appends_total',
  help: 'APPEND CATENATE commands the gateway assembled, by result (appended, badurl, toobig, unavailable, mailbox: the target mailbox is missing or refused, bad).',
  labelNames: ['result'] as const,
  registers: [registry],
});

export const catenateUrlBytes = new Counter({
  name: 'lemonade_catenate_url_bytes_total',
  help: 'Bytes of URL parts the gateway fetched upstream for CATENATE: what clients did not have to send.',
  registers: [registry],
});
for (const result of ['appended', 'badurl', 'toobig', 'unavailable', 'mailbox', 'bad']) catenateAppends.inc({ result }, 0);

export const burlResolutionDuration = new Histogram({
  name: 'lemonade_burl_resolution_seconds',
  help: 'Time to resolve one BURL URL (check and fetch into the message), by result (allowed, refused).',
  labelNames: ['result'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

// ---- FUTURERELEASE (RFC 4865) -----------------------------------------------------------

// These three describe the one spool every worker process shares (each counts all of it),
// so the cluster's /metrics (src/cluster/) takes the largest report, not the sum. Every
// other metric is per process and summed (prom-client's default aggregator).
export const heldMessages = new Gauge({
  name: 'lemonade_futurerelease_held_messages',
  help: 'Messages in the FUTURERELEASE spool (held, being released, or waiting to retry), DSNs the gateway generated included.',
  aggregator: 'max',
  registers: [registry],
});

export const heldBytes = new Gauge({
  name: 'lemonade_futurerelease_held_bytes',
  help: 'Octets of the messages in the FUTURERELEASE spool.',
  aggregator: 'max',
  registers: [registry],
});

export const heldOldestRelease = new Gauge({
  name: 'lemonade_futurerelease_oldest_release_timestamp_seconds',
  help: 'Requested release time of the longest-waiting message in the spool (Unix seconds); 0 when the spool is empty.',
  aggregator: 'max',
  registers: [registry],
});

export const HOLD_OUTCOMES = ['held', 'cancelled', 'released', 'retried', 'failed', 'resent_after_crash', 'claim_lost'] as const;

export const futureReleaseEvents = new Counter({
  name: 'lemonade_futurerelease_messages_total',
  help: 'FUTURERELEASE spool events: held (accepted for later), cancelled (by its sender or an operator), released (relayed to the MTA), retried (a release left recipients to retry), failed (a recipient failed for good), resent_after_crash (the gateway, or with a shared store the instance whose release lease ran out, died while the end of its content was being handed to the MTA: released again, a second copy is possible), claim_lost (a release stalled past its lease and left the message to the instance that took it over, before sending the end of its content).',
  labelNames: ['event'] as const,
  registers: [registry],
});

export const futureReleaseDsns = new Counter({
  name: 'lemonade_futurerelease_dsns_total',
  help: 'Delivery status notifications (RFC 3464) the gateway generated for held messages that could not be delivered.',
  registers: [registry],
});

export const releaseLag = new Histogram({
  name: 'lemonade_futurerelease_release_lag_seconds',
  help: 'From the requested release time to the MTA accepting the message, for first attempts.',
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
  registers: [registry],
});

for (const event of HOLD_OUTCOMES) futureReleaseEvents.inc({ event }, 0);

// ---- CONDSTORE/QRESYNC emulation (RFC 7162) ------------------------------------------

export const RECONCILE_RESULTS = ['ok', 'error'] as const;
export const QRESYNC_CHANGE_KINDS = ['changed', 'expunged'] as const;
export const QRESYNC_BYTE_KINDS = ['sent', 'full_equivalent'] as const;

export const qresyncReconciliations = new Counter({
  name: 'lemonade_qresync_reconciliations_total',
  help: 'Full rescans of a mailbox against the upstream (UID FETCH 1:* (FLAGS)) for CONDSTORE/QRESYNC, by result.',
  labelNames: ['result'] as const,
  registers: [registry],
});

export const qresyncReconcileDuration = new Histogram({
  name: 'lemonade_qresync_reconcile_duration_seconds',
  help: 'Time a full rescan of a mailbox took (upstream fetch and store writes).',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const qresyncChanges = new Counter({
  name: 'lemonade_qresync_changes_total',
  help: 'Changes the gateway found and gave a new mod-sequence: new messages or changed flags (changed), expunges.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const qresyncSelectBytes = new Counter({
  name: 'lemonade_qresync_select_bytes_total',
  help: 'Bytes of VANISHED and FETCH responses sent for SELECT/EXAMINE (QRESYNC) (sent), and what FETCH 1:* (UID FLAGS) would have sent instead (full_equivalent).',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const warmUpstreamReuses = new Counter({
  name: 'lemonade_imap_warm_upstream_total',
  help: 'Upstream IMAP connections kept warm after a client left, by what became of them (reused by a reconnect, or closed when they expired or were evicted).',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const WARM_OUTCOMES = ['kept', 'reused', 'expired'] as const;
for (const result of RECONCILE_RESULTS) qresyncReconciliations.inc({ result }, 0);
for (const kind of QRESYNC_CHANGE_KINDS) qresyncChanges.inc({ kind }, 0);
for (const kind of QRESYNC_BYTE_KINDS) qresyncSelectBytes.inc({ kind }, 0);
for (const outcome of WARM_OUTCOMES) warmUpstreamReuses.inc({ outcome }, 0);

// ---- cross-session locks ------------------------------------------------------------

export const MAILBOX_LOCK_EVENTS = ['acquired', 'expired', 'abandoned'] as const;

export const mailboxLockEvents = new Counter({
  name: 'lemonade_imap_mailbox_lock_events_total',
  help: 'Per-mailbox locks of the APPENDUID/COPYUID emulation: granted, taken back after imap.limits.mailboxLockSeconds (the command then gets no UID code), or given up by a waiter whose session ended.',
  labelNames: ['event'] as const,
  registers: [registry],
});
for (const event of MAILBOX_LOCK_EVENTS) mailboxLockEvents.inc({ event }, 0);

// ---- the store (store/availability.ts) ------------------------------------------------

export const storeUp = new Gauge({
  name: 'lemonade_store_up',
  help: 'Whether the store (SQLite file or PostgreSQL) answers: 1, or 0 from a call that found it unreachable until one that succeeds (a probe retries while down). With workers, the lowest.',
  // Workers (cluster aggregation): one that cannot reach the store makes the host's value 0.
  aggregator: 'min',
  registers: [registry],
});

export const storeErrors = new Counter({
  name: 'lemonade_store_errors_total',
  help: 'Store calls that failed because the store was unavailable, by Store method and reason (connection, timeout, shutdown, resources, io, busy, read_only); their commands got NO [UNAVAILABLE] / 451 4.3.0.',
  labelNames: ['operation', 'reason'] as const,
  registers: [registry],
});

// ---- worker processes (src/cluster/) --------------------------------------------------

export const workerRestarts = new Counter({
  name: 'lemonade_worker_restarts_total',
  help: 'Worker processes (workers > 1) that exited unexpectedly and were started again by the primary.',
  registers: [registry],
});
