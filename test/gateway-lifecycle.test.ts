/**
 * TLS material and process lifecycle: a self-signed certificate is generated once and
 * reused; SIGHUP swaps in a new certificate for new sessions while an open session keeps
 * working, and applies the reloadable parts of the config file; /metrics and /healthz
 * answer; SIGTERM drains the sessions within the grace time and exits 0.
 */
import t from 'tap';
import tls from 'node:tls';
import net from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadOrCreateCertificate } from '../src/tls/certificates.js';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { parse as parseYaml, stringify } from 'yaml';

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

let stack: LegacyStack;
t.before(async () => {
  stack = await startLegacyStack();
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

t.test('SIGHUP re-reads the config file: reloadable keys apply, the others wait for a restart', async (t) => {
  const certDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-certs-'));
  const other = loadOrCreateCertificate({ dataDir: certDir, hostname: 'other.example.org' });
  writeFileSync(path.join(certDir, 'other-cert.pem'), other.cert);
  writeFileSync(path.join(certDir, 'other-key.pem'), other.key);
  const gw = await startGateway(stack, { config: { submission: { senderPolicy: { mode: 'own', domains: [] } } } });
  try {
    const before = await fingerprint(gw.imapsPort);
    const open = await RawSmtp.connect(gw.submissionsPort, { tls: true });
    await open.reply();
    await open.command('EHLO client.example.org');
    t.equal((await open.command(`AUTH PLAIN ${b64('\0alice\0password')}`)).code, 235);
    t.match((await open.command('MAIL FROM:<alice@example.org>')).text, /^553 5\.7\.1/, 'not alice\'s address under the first policy');

    const config = parseYaml(readFileSync(gw.configFile, 'utf8')) as { submission: Record<string, unknown>; imap: Record<string, unknown> } & Record<string, unknown>;
    config.tls = { cert: path.join(certDir, 'other-cert.pem'), key: path.join(certDir, 'other-key.pem') };
    config.submission.senderPolicy = { mode: 'own', domains: ['example.org'] };
    config.log = { level: 'info' };
    config.imap.limits = { maxBadCommands: 3 };
    writeFileSync(gw.configFile, stringify(config));
    const logged = gw.logs.length;
    process.kill(gw.pid, 'SIGHUP');
    let reloaded: { applied: string[]; restartNeeded: string[] } | undefined;
    for (let i = 0; i < 100 && reloaded === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const line = gw.logs.slice(logged).find((l) => l.includes('configuration reloaded'));
      if (line) reloaded = JSON.parse(line) as typeof reloaded;
    }
    t.ok(reloaded, 'the reload is logged');
    t.same([...reloaded!.applied].sort(), ['log.level', 'submission.senderPolicy.domains', 'tls.cert', 'tls.key'], 'what was applied');
    t.same(reloaded!.restartNeeded, ['imap.limits.maxBadCommands'], 'what waits for a restart');

    t.not(await fingerprint(gw.imapsPort), before, 'the certificate at the new path is in use');
    t.equal((await open.command('MAIL FROM:<alice@example.org>')).code, 250, 'the new sender policy applies to an open session');
    await open.command('QUIT');
    // log.level info: a new session's debug lines are gone.
    const sinceReload = gw.logs.length;
    const imap = await RawImap.connect(gw.imapsPort, { tls: true });
    await imap.line();
    // maxBadCommands stays 20 until a restart: three bad commands do not end the session.
    for (const tag of ['x1', 'x2', 'x3']) t.match((await imap.command(tag, 'FROBNICATE')).at(-1), new RegExp(`^${tag} BAD`));
    t.match((await imap.command('n', 'NOOP')).at(-1), /^n OK/, 'maxBadCommands was not changed in the running gateway');
    imap.close();
    await new Promise((r) => setTimeout(r, 300));
    t.notOk(gw.logs.slice(sinceReload).some((l) => l.includes('"level":20')), 'no debug lines after log.level: info');

    // An invalid file: logged, nothing changes, the running gateway carries on.
    writeFileSync(gw.configFile, 'imap: { limits: { maxBadCommands: "many" } }\n');
    process.kill(gw.pid, 'SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    t.match(gw.logs.join('\n'), /"issues":\["imap\.limits\.maxBadCommands: [^\n]*"configuration reload failed/);
    const after = await RawImap.connect(gw.imapsPort, { tls: true });
    t.match(await after.line(), /^\* OK/, 'still serving');
    after.close();
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

async function imapLogin(port: number, user: string): Promise<RawImap> {
  const c = await RawImap.connect(port, { tls: true });
  await c.line();
  const done = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(done.at(-1) ?? '')) throw new Error(`login failed: ${done.join(' | ')}`);
  return c;
}

/** A submission session of alice's with MAIL, RCPT and DATA given: the next bytes are content. */
async function inData(port: number, to: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { tls: true });
  await c.reply();
  await c.command('EHLO client.example.org');
  const steps = [`AUTH PLAIN ${b64('\0alice\0password')}`, 'MAIL FROM:<alice@example.org>', `RCPT TO:<${to}>`, 'DATA'];
  for (const [i, line] of steps.entries()) {
    const r = await c.command(line);
    if (r.code !== [235, 250, 250, 354][i]) throw new Error(`${line}: ${r.text}`);
  }
  return c;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

t.test('SIGTERM: idle sessions get BYE / 421 at once, work under way finishes, the rest is cut at the grace time, exit 0', async (t) => {
  const graceSeconds = 8;
  const gw = await startGateway(stack, { config: { shutdown: { graceSeconds }, submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } } } });
  const marker = `drain-${Date.now()}`;
  const bobBefore = await stack.messageCount('bob');
  const carolBefore = await stack.messageCount('carol');

  // An APPEND whose literal is half sent: a command under way.
  const appended = Buffer.from(`From: alice@example.org\r\nTo: alice@example.org\r\nSubject: ${marker} append\r\n\r\n${'appended line\r\n'.repeat(500)}`);
  const appender = await imapLogin(gw.imapsPort, 'alice');
  appender.write(`a APPEND INBOX {${appended.length}}\r\n`);
  t.match(await appender.line(), /^\+/);
  appender.write(appended.subarray(0, 1000));
  // An IDLE, and a session doing nothing.
  const idler = await imapLogin(gw.imapsPort, 'bob');
  await idler.command('s', 'SELECT INBOX');
  idler.write('i IDLE\r\n');
  t.match(await idler.line(), /^\+/);
  const quiet = await imapLogin(gw.imapsPort, 'carol');
  // A message in DATA that will be finished, one that never is, and an idle submission session.
  const finishing = await inData(gw.submissionsPort, 'bob@example.org');
  finishing.write(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ${marker} finished\r\n\r\nfirst half\r\n`);
  const stalled = await inData(gw.submissionsPort, 'carol@example.org');
  stalled.write(`From: alice@example.org\r\nTo: carol@example.org\r\nSubject: ${marker} stalled\r\n\r\nnever ends\r\n`);
  const idleSmtp = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await idleSmtp.reply();
  await idleSmtp.command('EHLO client.example.org');

  const started = Date.now();
  process.kill(gw.pid, 'SIGTERM');

  // Idle sessions end at once (well before the grace time).
  t.match((await idler.closedAfter(graceSeconds * 1000 - 1000)).join('\n'), /^\* BYE Server shutting down$/m, 'IDLE gets BYE');
  t.match((await quiet.closedAfter(graceSeconds * 1000 - 1000)).join('\n'), /^\* BYE Server shutting down$/m, 'idle IMAP session gets BYE');
  const last = await idleSmtp.reply(graceSeconds * 1000 - 1000);
  t.match(last?.text, /^421 4\.3\.2 /, 'idle submission session gets 421');
  t.equal(await refused(gw.imapsPort), true, 'no new IMAP connections');
  t.equal(await refused(gw.submissionsPort), true, 'no new submission connections');
  const health = await fetch(`http://127.0.0.1:${gw.metricsPort}/healthz`);
  t.equal(health.status, 503, '/healthz says unavailable while draining');
  t.match(await health.json(), { draining: true });

  // Work under way finishes, then the session ends.
  appender.write(Buffer.concat([appended.subarray(1000), Buffer.from('\r\n')]));
  const appendDone = await appender.until('a', 20_000);
  t.match(appendDone.at(-1), /^a OK/, 'the APPEND under way completes');
  t.match((await appender.closedAfter()).join('\n'), /^\* BYE Server shutting down$/m, 'then BYE');
  finishing.write('second half\r\n.\r\n');
  const relayed = await finishing.reply(20_000);
  t.match(relayed?.text, /^250 /, 'the message in DATA is relayed and acknowledged');
  t.match((await finishing.reply())?.text, /^421 4\.3\.2 /, 'then 421');

  // The stalled message is cut at the grace time with a 4xx: the client still has it.
  const cut = await stalled.reply((graceSeconds + 20) * 1000);
  t.match(cut?.text, /^421 4\.3\.2 /, 'a message still in DATA at the grace time gets 421');
  const code = await gw.exited;
  const elapsed = Date.now() - started;
  t.equal(code, 0, 'exit code 0');
  // The stop is planned to fit in the grace time; the margin is for a loaded machine.
  t.ok(elapsed < (graceSeconds + 5) * 1000, `exited ${elapsed} ms after SIGTERM (grace ${graceSeconds} s)`);
  t.ok(elapsed >= (graceSeconds - 3) * 1000, 'the stalled session was given (most of) the grace time');
  t.match(gw.logs.join('\n'), /draining sessions[\s\S]*grace time over[\s\S]*"stopped"/);

  // Nothing acknowledged was lost; nothing unacknowledged was delivered.
  t.equal(await stack.waitForMessageCount('bob', 'INBOX', bobBefore + 1), bobBefore + 1, 'the relayed message reached bob');
  t.match((await stack.newestMessage('bob', bobBefore + 1)).toString(), new RegExp(`${marker} finished[\\s\\S]*first half\\r\\nsecond half`));
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(await stack.messageCount('carol'), carolBefore, 'the cut message was not delivered');
  const alice = await stack.newestMessage('alice', 1);
  t.match(alice.toString(), new RegExp(`${marker} append`), 'the appended message is in alice\'s INBOX');
  for (const c of [appender, idler, quiet, finishing, stalled, idleSmtp]) c.close();
});
