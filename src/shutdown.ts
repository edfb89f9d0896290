/**
 * Graceful stop (SIGTERM): stop accepting, let work under way finish within
 * shutdown.graceSeconds, then end what is left.
 *
 *  1. Every listener stops accepting at once (the metrics endpoint stays, /healthz says 503).
 *  2. Every session is told to drain: idle ones (an IMAP IDLE counts as idle) get
 *     `* BYE` / `421` at once; one with a command or mail transaction under way gets its
 *     answer first (a message in DATA is relayed and gets the MTA's 250) and then ends.
 *  3. When the grace time runs out (less a reserve for the steps below), the sessions
 *     still open get `* BYE` / `421`; a message whose content had not ended is dropped
 *     upstream unacknowledged, so the client still has it and sends it again: nothing
 *     the gateway acknowledged is lost.
 *  4. The FUTURERELEASE scheduler starts no release pass after the signal; one under
 *     way gets until the end of the grace time (an interrupted release is completed or
 *     redone after the restart: the spool is crash safe). The relay pool closes, then
 *     gateway.ts closes the store, which holds the spool index.
 */
import type { Config } from './config/schema.js';
import type { Logger } from './log/logger.js';
import type { ImapServer } from './imap/server.js';
import { SHUTDOWN_TEXT } from './imap/session.js';
import type { SubmissionServer } from './smtp/server.js';
import { shutdownReply } from './smtp/session.js';

/** How long the last BYE / 421 gets to reach the client before its connection is cut. */
const LINGER_MS = 1000;
/**
 * Kept back from the grace time for the cut-off BYEs and closing the pool and the store,
 * so the whole stop fits in graceSeconds, the time a supervisor is told to wait before SIGKILL.
 */
const RESERVE_MS = LINGER_MS + 1000;
const POLL_MS = 50;

export interface Draining {
  config: Config;
  log: Logger;
  imap: ImapServer;
  submission: SubmissionServer;
}

export async function shutDown({ config, log, imap, submission }: Draining): Promise<void> {
  const started = Date.now();
  imap.stopAccepting();
  submission.stopAccepting();
  // Held messages due during the drain wait for the restart (RFC 4865 forbids only early release).
  void submission.futureRelease.stop();
  const graceMs = config.shutdown.graceSeconds * 1000;
  log.info({ imapSessions: imap.sessions.size, submissionSessions: submission.sessions.size, graceSeconds: config.shutdown.graceSeconds }, 'draining sessions');
  // Copies: a drained session leaves its set at once.
  for (const s of [...imap.sessions]) s.drain();
  for (const s of [...submission.sessions]) s.drain();
  const deadline = Date.now() + Math.max(0, graceMs - RESERVE_MS);
  while (imap.sessions.size + submission.sessions.size > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const left = imap.sessions.size + submission.sessions.size;
  if (left > 0) log.warn({ imapSessions: imap.sessions.size, submissionSessions: submission.sessions.size }, 'grace time over: closing the sessions left');
  for (const s of [...imap.sessions]) s.bye(SHUTDOWN_TEXT);
  for (const s of [...submission.sessions]) s.close(shutdownReply(config.hostname));
  const releaseWaitMs = Math.max(0, started + graceMs - RESERVE_MS / 2 - Date.now());
  await Promise.all([imap.close(LINGER_MS), submission.close(LINGER_MS, releaseWaitMs)]);
}
