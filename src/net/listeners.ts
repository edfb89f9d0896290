/**
 * Client-facing listeners shared by the IMAP and submission fronts: plain (optionally
 * offering STARTTLS) and implicit TLS (RFC 8314 §3), each accepted connection handed to
 * the protocol's session, with a cap on concurrent sessions.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { ListenerConfig } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';

export interface BoundListener {
  host: string;
  port: number;
  tls: ListenerConfig['tls'];
}

export interface Listeners {
  addresses: BoundListener[];
  close(): Promise<void>;
}

export interface ListenOptions {
  protocol: string;
  listeners: ListenerConfig[];
  tls: TlsContextHolder;
  log: Logger;
  /** Sessions open now, for the cap. */
  sessionCount(): number;
  maxSessions: number;
  /** What to write before closing a connection over the cap (the protocol's own refusal). */
  refusal: string;
  onConnection(socket: net.Socket, listener: ListenerConfig): void;
}

export async function startListeners(opts: ListenOptions): Promise<Listeners> {
  const servers: net.Server[] = [];
  const addresses: BoundListener[] = [];
  const accept = (listener: ListenerConfig) => (socket: net.Socket) => {
    socket.on('error', () => undefined);
    if (opts.sessionCount() >= opts.maxSessions) {
      socket.end(opts.refusal);
      return;
    }
    socket.setNoDelay(true);
    opts.onConnection(socket, listener);
  };
  for (const listener of opts.listeners) {
    const server =
      listener.tls === 'implicit'
        ? tls.createServer({ ...opts.tls.serverOptions() }, accept(listener))
        : net.createServer(accept(listener));
    if (server instanceof tls.Server) {
      opts.tls.track(server);
      server.on('tlsClientError', (err) => opts.log.debug({ err: err.message, protocol: opts.protocol }, 'TLS handshake failed'));
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
    opts.log.info({ protocol: opts.protocol, host: listener.host, port: addr.port, tls: listener.tls }, 'listener ready');
    servers.push(server);
  }
  return {
    addresses,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
