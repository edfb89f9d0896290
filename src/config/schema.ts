/**
 * The one configuration schema. Every option has its default here; config.example.yaml
 * documents the same options (a test keeps the two in step).
 */
import { z } from 'zod';

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);

/** How a connection is protected: none, STARTTLS upgrade (RFC 3501 §6.2.1, RFC 3207), or TLS from the first byte. */
export const tlsMode = z.enum(['none', 'starttls', 'implicit']);

const listener = z.strictObject({
  host: host.default('127.0.0.1'),
  port,
  tls: tlsMode.default('starttls'),
  /**
   * Offer LOGIN / AUTHENTICATE PLAIN before TLS. Plaintext credentials are only ever
   * allowed on loopback addresses (RFC 3501 §6.2.3 LOGINDISABLED otherwise), whatever this says.
   */
  allowPlaintextAuth: z.boolean().default(false),
});

const upstreamTls = z.strictObject({
  /** PEM file(s) of CAs to trust for the upstream; system CAs when omitted. */
  ca: z.string().optional(),
  /** Verify the upstream certificate. Only turn off for a loopback upstream under test. */
  rejectUnauthorized: z.boolean().default(true),
  /** SNI name and name checked in the certificate; defaults to upstream host. */
  servername: z.string().optional(),
});

const upstream = (defaultPort: number) =>
  z.strictObject({
    host: host.default('127.0.0.1'),
    port: port.default(defaultPort),
    tls: tlsMode.default('none'),
    tlsOptions: upstreamTls.prefault({}),
    connectTimeoutMs: z.number().int().positive().default(10_000),
  });

const imapLimits = z.strictObject({
  /** Longest command line (bytes before CRLF, per literal-separated segment). */
  maxLineLength: z.number().int().min(1024).default(65_536),
  /** Largest single literal a client may send (APPEND message size). */
  maxLiteralSize: z.number().int().min(1024).default(100 * 1024 * 1024),
  /** Largest literal the gateway buffers for a command it parses itself (LOGIN, AUTHENTICATE, ...). */
  maxBufferedLiteral: z.number().int().min(1024).default(64 * 1024),
  /** Concurrent client sessions on all IMAP listeners together. */
  maxSessions: z.number().int().positive().default(10_000),
  /** Malformed commands in a row before the session is closed with BYE. */
  maxBadCommands: z.number().int().positive().default(20),
  /**
   * Commands a client may send before it is logged in (CAPABILITY, STARTTLS, ID, failed
   * logins, ...); the next gets BYE. A real client needs a handful.
   */
  maxCommandsBeforeLogin: z.number().int().positive().default(30),
  /**
   * Longest time one session may hold a mailbox's APPENDUID/COPYUID lock (an APPEND whose
   * literal trickles in holds it); then the lock passes on and that command gets no UID code.
   */
  mailboxLockSeconds: z.number().int().positive().default(120),
});

const imapTimeouts = z.strictObject({
  /**
   * From connect to login, however active the client is (a deadline, not an idle timer);
   * RFC 3501 §5.4 leaves it to the server, Dovecot uses about a minute.
   */
  preAuthSeconds: z.number().int().positive().default(60),
  /** Authenticated but idle; RFC 3501 §5.4 says at least 30 minutes. */
  idleSeconds: z.number().int().min(1800).default(1800),
  /**
   * How long the upstream may take to answer a literal's announcement with "+" (or the
   * command with its tagged reply); then the session ends with BYE.
   */
  upstreamContinuationSeconds: z.number().int().positive().default(60),
});

