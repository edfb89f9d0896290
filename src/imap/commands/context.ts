/**
 * The small interface the per-command handlers see of a session, so each intercepted
 * command lives in its own file without reaching into the session's internals.
 */
import type { Config, ListenerConfig } from '../../config/schema.js';
import type { Logger } from '../../log/logger.js';
import type { ParsedLine } from '../protocol/parser.js';
import type { SessionState } from './registry.js';
import type { UpstreamConnection } from '../upstream.js';
import type { Lemonade } from '../../lemonade/services.js';
import type { CondstoreSession } from '../../lemonade/qresync/session-state.js';
import type { Credentials } from '../credentials.js';

export interface CommandContext {
  readonly config: Config;
  readonly listener: ListenerConfig;
  readonly log: Logger;
  readonly state: SessionState;
  readonly tlsActive: boolean;
  /** Plain-text credentials may be accepted on this connection (RFC 3501 §6.2.3). */
  readonly plaintextAllowed: boolean;
  /** The capability list to show the client now. */
  capabilities(): string[];
  /** Writes an untagged response line (text without "* " and CRLF). */
  untagged(text: string): void;
  /** Writes the tagged completion; the session counts it in metrics. */
  tagged(tag: string, status: 'OK' | 'NO' | 'BAD', text: string, code?: string): void;
  /** Asks the client for one more line (AUTHENTICATE, RFC 3501 §6.2.2) and resolves with it. */
  continuation(text: string): Promise<string>;
  /** Opens the upstream connection and logs in; resolves when the session is authenticated. */
  login(tag: string, creds: Credentials): Promise<void>;
  /** Negotiates TLS after the tagged OK (RFC 3501 §6.2.1). */
  startTls(tag: string): Promise<void>;
  /** Answers a LOGOUT handled locally: untagged BYE, tagged OK (RFC 3501 §6.1.3), then closes the client connection. */
  logout(tag: string): void;
  readonly upstream: UpstreamConnection | undefined;
  /** The user the session is logged in as (the authorization identity), once authenticated. */
  readonly authenticatedUser: string | undefined;
  /** The shared emulation services (store, side connections, URL authority). */
  readonly lemonade: Lemonade;
  /**
   * Writes response bytes as they are (a streamed literal); false when the client's
   * buffer is full: await clientDrained() before writing more. Only while the handler
   * runs, when nothing else writes to the client.
   */
  writeData(data: Buffer): boolean;
  clientDrained(): Promise<void>;
  /**
   * A command of the gateway's own on the client's upstream connection (nothing else is
   * in flight then); untagged lines capture() claims are not shown to the client.
   */
  internalCommand(text: string | Buffer, capture?: (line: string, raw: Buffer) => boolean): Promise<{ status: string; line: string }>;
  /** The session's CONDSTORE/QRESYNC state (RFC 7162 emulation). */
  readonly condstore: CondstoreSession;
  /** A SELECT/EXAMINE the gateway ran succeeded (true) or failed, closing any mailbox (RFC 3501 §6.3.1). */
  setSelected(selected: boolean): void;
  /** Ends the session with an untagged BYE (RFC 3501 §7.1.5). */
  bye(text: string): void;
  /** Fires when the session ends, however it ends: waits for shared resources (locks) give up. */
  readonly ended: AbortSignal;
}

export type CommandHandler = (ctx: CommandContext, line: ParsedLine) => Promise<void> | void;

/** How an emulation changes what comes back for one relayed command (imap/relay.ts). */
export interface ResponseRewrite {
  /** Rewrites the tagged completion before the client sees it (APPENDUID, RFC 4315). */
  rewriteTagged?: (line: Buffer) => Promise<Buffer>;
  /** Called if the command never completes (the session or upstream ends first): gives back what it holds. */
  abandon?: () => void;
}

/**
 * An emulation's hook on a command the session relays (commands/index.ts relayHooks):
 * given the command's first line, what to rewrite in its answer, if anything. A promise
 * holds the command back until it settles (APPENDUID first waits for the mailbox's lock).
 */
export type RelayHook = (ctx: CommandContext, firstLine: Buffer) => ResponseRewrite | undefined | Promise<ResponseRewrite | undefined>;
