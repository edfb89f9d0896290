/**
 * The IMAP listeners: plain (optionally with STARTTLS) and implicit TLS (RFC 8314 §3.2),
 * each accepted connection becoming an ImapSession, with a cap on concurrent sessions.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Config, ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';
import type { CapabilityCache } from './capability-cache.js';
import { ImapSession } from './session.js';

export interface ImapServer {
  /** Bound addresses, in listener order (port 0 in config gets a real port here). */
  addresses: Array<{ host: string; port: number; tls: ListenerConfig['tls'] }>;
  sessions: Set<ImapSession>;
  close(): Promise<void>;
}

export async function startImapServer(
  config: Config,
  tlsHolder: TlsContextHolder,
  capabilityCache: CapabilityCache,
  log: Logger,
): Promise<ImapServer> {
  const sessions = new Set<ImapSession>();
  const servers: net.Server[] = [];
  const addresses: ImapServer['addresses'] = [];

  const accept = (listener: ListenerConfig) => (socket: net.Socket) => {
    socket.on('error', () => undefined);
    if (sessions.size >= config.imap.limits.maxSessions) {
      // RFC 3501 §7.1.5: BYE as the greeting refuses the connection.
      socket.end('* BYE Too many connections, try again later\r\n');
      return;
    }
    socket.setNoDelay(true);
    const session = new ImapSession(socket, {
      config,
      listener,
      tls: tlsHolder,
      capabilityCache,
      log,
      onClose: (s) => sessions.delete(s),
    });
    sessions.add(session);
  };

  for (const listener of config.imap.listen) {
    const server =
      listener.tls === 'implicit'
        ? tls.createServer({ ...tlsHolder.serverOptions() }, accept(listener))
        : net.createServer(accept(listener));
    if (server instanceof tls.Server) {
      tlsHolder.track(server);
      server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake failed'));
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: listener.host, port: listener.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as net.AddressInfo;
    addresses.push({ host: listener.host, port: addr.port, tls: listener.tls });
    log.info({ host: listener.host, port: addr.port, tls: listener.tls }, 'IMAP listener ready');
    servers.push(server);
  }

  return {
    addresses,
    sessions,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
