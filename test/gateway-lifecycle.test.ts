/**
 * TLS material and process lifecycle: a self-signed certificate is generated once and
 * reused; SIGHUP swaps in a new certificate for new sessions while an open session keeps
 * working; /metrics and /healthz answer; SIGTERM ends the process cleanly.
 */
import t from 'tap';
import tls from 'node:tls';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadOrCreateCertificate } from '../src/tls/certificates.js';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
});
t.teardown(async () => {
  await stack?.stop();
});

function fingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

t.test('a generated self-signed certificate is reused', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-cert-'));
  const a = loadOrCreateCertificate({ dataDir: dir, hostname: 'mail.example.org' });
  const b = loadOrCreateCertificate({ dataDir: dir, hostname: 'mail.example.org' });
  t.ok(a.generated);
  t.equal(a.cert, b.cert, 'same certificate the second time');
  const x509 = new (await import('node:crypto')).X509Certificate(a.cert);
  t.match(x509.subjectAltName ?? '', /DNS:mail\.example\.org/);
  t.match(x509.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  t.throws(() => loadOrCreateCertificate({ dataDir: dir, hostname: 'x', cert: path.join(dir, 'nope.pem'), key: path.join(dir, 'nope.pem') }), /nope\.pem/);
});

t.test('SIGHUP: new sessions get the new certificate, the open session keeps working', async (t) => {
  const certDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-certs-'));
  const one = loadOrCreateCertificate({ dataDir: path.join(certDir, 'one'), hostname: 'one.example.org' });
  const two = loadOrCreateCertificate({ dataDir: path.join(certDir, 'two'), hostname: 'two.example.org' });
  const certFile = path.join(certDir, 'cert.pem');
  const keyFile = path.join(certDir, 'key.pem');
  writeFileSync(certFile, one.cert);
  writeFileSync(keyFile, one.key);
  const gw = await startGateway(stack, { config: { tls: { cert: certFile, key: keyFile } } });
  try {
    const before = await fingerprint(gw.imapsPort);
    const open = await RawImap.connect(gw.imapsPort, { tls: true });
    await open.line();
    t.match((await open.command('a', 'LOGIN alice password')).at(-1), /^a OK/);
    writeFileSync(certFile, two.cert);
    writeFileSync(keyFile, two.key);
    process.kill(gw.pid, 'SIGHUP');
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await fingerprint(gw.imapsPort);
    }
    t.not(after, before, 'new TLS sessions see the new certificate');
    t.match((await open.command('b', 'SELECT INBOX')).at(-1), /^b OK/, 'the existing session keeps working');

    // STARTTLS after the reload uses the new certificate too.
    const plain = await RawImap.connect(gw.imapPort);
    await plain.line();
    await plain.command('s', 'STARTTLS');
    await plain.starttls();
    t.equal((plain.socket as tls.TLSSocket).getPeerCertificate().fingerprint256, after, 'STARTTLS uses the new certificate');
    plain.close();

    // A broken certificate on disk: the reload fails and the old one stays.
    writeFileSync(certFile, 'not a certificate');
    process.kill(gw.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    t.equal(await fingerprint(gw.imapsPort), after, 'a bad certificate does not replace the good one');
    t.match(gw.logs.join('\n'), /TLS reload failed/);
    open.close();
  } finally {
    await gw.stop();
  }
});

t.test('/metrics, /healthz and SIGTERM', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-data-'));
  const gw = await startGateway(stack, { config: { dataDir } });
  const health = await fetch(`http://127.0.0.1:${gw.metricsPort}/healthz`);
  t.equal(health.status, 200);
  t.match(await health.json(), { status: 'ok' });
  const metrics = await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`);
  t.match(metrics.headers.get('content-type'), /text\/plain/);
  const text = await metrics.text();
  for (const name of ['lemonade_sessions_open', 'lemonade_imap_commands_total', 'lemonade_imap_command_duration_seconds', 'lemonade_upstream_connect_failures_total', 'lemonade_bytes_total']) {
    t.match(text, new RegExp(`# TYPE ${name} `), name);
  }
  t.equal((await fetch(`http://127.0.0.1:${gw.metricsPort}/nope`)).status, 404);
  const firstCert = readFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), 'utf8');
  t.equal(await gw.stop('SIGTERM'), 0, 'exit code 0 on SIGTERM');
  // Restart on the same dataDir: the generated certificate is reused.
  copyFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), path.join(dataDir, 'before.pem'));
  const again = await startGateway(stack, { config: { dataDir } });
  t.equal(readFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), 'utf8'), firstCert, 'certificate reused across restarts');
  await again.stop();
});
