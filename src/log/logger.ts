/**
 * One pino logger for the process. Sessions take a child with their session id so every
 * line can be correlated; passwords, tokens and message content are never logged.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger = pino({ level: 'info', base: { svc: 'lemonade-gateway' } });

export function configureLogger(level: string): Logger {
  root = pino({ level, base: { svc: 'lemonade-gateway' } });
  return root;
}

export function logger(): Logger {
  return root;
}
