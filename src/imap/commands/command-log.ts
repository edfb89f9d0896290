/**
 * How a finished command is accounted for: the `command` debug line with its outcome and
 * duration (what an operator greps the log for), the commands counter and the duration
 * histogram. For relayed commands (session.ts completed), handled ones (runHandler) and
 * answers given outside those paths, such as a refused CATENATE.
 */
import type { Logger } from '../../log/logger.js';
import { commandDuration, commandLabel, imapCommandsTotal } from '../../metrics/metrics.js';

/**
 * status: the tagged status the client got (anything but OK and NO counts as bad), or
 * undefined when a handler ended without a tagged answer ("error").
 */
export function commandFinished(log: Logger, name: string, status: string | undefined, started: bigint): void {
  const label = commandLabel(name);
  const result = status === undefined ? 'error' : status === 'OK' ? 'ok' : status === 'NO' ? 'no' : 'bad';
  const ns = Number(process.hrtime.bigint() - started);
  imapCommandsTotal.inc({ command: label, result });
  commandDuration.observe({ command: label }, ns / 1e9);
  log.debug({ command: label, result, ms: Math.round(ns / 1e6) }, 'command');
}