const submissionLimits = z.strictObject({
  /** Largest message accepted, in bytes; advertised as SIZE (RFC 1870). */
  maxMessageSize: z.number().int().min(1024).default(50 * 1024 * 1024),
  /** Recipients per transaction; more get 452 4.5.3 (RFC 5321 §4.5.3.1.8 asks for at least 100). */
  maxRecipients: z.number().int().positive().default(100),
  /** Longest command line in bytes including CRLF (RFC 5321 §4.5.3.1.4: at least 512). */
  maxCommandLine: z.number().int().min(512).default(4096),
  /** Longest message text line in bytes including CRLF (RFC 5321 §4.5.3.1.6: 1000). */
  maxTextLine: z.number().int().min(1000).default(1000),
  /** Concurrent submission sessions across all listeners. */
  maxSessions: z.number().int().positive().default(1000),
  /** Errors in a row before the session is closed with 421. */
  maxErrors: z.number().int().positive().default(20),
  /** Commands before a successful AUTH (EHLO, STARTTLS, NOOP, failed AUTHs, ...); the next gets 421. */
  maxCommandsBeforeAuth: z.number().int().positive().default(30),
});

const submissionTimeouts = z.strictObject({
  /** Waiting for the next command (RFC 5321 §4.5.3.2.7 server timeout: at least 5 minutes). */
  commandSeconds: z.number().int().min(1).default(300),
  /** Waiting for more message data. */
  dataSeconds: z.number().int().min(1).default(180),
  /** From connect to a successful AUTH, however active the client is (a deadline, not an idle timer). */
  preAuthSeconds: z.number().int().min(1).default(60),
});

const senderPolicy = z.strictObject({
  /**
   * any: every envelope sender is accepted from an authenticated user.
   * own: the sender must be the user's own address: user@domain for each of domains, the
   * user name itself when it is an address, or one listed for it in addresses.
   */
  mode: z.enum(['any', 'own']).default('own'),
  /** Domains whose local part equals the login name belong to that user. */
  domains: z.array(z.string().min(1)).default([]),
  /** Extra addresses per login name (the mapping hook), e.g. { alice: [sales@example.org] }. */
  addresses: z.record(z.string(), z.array(z.string().min(3))).default({}),
});

const submissionAuth = z.strictObject({
  /** A successful check is remembered this long (keyed by a hash, never the password). */
  cacheSeconds: z.number().int().min(0).default(60),
  /** Cached successes at most. */
  cacheEntries: z.number().int().positive().default(10_000),
  /** Each failed attempt from one client address delays the next answer by this much more. */
  failureDelayMs: z.number().int().min(0).default(1000),
  /** Upper bound of that delay. */
  maxFailureDelayMs: z.number().int().min(0).default(10_000),
});

const submissionRelay = z.strictObject({
  /** Idle connections to the upstream MTA kept for reuse. */
  poolSize: z.number().int().min(0).default(8),
  /** Name the gateway gives in EHLO to the upstream MTA; defaults to hostname. */
  heloName: z.string().optional(),
  /** How long one upstream reply may take before the transaction is given up (4xx to the client). */
  replyTimeoutSeconds: z.number().int().positive().default(120),
});

/**
 * An IMAP server other than the gateway's own upstream whose URLAUTH URLs BURL may resolve
 * (RFC 4468 §3.3): the gateway logs in there with submit credentials over TLS and uses
 * URLFETCH. Only hosts listed here are ever contacted for a BURL (no SSRF).
 */
const burlHost = z.strictObject({
  /** The host as IMAP URLs name it (compared case-insensitively). */
  host: z.string().min(1),
  /** Where to connect, when not the URL's host name itself (an address or another name). */
  address: z.string().min(1).optional(),
  /** Defaults to 993 for implicit TLS and 143 for STARTTLS. A URL naming another port is refused. */
  port: port.optional(),
  /** RFC 4468 §3.3 asks for STARTTLS; implicit TLS (RFC 8314) is as good. Never plaintext. */
  tls: z.enum(['starttls', 'implicit']).default('implicit'),
  tlsOptions: upstreamTls.prefault({}),
  /** Submit credentials at that server (RFC 4468 §3.3 suggests "submit"; no default password). */
  user: z.string().min(1).default('submit'),
  password: z.string().min(1),
  connectTimeoutMs: z.number().int().positive().default(10_000),
});

const burl = z.strictObject({
  allowedHosts: z.array(burlHost).default([]),
});

