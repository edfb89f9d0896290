/** The metrics listener: Prometheus text on /metrics, health on /healthz. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registry } from './metrics.js';

export interface HealthReport {
  ok: boolean;
  detail?: Record<string, unknown>;
}

export interface MetricsServer {
  /** The bound port (the real one when 0 was asked for). */
  port: number;
  close(): Promise<void>;
}

const ROUTES = new Set(['/metrics', '/healthz']);

export async function startMetricsServer(opts: {
  host: string;
  port: number;
  health: () => HealthReport;
  /** The exposition to serve; this process's registry by default (the cluster's primary aggregates its workers'). */
  metrics?: () => Promise<string>;
}): Promise<MetricsServer> {
  const metrics = opts.metrics ?? (() => registry.metrics());
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (!ROUTES.has(url)) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    if (url === '/metrics') {
      metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${err.message}\n`),
      );
      return;
    }
    let report: HealthReport;
    try {
      report = opts.health();
    } catch (err) {
      // A health check that cannot even run is itself a failed check.
      report = { ok: false, detail: { error: (err as Error).message } };
    }
    const status = report.ok ? 'ok' : 'unavailable';
    // status last: a detail key of the same name must not make a failing check read "ok".
    const body = JSON.stringify({ ...report.detail, status });
    res
      .writeHead(report.ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      .end(body);
  });
  // Scrapes come every few seconds; idle keep-alive sockets need not linger past that.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      // An accept failure (EMFILE under load) is transient and must not take the gateway down with it.
      server.on('error', () => undefined);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
