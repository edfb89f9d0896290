/** The IMAP front: its listeners, each connection an ImapSession. */
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import type { TlsContextHolder } from '../tls/certificates.js';
import { startListeners, type BoundListener } from '../net/listeners.js';
import type { CapabilityCache } from './capability-cache.js';
import type { Lemonade } from '../lemonade/services.js';
import { ImapSession } from './session.js';
import { untaggedStatus } from './protocol/writer.js';

export interface ImapServer {
  /** Bound addresses, in listener order (port 0 in config gets a real port here). */
  addresses: BoundListener[];
  sessions: Set<ImapSession>;
  /** Stops accepting connections; open sessions carry on. */
  stopAccepting(): void;
  /** Closes the listeners; connections still open after lingerMs are destroyed. */
  close(lingerMs?: number): Promise<void>;
}

export async function startImapServer(
  config: Config,
  tlsHolder: TlsContextHolder,
  capabilityCache: CapabilityCache,
  lemonade: Lemonade,
  log: Logger,
): Promise<ImapServer> {
  const sessions = new Set<ImapSession>();
  const listeners = await startListeners({
    protocol: 'imap',
    listeners: config.imap.listen,
    tls: tlsHolder,
    log,
    sessionCount: () => sessions.size,
    maxSessions: config.imap.limits.maxSessions,
    // RFC 3501 §7.1.5: BYE as the greeting refuses the connection.
    refusal: untaggedStatus('BYE', 'Too many connections, try again later').toString('latin1'),
    onConnection(socket, listener) {
      const session = new ImapSession(socket, {
        config,
        listener,
        tls: tlsHolder,
        capabilityCache,
        lemonade,
        log,
        onClose: (s) => sessions.delete(s),
      });
      sessions.add(session);
    },
  });
  return {
    addresses: listeners.addresses,
    sessions,
    stopAccepting: () => listeners.stopAccepting(),
    close: (lingerMs) => listeners.close(lingerMs),
  };
}
