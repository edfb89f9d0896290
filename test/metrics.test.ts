/** The metrics endpoint: Prometheus exposition, health, and the bounded command label. */
import t from 'tap';
import {
  commandLabel,
  imapCommandsTotal,
  registry,
  tlsReloads,
} from '../src/metrics/metrics.js';
import { startMetricsServer } from '../src/metrics/server.js';

t.test('/metrics, /healthz and everything else', async (t) => {
  let health: { ok: boolean; detail?: Record<string, unknown> } = { ok: true, detail: { imapSessions: 3 } };
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, health: () => health });
  t.teardown(() => server.close());
  t.ok(server.port > 0, 'port 0 gives the bound port');
  const base = `http://127.0.0.1:${server.port}`;

  imapCommandsTotal.inc({ command: commandLabel('uid fetch'), result: 'ok' });
  const res = await fetch(`${base}/metrics`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), registry.contentType);
  const text = await res.text();
  for (const [name, type] of [
    ['lemonade_sessions_open', 'gauge'],
    ['lemonade_sessions_total', 'counter'],
    ['lemonade_imap_commands_total', 'counter'],
    ['lemonade_imap_command_duration_seconds', 'histogram'],
    ['lemonade_upstream_connect_failures_total', 'counter'],
    ['lemonade_upstream_connections_open', 'gauge'],
    ['lemonade_bytes_total', 'counter'],
    ['lemonade_imap_auth_total', 'counter'],
    ['lemonade_imap_malformed_commands_total', 'counter'],
    ['lemonade_tls_reloads_total', 'counter'],
    ['lemonade_process_cpu_seconds_total', 'counter'],
    ['lemonade_nodejs_heap_size_used_bytes', 'gauge'],
  ] as const) {
    t.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has HELP`);
    t.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`);
  }
  t.match(text, /^lemonade_imap_commands_total\{command="UID FETCH",result="ok"\} 1$/m);
  // Bounded series exist at zero before anything happens, so alerts on rate() work from the start.
  t.match(text, /^lemonade_tls_reloads_total\{result="error"\} 0$/m);
  t.match(text, /^lemonade_upstream_connect_failures_total\{protocol="imap",reason="refused"\} 0$/m);
  t.match(text, /^lemonade_sessions_open\{protocol="submission"\} 0$/m);
  tlsReloads.inc({ result: 'ok' });
  t.match(await (await fetch(`${base}/metrics?x=1`)).text(), /^lemonade_tls_reloads_total\{result="ok"\} 1$/m);
  // Every metric name follows the conventions.
  const declared = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)];
  t.ok(declared.length >= 20, 'the exposition declares the metrics');
  for (const [, name, type] of declared) {
    t.match(name, /^lemonade_[a-z0-9_]+$/, `${name} is prefixed`);
    if (type === 'counter') t.match(name, /_total$/, `${name} ends in _total`);
    else t.notMatch(name, /_total$/, `${name} is a ${type}: no _total`);
    // Base units: time in seconds, sizes in bytes (never _ms, _milliseconds, _kb ...).
    t.notMatch(name, /_(ms|milliseconds|minutes|hours|kb|kib|mb|mib|octets)(_|$)/, `${name} is in base units`);
  }
  // Bounded labels only: nothing a client names (user, mailbox, address, host, tag) is a label.
  const labels = new Set([...text.matchAll(/\{([^}]*)\}/g)].flatMap((m) => [...m[1]!.matchAll(/(\w+)="/g)].map((l) => l[1]!)));
  for (const forbidden of ['user', 'username', 'login', 'mailbox', 'folder', 'address', 'sender', 'recipient', 'host', 'tag', 'url']) {
    t.notOk(labels.has(forbidden), `no ${forbidden} label`);
  }

  const ok = await fetch(`${base}/healthz`);
  t.equal(ok.status, 200);
  t.match(ok.headers.get('content-type'), /application\/json/);
  t.same(await ok.json(), { status: 'ok', imapSessions: 3 });

  health = { ok: false, detail: { upstream: 'unreachable', status: 'ok' } };
  const down = await fetch(`${base}/healthz`);
  t.equal(down.status, 503);
  t.same(await down.json(), { status: 'unavailable', upstream: 'unreachable' }, 'detail cannot override status');

  health = { ok: true };
  t.same(await (await fetch(`${base}/healthz`)).json(), { status: 'ok' });

  const broken = await startMetricsServer({
    host: '127.0.0.1',
    port: 0,
    health: () => {
      throw new Error('probe crashed');
    },
  });
  t.teardown(() => broken.close());
  const crashed = await fetch(`http://127.0.0.1:${broken.port}/healthz`);
  t.equal(crashed.status, 503);
  t.same(await crashed.json(), { status: 'unavailable', error: 'probe crashed' });

  for (const p of ['/', '/metric', '/healthz/x', '/favicon.ico']) {
    const r = await fetch(`${base}${p}`);
    t.equal(r.status, 404, `${p} is 404`);
    await r.arrayBuffer();
  }
  const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET, HEAD');
  await post.arrayBuffer();
});

t.test('a port already in use is an error, not a hang', async (t) => {
  const first = await startMetricsServer({ host: '127.0.0.1', port: 0, health: () => ({ ok: true }) });
  t.teardown(() => first.close());
  await t.rejects(startMetricsServer({ host: '127.0.0.1', port: first.port, health: () => ({ ok: true }) }), {
    code: 'EADDRINUSE',
  });
});

t.test('close() returns even with a keep-alive connection open', async (t) => {
  const s = await startMetricsServer({ host: '127.0.0.1', port: 0, health: () => ({ ok: true }) });
  const r = await fetch(`http://127.0.0.1:${s.port}/healthz`, { headers: { connection: 'keep-alive' } });
  await r.json();
  await s.close();
  t.pass('closed');
});

t.test('commandLabel keeps the label bounded', async (t) => {
  t.equal(commandLabel('fetch'), 'FETCH');
  t.equal(commandLabel('Uid  Fetch'), 'UID FETCH');
  t.equal(commandLabel('UID MOVE'), 'UID MOVE');
  t.equal(commandLabel('GENURLAUTH'), 'GENURLAUTH');
  t.equal(commandLabel('urlfetch'), 'URLFETCH');
  t.equal(commandLabel('XYZZY'), 'OTHER');
  t.equal(commandLabel('UID XYZZY'), 'OTHER');
  t.equal(commandLabel('UID'), 'OTHER');
  t.equal(commandLabel(''), 'OTHER');
  t.equal(commandLabel('alice@example.org'), 'OTHER');
  t.equal(commandLabel('A'.repeat(10_000)), 'OTHER');
});
