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
  /** Stops accepting connections (at once); the open ones carry on. */
  stopAccepting(): void;
  /**
   * Stops accepting, gives the connections still open up to lingerMs to close (a last
   * BYE / 421 being flushed), then destroys the rest. net.Server.close() alone would
   * wait for every connection, forever for a client that never finishes a TLS handshake.
   */
  close(lingerMs?: number): Promise<void>;
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
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
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
    // 'connection' carries the TCP socket, before any TLS handshake.
    server.on('connection', track);
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
  const closed = servers.map((s) => new Promise<void>((r) => s.once('close', () => r())));
  const stopAccepting = () => {
    for (const s of servers) if (s.listening) s.close();
  };
  return {
    addresses,
    stopAccepting,
    async close(lingerMs = 0) {
      stopAccepting();
      const deadline = Date.now() + lingerMs;
      while (sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      await Promise.all(closed);
    },
  };
}
