/**
 * Opening a TCP or TLS connection to an upstream server, with the failure reasons the
 * metrics count. Shared by the IMAP session's own upstream connection and, later, the
 * submission relay and side connections.
 */
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import type { UpstreamConfig } from '../config/schema.js';

export type ConnectFailureReason = 'refused' | 'timeout' | 'tls' | 'closed' | 'other';

export class UpstreamUnavailable extends Error {
  constructor(
    readonly reason: ConnectFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamUnavailable';
  }
}

export function classifySocketError(err: NodeJS.ErrnoException): ConnectFailureReason {
  switch (err.code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'closed';
    default:
      return err.code?.startsWith('ERR_TLS') || err.code?.startsWith('ERR_SSL') || err.code?.includes('CERT')
        ? 'tls'
        : 'other';
  }
}

const caCache = new Map<string, Buffer>();
function readCa(file: string | undefined): Buffer | undefined {
  if (file === undefined) return undefined;
  let ca = caCache.get(file);
  if (ca === undefined) {
    ca = fs.readFileSync(file);
    caCache.set(file, ca);
  }
  return ca;
}

export function upstreamTlsOptions(cfg: UpstreamConfig): tls.ConnectionOptions {
  return {
    ca: readCa(cfg.tlsOptions.ca),
    rejectUnauthorized: cfg.tlsOptions.rejectUnauthorized,
    servername: cfg.tlsOptions.servername ?? (net.isIP(cfg.host) ? undefined : cfg.host),
    minVersion: 'TLSv1.2',
  };
}

/** Resolves once the socket is connected (and, for implicit TLS, the handshake is done). */
export function connectSocket(cfg: UpstreamConfig): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket: net.Socket =
      cfg.tls === 'implicit'
        ? tls.connect({ host: cfg.host, port: cfg.port, ...upstreamTlsOptions(cfg) })
        : net.connect({ host: cfg.host, port: cfg.port });
    const readyEvent = cfg.tls === 'implicit' ? 'secureConnect' : 'connect';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamUnavailable('timeout', `connect to ${cfg.host}:${cfg.port} timed out`));
    }, cfg.connectTimeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new UpstreamUnavailable(classifySocketError(err), `connect to ${cfg.host}:${cfg.port}: ${err.message}`));
    };
    socket.once('error', onError);
    socket.once(readyEvent, () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

/** Upgrades a connected plain socket after the protocol's STARTTLS exchange. */
export function upgradeToTls(socket: net.Socket, cfg: UpstreamConfig): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket, ...upstreamTlsOptions(cfg) });
    const onError = (err: NodeJS.ErrnoException): void => {
      secure.destroy();
      reject(new UpstreamUnavailable('tls', `STARTTLS to ${cfg.host}:${cfg.port}: ${err.message}`));
    };
    secure.once('error', onError);
    secure.once('secureConnect', () => {
      secure.off('error', onError);
      secure.setNoDelay(true);
      resolve(secure);
    });
  });
}
