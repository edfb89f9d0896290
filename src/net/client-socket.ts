/**
 * What the IMAP and submission fronts (and the IMAP upstream connection) do alike with a
 * socket they are about to hand to TLS, and the one rule for plaintext credentials.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { isLoopbackAddress } from './address.js';

/**
 * Before a socket is wrapped in TLS (STARTTLS, either side): nothing more is read as
 * plaintext, and the owner's handlers go, every one of them (a 'drain' handler left
 * behind would later fire on the plain socket under the TLS one).
 */
export function detachForTls(socket: net.Socket): void {
  socket.pause();
  for (const event of ['data', 'end', 'close', 'error', 'drain']) socket.removeAllListeners(event);
}

/**
 * The server side of STARTTLS (RFC 3501 §6.2.1, RFC 3207 §4): the accepted socket
 * wrapped with the current context; `settled` resolves once the handshake is done or the
 * connection closed. The caller has already dropped whatever plaintext was pipelined.
 */
export function startServerTls(plain: net.Socket, secureContext: tls.SecureContext): { secure: tls.TLSSocket; settled: Promise<void> } {
  detachForTls(plain);
  const secure = new tls.TLSSocket(plain, { isServer: true, secureContext });
  const settled = new Promise<void>((resolve) => {
    secure.once('secure', resolve);
    secure.once('close', resolve);
  });
  return { secure, settled };
}

/**
 * Plaintext credentials may be taken (RFC 3501 §6.2.3, RFC 4954 §4): over TLS, or from a
 * loopback client on a listener configured to allow it.
 */
export function plaintextAuthAllowed(tlsActive: boolean, listener: { allowPlaintextAuth: boolean }, remoteAddress: string | undefined): boolean {
  return tlsActive || (listener.allowPlaintextAuth && isLoopbackAddress(remoteAddress));
}
