/**
 * How a command the gateway answered itself is accounted for: the `command` debug line
 * with its outcome and duration (what an operator greps the log for), the commands
 * counter and the duration histogram. The session does the same inline for relayed and
 * handled commands (session.ts runHandler, completeInFlight); this is for answers given
 * outside those two paths, such as a refused CATENATE.
 */
import type { Logger } from '../../log/logger.js';
import { commandDuration, commandLabel, imapCommandsTotal } from '../../metrics/metrics.js';

export function commandFinished(log: Logger, name: string, status: 'OK' | 'NO' | 'BAD', started: bigint): void {
  const label = commandLabel(name);
  const result = status === 'OK' ? 'ok' : status === 'NO' ? 'no' : 'bad';
  const ns = Number(process.hrtime.bigint() - started);
  imapCommandsTotal.inc({ command: label, result });
  commandDuration.observe({ command: label }, ns / 1e9);
  log.debug({ command: label, result, ms: Math.round(ns / 1e6) }, 'command');
}
