/**
 * What the cluster's primary and its workers say to each other over the IPC channel
 * node:cluster gives them. Every type starts with "lemonade:" so other users of the
 * channel (prom-client's own cluster messages) are told apart.
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';

/** Worker → primary: its listeners are up (what the primary logs as the gateway's addresses). */
export interface ReadyMessage {
  type: 'lemonade:ready';
  imap: unknown;
  submission: unknown;
}

/** Primary → worker: send your metrics (request id to match the answer). */
export interface MetricsRequest {
  type: 'lemonade:metrics?';
  id: number;
}

/** Worker → primary: the worker registry's metrics as JSON (prom-client getMetricsAsJSON). */
export interface MetricsAnswer {
  type: 'lemonade:metrics';
  id: number;
  metrics: Array<MetricObjectWithValues<MetricValue<string>>>;
}

export type FromWorker = ReadyMessage | MetricsAnswer;

export function isMessage<T extends { type: string }>(msg: unknown, type: T['type']): msg is T {
  return typeof msg === 'object' && msg !== null && (msg as { type?: unknown }).type === type;
}
