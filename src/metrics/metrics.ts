/**
 * Every metric the gateway exports, defined in this one module on one registry.
 * Conventions: `lemonade_` prefix, base units (seconds, bytes), `_total` counters, and
 * label values from small fixed sets — never a user name or a mailbox.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'lemonade_' });

export const sessionsOpen = new Gauge({
  name: 'lemonade_sessions_open',
  help: 'Client sessions currently open, by protocol.',
  labelNames: ['protocol'] as const,
  registers: [registry],
});

export const sessionsTotal = new Counter({
  name: 'lemonade_sessions_total',
  help: 'Client sessions accepted, by protocol and listener TLS mode.',
  labelNames: ['protocol', 'listener_tls'] as const,
  registers: [registry],
});

export const imapCommandsTotal = new Counter({
  name: 'lemonade_imap_commands_total',
  help: 'IMAP commands completed, by command and result (ok, no, bad).',
  labelNames: ['command', 'result'] as const,
  registers: [registry],
});

export const commandDuration = new Histogram({
  name: 'lemonade_imap_command_duration_seconds',
  help: 'Time from the end of an IMAP command to its tagged response, by command.',
  labelNames: ['command'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const upstreamConnectFailures = new Counter({
  name: 'lemonade_upstream_connect_failures_total',
  help: 'Failed connections to an upstream server, by protocol and reason.',
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
  help: 'IMAP logins through the gateway, by mechanism and result.',
  labelNames: ['mechanism', 'result'] as const,
  registers: [registry],
});

export const malformedCommands = new Counter({
  name: 'lemonade_imap_malformed_commands_total',
  help: 'Client input the gateway refused itself, by reason.',
  labelNames: ['reason'] as const,
  registers: [registry],
});

export const tlsReloads = new Counter({
  name: 'lemonade_tls_reloads_total',
  help: 'Certificate reloads (SIGHUP), by result.',
  labelNames: ['result'] as const,
  registers: [registry],
});

/** Command names used as label values; anything else is counted as OTHER to keep the label bounded. */
const KNOWN_COMMANDS = new Set([
  'CAPABILITY', 'NOOP', 'LOGOUT', 'ID', 'STARTTLS', 'AUTHENTICATE', 'LOGIN',
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB',
  'STATUS', 'APPEND', 'CHECK', 'CLOSE', 'EXPUNGE', 'SEARCH', 'FETCH', 'STORE', 'COPY', 'MOVE',
  'UID FETCH', 'UID SEARCH', 'UID STORE', 'UID COPY', 'UID MOVE', 'UID EXPUNGE', 'UID SORT', 'UID THREAD',
  'IDLE', 'NAMESPACE', 'ENABLE', 'UNSELECT', 'GETQUOTA', 'GETQUOTAROOT', 'SETQUOTA',
  'GETACL', 'SETACL', 'DELETEACL', 'LISTRIGHTS', 'MYRIGHTS', 'SORT', 'THREAD', 'GETMETADATA', 'SETMETADATA',
  'NOTIFY', 'GENURLAUTH', 'URLFETCH', 'RESETKEY', 'REPLACE', 'UID REPLACE', 'COMPRESS',
]);

export function commandLabel(name: string): string {
  const upper = name.toUpperCase();
  return KNOWN_COMMANDS.has(upper) ? upper : 'OTHER';
}
