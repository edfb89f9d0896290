/** The metrics listener: Prometheus text on /metrics, liveness on /healthz. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registry } from './metrics.js';

export interface HealthReport {
  ok: boolean;
  detail?: Record<string, unknown>;
}

export async function startMetricsServer(opts: {
  host: string;
  port: number;
  health: () => HealthReport;
}): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/metrics') {
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(err.message),
      );
      return;
    }
    if (url === '/healthz') {
      const report = opts.health();
      res
        .writeHead(report.ok ? 200 : 503, { 'content-type': 'application/json' })
        .end(JSON.stringify({ status: report.ok ? 'ok' : 'unavailable', ...report.detail }));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
