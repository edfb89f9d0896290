/**
 * A worker's side of the cluster (primary.ts): it says when its listeners are up, and
 * answers the primary's metrics requests with its own registry (the primary aggregates).
 */
import { registry } from '../metrics/metrics.js';
import type { Gateway } from '../gateway.js';
import { isMessage, type MetricsAnswer, type MetricsRequest, type ReadyMessage } from './messages.js';

export function serveAsWorker(gateway: Gateway): void {
  process.on('message', (msg: unknown) => {
    if (!isMessage<MetricsRequest>(msg, 'lemonade:metrics?')) return;
    registry.getMetricsAsJSON().then(
      (metrics) => {
        const answer: MetricsAnswer = { type: 'lemonade:metrics', id: msg.id, metrics };
        process.send?.(answer);
      },
      // Unanswered: the primary leaves this worker out of the scrape after its timeout.
      () => undefined,
    );
  });
  const ready: ReadyMessage = { type: 'lemonade:ready', imap: gateway.imap.addresses, submission: gateway.submission.addresses };
  process.send?.(ready);
}