const futureRelease = z.strictObject({
  /** Offer FUTURERELEASE (RFC 4865). When false it is not advertised and HOLDFOR/HOLDUNTIL get 555 5.5.4. */
  enabled: z.boolean().default(true),
  /** The longest hold accepted (max-future-release-interval); 7 days by default. */
  maxHoldSeconds: z.number().int().min(0).max(999_999_999).default(7 * 24 * 3600),
  /** Held messages at most (552 5.7.17 beyond it, RFC 4865 §6). */
  maxMessages: z.number().int().positive().default(100_000),
  /** Octets of held messages at most (552 5.7.17 beyond it). */
  maxBytes: z.number().int().positive().default(10 * 1024 ** 3),
  /** Messages relayed at once when many are due together. */
  concurrency: z.number().int().positive().max(64).default(8),
  /** First retry after a temporary failure; each later one waits twice as long, up to retryMaxSeconds. */
  retryInitialSeconds: z.number().int().positive().default(60),
  retryMaxSeconds: z.number().int().positive().default(3600),
  /** After this long past its release time a message that still cannot be delivered fails (with a DSN). */
  giveUpSeconds: z.number().int().positive().default(5 * 24 * 3600),
});

const sideConnections = z.strictObject({
  /** Idle side connections kept, over all users. */
  maxIdle: z.number().int().min(0).default(50),
  /** An idle side connection is logged out after this many seconds. */
  idleSeconds: z.number().int().positive().default(60),
  /** Side connections open at most; more fetches wait for one. */
  maxOpen: z.number().int().positive().default(100),
});

const urlauth = z.strictObject({
  /**
   * Upstream IMAP accounts that act as message submission servers: their sessions may
   * URLFETCH "submit+user" URLs (RFC 4467 §3). The gateway's own BURL needs none.
   */
  submitUsers: z.array(z.string().min(1)).default([]),
  /** Whether "anonymous" URLs may be fetched (they are issued either way). */
  allowAnonymousFetch: z.boolean().default(false),
  /** URLs fetched by one URLFETCH command at most. */
  maxUrlsPerCommand: z.number().int().positive().default(100),
});

const catenate = z.strictObject({
  /** Parts (TEXT literals and URLs) in one CATENATE at most. */
  maxParts: z.number().int().positive().default(100),
  /** A message being assembled moves from memory to a file under dataDir past this size. */
  spillBytes: z.number().int().min(0).default(1024 * 1024),
});

const qresync = z.strictObject({
  /** Offer CONDSTORE, QRESYNC and ENABLE (RFC 7162, RFC 5161) when the upstream lacks them. */
  enabled: z.boolean().default(true),
  /**
   * Expunged UIDs remembered per mailbox for VANISHED (EARLIER); older ones are dropped
   * and a client resynchronizing from before them gets every missing UID of its set.
   */
  vanishedKept: z.number().int().min(0).default(10000),
});

const warmUpstream = z.strictObject({
  /**
   * Seconds an upstream connection stays logged in after its client vanished without
   * LOGOUT, for a reconnect with the same credentials to reuse; 0 turns it off.
   */
  seconds: z.number().int().min(0).max(3600).default(30),
  /** Such connections kept at most, over all users. */
  max: z.number().int().min(0).default(100),
});

const master = z.strictObject({
  user: z.string().min(1),
  password: z.string().min(1),
});

