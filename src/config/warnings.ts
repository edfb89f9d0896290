/**
 * Configurations that are valid but almost certainly not what the operator meant. Shown by
 * --check-config and logged at start (and after a reload), never fatal.
 */
import type { Config } from './schema.js';

export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  const policy = config.submission.senderPolicy;
  if (config.submission.listen.length > 0 && policy.mode === 'own' && policy.domains.length === 0 && Object.keys(policy.addresses).length === 0) {
    // senderAllowed(): with nothing listed only a login that is itself an address owns a sender.
    warnings.push(
      'submission.senderPolicy.mode is "own" but lists no domains and no addresses: only users who log in with a full ' +
        'address can send, as exactly that address; every other MAIL FROM gets 553 5.7.1. Set submission.senderPolicy.domains ' +
        '(e.g. [example.org]) or mode: any.',
    );
  }
  return warnings;
}
