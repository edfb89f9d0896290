/**
 * What the emulations share across sessions: the store (mailbox access keys), the pool of
 * side connections, and the URL authority. Which extensions are emulated is decided here,
 * from the upstream's capabilities: an extension the upstream has natively is passed
 * through instead (DESIGN.md, "use the upstream's native support when it advertises it").
 */
import type { Config } from '../config/schema.js';
import type { Logger } from '../log/logger.js';
import { hasCapability } from '../imap/capabilities.js';
import { openStore } from '../store/index.js';
import { guardStore, isStoreUnavailable, StoreAvailability, STORE_PROBE_KEY } from '../store/availability.js';
import type { Store } from '../store/store.js';
import { SidePool } from '../imap/side-pool.js';
import { UrlAuthority } from './urlauth.js';
import { MailboxLocks } from './mailbox-locks.js';
import { WarmUpstreams } from '../imap/warm-upstreams.js';

export interface Lemonade {
  readonly config: Config;
  readonly store: Store;
  readonly sidePool: SidePool;
  readonly urlauth: UrlAuthority;
  /** The gateway's APPENDs to one mailbox, one at a time (for APPENDUID without UIDPLUS). */
  readonly appendLocks: MailboxLocks;
  /** Logged-in upstream connections kept for a client's reconnect (imap.warmUpstream). */
  readonly warmUpstreams: WarmUpstreams;
  /**
   * Whether the gateway works out APPENDUID itself: the upstream has no UIDPLUS (and no
   * MULTIAPPEND, whose several messages one size cannot tell apart).
   */
  synthesizesAppendUid(upstream: readonly string[]): boolean;
  /** Capabilities the gateway adds to the upstream's (in the order they are listed). */
  emulated(upstream: readonly string[]): string[];
  /** Whether this command is answered by an emulation rather than relayed. */
  intercepts(command: string, upstream: readonly string[]): boolean;
  close(): Promise<void>;
}

/** Commands each emulated capability brings (RFC 4467 §6). */
const COMMANDS: Record<string, readonly string[]> = {
  URLAUTH: ['GENURLAUTH', 'URLFETCH', 'RESETKEY'],
  // RFC 4469: APPEND is intercepted only when its data is a CATENATE list.
  CATENATE: ['APPEND'],
  // RFC 4315: APPENDUID is worked out around every APPEND; these two are answered here.
  UIDPLUS: ['UID EXPUNGE', 'COPY', 'UID COPY'],
  // RFC 7162: FETCH, STORE and SEARCH only in a CONDSTORE session (the session decides);
  // every STATUS, so its HIGHESTMODSEQ item (§3.1.9) never reaches the upstream.
  CONDSTORE: ['SELECT', 'EXAMINE', 'FETCH', 'UID FETCH', 'STORE', 'UID STORE', 'SEARCH', 'UID SEARCH', 'ENABLE', 'STATUS'],
  QRESYNC: ['SELECT', 'EXAMINE', 'FETCH', 'UID FETCH', 'ENABLE'],
  // RFC 5161, advertised when the upstream lacks it; intercepted whenever CONDSTORE is emulated.
  ENABLE: ['ENABLE'],
};

/** The CONDSTORE/QRESYNC emulation's capabilities, offered whenever the upstream has no CONDSTORE (they need no side connection). */
function modseqEmulation(config: Config, upstream: readonly string[]): string[] {
  if (!config.imap.qresync.enabled || hasCapability(upstream, 'CONDSTORE') || hasCapability(upstream, 'QRESYNC')) return [];
  return hasCapability(upstream, 'ENABLE') ? ['CONDSTORE', 'QRESYNC'] : ['CONDSTORE', 'QRESYNC', 'ENABLE'];
}

export async function startLemonade(config: Config, log: Logger): Promise<Lemonade> {
  const raw = await openStore(config);
  // Failures that mean "the store is unreachable" become StoreUnavailableError, logged once per outage (availability.ts).
  const store = guardStore(raw, new StoreAvailability(log, () => raw.getMeta(STORE_PROBE_KEY)));
  const side = config.imap.sideConnections;
  const sidePool = new SidePool(config, { maxIdle: side.maxIdle, idleMs: side.idleSeconds * 1000, maxOpen: side.maxOpen }, log);
  const urlauth = new UrlAuthority(store);
  const warmUpstreams = new WarmUpstreams(config.imap.warmUpstream);
  if (config.imap.master === undefined) {
    log.warn('imap.master is not configured: URLAUTH is not emulated (it needs side connections)');
  }
  const emulated = (upstream: readonly string[]): string[] => {
    const modseq = modseqEmulation(config, upstream);
    // Fetching parts on the user's behalf needs the master identity.
    if (!sidePool.available) return modseq;
    // With MULTIAPPEND (RFC 3502) upstream, one APPEND may carry several messages: neither
    // APPENDUID by one size nor the one-message CATENATE emulation would be right then.
    const multi = hasCapability(upstream, 'MULTIAPPEND');
    const parts = ['URLAUTH', 'CATENATE', 'UIDPLUS'].filter((cap) => !hasCapability(upstream, cap) && !(multi && (cap === 'UIDPLUS' || cap === 'CATENATE')));
    return [...parts, ...modseq];
  };
  return {
    config,
    store,
    sidePool,
    urlauth,
    appendLocks: new MailboxLocks(
      config.imap.limits.mailboxLockSeconds * 1000,
      (key) => {
        const [user, mailbox] = key.split('\0');
        log.warn({ user, mailbox }, 'mailbox lock held too long: taken back (that command gets no UID code)');
      },
      // Other gateway processes on the same store append to the same mailboxes.
      (key, holdMs, signal) => store.mailboxLock(key, holdMs, signal),
      (key, err) => {
        const [user, mailbox] = key.split('\0');
        // An outage is logged once (store/availability.ts); the command just goes without a UID code.
        const level = isStoreUnavailable(err) ? 'debug' : 'error';
        log[level]({ user, mailbox, err: err.message }, 'mailbox lock: the store failed (that command gets no UID code)');
      },
    ),
    warmUpstreams,
    synthesizesAppendUid: (upstream) =>
      sidePool.available && !hasCapability(upstream, 'UIDPLUS') && !hasCapability(upstream, 'MULTIAPPEND'),
    emulated,
    intercepts(command, upstream) {
      const name = command.toUpperCase();
      return emulated(upstream).some((cap) => COMMANDS[cap]!.includes(name));
    },
    async close() {
      warmUpstreams.close();
      await sidePool.close();
      await store.close();
    },
  };
}