export const configSchema = z.strictObject({
  /** The name clients use to reach the gateway; URLAUTH URLs must carry it. */
  hostname: z.string().min(1).default('localhost'),
  /** Keys, spool and the generated certificate live here. */
  dataDir: z.string().min(1).default('./data'),
  tls: z
    .strictObject({
      /** PEM certificate chain; with key. Omitted: a self-signed one is generated into dataDir. */
      cert: z.string().optional(),
      key: z.string().optional(),
    })
    .prefault({})
    .refine((t) => (t.cert === undefined) === (t.key === undefined), {
      message: 'cert and key must be given together',
    }),
  imap: z
    .strictObject({
      listen: z.array(listener).min(1).default([
        { host: '127.0.0.1', port: 1143, tls: 'starttls', allowPlaintextAuth: false },
        { host: '127.0.0.1', port: 1993, tls: 'implicit', allowPlaintextAuth: false },
      ]),
      upstream: upstream(143).prefault({}),
      master: master.optional(),
      sideConnections: sideConnections.prefault({}),
      urlauth: urlauth.prefault({}),
      catenate: catenate.prefault({}),
      qresync: qresync.prefault({}),
      warmUpstream: warmUpstream.prefault({}),
      limits: imapLimits.prefault({}),
      timeouts: imapTimeouts.prefault({}),
      /** Re-probe the upstream's capabilities this often (they are also re-read when a connection shows them changed). */
      capabilityRefreshSeconds: z.number().int().positive().default(300),
    })
    .prefault({}),
  submission: z
    .strictObject({
      listen: z.array(listener).default([]),
      upstream: upstream(25).prefault({}),
      limits: submissionLimits.prefault({}),
      timeouts: submissionTimeouts.prefault({}),
      senderPolicy: senderPolicy.prefault({}),
      auth: submissionAuth.prefault({}),
      relay: submissionRelay.prefault({}),
      burl: burl.prefault({}),
      futureRelease: futureRelease.prefault({}),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** Set enabled: false to serve no metrics or health endpoint. */
      enabled: z.boolean().default(true),
      host: host.default('127.0.0.1'),
      port: port.default(9464),
    })
    .prefault({}),
  store: z
    .strictObject({
      /** sqlite: one embedded file (one host); postgres: a PostgreSQL server shared by several instances. */
      kind: z.enum(['sqlite', 'postgres']).default('sqlite'),
      /** SQLite file; relative paths are under dataDir. */
      path: z.string().default('gateway.sqlite'),
      /** PostgreSQL connection URI (libpq style, postgres://user@host:port/db); required with kind postgres. */
      url: z.string().min(1).optional(),
      /** A file holding the PostgreSQL password (first line), so it is in neither the URL nor the config; never logged. */
      passwordFile: z.string().min(1).optional(),
      /** Connections in the PostgreSQL pool of each process. */
      poolSize: z.number().int().min(1).max(1000).default(10),
      /**
       * With postgres: the longest a connect or one statement may take (ms); past it the
       * command that needed the store gets NO [UNAVAILABLE] / 451 4.3.0.
       */
      timeoutMs: z.number().int().min(100).max(600_000).default(10_000),
      /**
       * PostgreSQL: how long a FUTURERELEASE release claim holds without renewal (the
       * claimant renews it every third of this); a dead instance's claims pass to the others after it.
       */
      releaseLeaseSeconds: z.number().int().min(3).max(3600).default(60),
    })
    .prefault({})
    // zod cannot make one key required by another's value: postgres needs a URL, sqlite ignores it.
    .superRefine((store, ctx) => {
      if (store.kind === 'postgres' && store.url === undefined) {
        ctx.addIssue({ code: 'custom', path: ['url'], message: 'required when store.kind is postgres' });
      }
      if (store.kind === 'postgres' && store.url !== undefined && !/^postgres(ql)?:\/\//.test(store.url)) {
        ctx.addIssue({ code: 'custom', path: ['url'], message: 'must be a postgres:// or postgresql:// URI' });
      }
    }),
  /**
   * Worker processes on this host (src/cluster/): 1 is one process and no cluster; N > 1
   * forks N workers sharing the listeners; "auto" is one per CPU (os.availableParallelism).
   */
  workers: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1),
  shutdown: z
    .strictObject({
      /**
       * SIGTERM: seconds that commands and mail transactions under way get to finish
       * before the remaining sessions get BYE / 421. Idle sessions are closed at once.
       */
      graceSeconds: z.number().int().min(0).max(3600).default(25),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
export type ListenerConfig = z.infer<typeof listener>;
export type UpstreamConfig = Config['imap']['upstream'];
export type TlsMode = z.infer<typeof tlsMode>;
export type BurlHostConfig = z.infer<typeof burlHost>;
