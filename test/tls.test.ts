/**
 * Certificate loading and generation, and reload reaching new handshakes on both an
 * implicit-TLS server and a STARTTLS-style upgrade while established sessions keep theirs.
 */
import t from 'tap';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';
import { loadOrCreateCertificate, TlsContextHolder } from '../src/tls/certificates.js';

const tmp = (name: string) => mkdtempSync(path.join(os.tmpdir(), `lemonade-tls-${name}-`));
const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

/** Connects (no SNI unless SERVERNAME), returns the fingerprint the server presented and the socket. */
async function connect(port: number, servername?: string): Promise<{ fp: string; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername }, () =>
      resolve({ fp: socket.getPeerCertificate().fingerprint256, socket }),
    );
    socket.once('error', reject);
  });
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** An echo server that upgrades each plain connection the way the IMAP session does after STARTTLS. */
function starttlsServer(holder: TlsContextHolder): net.Server {
  return net.createServer((plain) => {
    plain.on('error', () => undefined);
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: holder.context() });
    secure.on('error', () => undefined);
    secure.pipe(secure);
  });
}

t.test('a self-signed certificate is generated once and reused', async (t) => {
  const dataDir = path.join(tmp('gen'), 'data');
  const first = loadOrCreateCertificate({ dataDir, hostname: 'mail.example.org' });
  t.equal(first.generated, true);
  const second = loadOrCreateCertificate({ dataDir, hostname: 'mail.example.org' });
  t.equal(second.generated, true);
  t.equal(second.cert, first.cert, 'same certificate on the second call');
  t.equal(second.key, first.key);
  t.equal(readFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), 'utf8'), first.cert);
  t.equal(statSync(path.join(dataDir, 'tls', 'selfsigned-key.pem')).mode & 0o777, 0o600, 'key is private');
  t.equal(statSync(path.join(dataDir, 'tls')).mode & 0o777, 0o700, 'tls directory is private');

  const x509 = new X509Certificate(first.cert);
  t.equal(x509.subjectAltName, 'DNS:mail.example.org, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
  t.ok(x509.checkHost('mail.example.org'));
  t.ok(x509.checkIP('::1'));
  const from = new Date(x509.validFrom).getTime();
  const to = new Date(x509.validTo).getTime();
  const day = 24 * 3600 * 1000;
  t.ok(Math.abs(Date.now() - day - from) < 60_000, 'back-dated one day');
  t.ok(Math.abs(Date.now() + 365 * day - to) < 60_000, 'valid for a year');
  t.match(x509.serialNumber, /^[0-7][0-9A-F]{31}$/, '128-bit positive serial');
  t.equal(x509.ca, false);

  // Another hostname than the stored certificate names: a new one for the new name.
  const renamed = loadOrCreateCertificate({ dataDir, hostname: 'imap.example.org' });
  t.not(renamed.cert, first.cert);
  t.ok(new X509Certificate(renamed.cert).checkHost('imap.example.org'));
});

t.test('an expired or damaged stored certificate is replaced', async (t) => {
  const dataDir = tmp('expired');
  const fresh = loadOrCreateCertificate({ dataDir, hostname: 'localhost' });
  // Re-sign the stored key into a certificate that expired yesterday.
  const key = forge.pki.privateKeyFromPem(fresh.key);
  const old = forge.pki.createCertificate();
  old.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  old.serialNumber = '01';
  old.validity.notBefore = new Date(Date.now() - 400 * 24 * 3600 * 1000);
  old.validity.notAfter = new Date(Date.now() - 24 * 3600 * 1000);
  old.setSubject([{ name: 'commonName', value: 'localhost' }]);
  old.setIssuer([{ name: 'commonName', value: 'localhost' }]);
  old.setExtensions([{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] }]);
  old.sign(key, forge.md.sha256.create());
  const expiredPem = forge.pki.certificateToPem(old);
  writeFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), expiredPem);
  const renewed = loadOrCreateCertificate({ dataDir, hostname: 'localhost' });
  t.not(renewed.cert, expiredPem);
  t.ok(new Date(new X509Certificate(renewed.cert).validTo).getTime() > Date.now());

  writeFileSync(path.join(dataDir, 'tls', 'selfsigned-cert.pem'), 'garbage');
  const repaired = loadOrCreateCertificate({ dataDir, hostname: 'localhost' });
  t.not(repaired.cert, renewed.cert);
  t.ok(new X509Certificate(repaired.cert).checkPrivateKey(createPrivateKey(repaired.key)), 'a matching pair');
});

t.test('an operator certificate is read as given, with errors naming the file', async (t) => {
  const a = loadOrCreateCertificate({ dataDir: tmp('opA'), hostname: 'localhost' });
  const b = loadOrCreateCertificate({ dataDir: tmp('opB'), hostname: 'localhost' });
  const dir = tmp('op');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  writeFileSync(cert, a.cert);
  writeFileSync(key, a.key);
  const loaded = loadOrCreateCertificate({ cert, key, dataDir: dir, hostname: 'localhost' });
  t.same(loaded, { cert: a.cert, key: a.key, generated: false, file: cert });

  const missing = path.join(dir, 'missing.pem');
  t.throws(() => loadOrCreateCertificate({ cert: missing, key, dataDir: dir, hostname: 'x' }), {
    message: new RegExp(`cannot read TLS certificate ${missing}`),
  });
  writeFileSync(path.join(dir, 'bad.pem'), 'not a certificate');
  t.throws(() => loadOrCreateCertificate({ cert: path.join(dir, 'bad.pem'), key, dataDir: dir, hostname: 'x' }), {
    message: /bad\.pem is not a PEM certificate/,
  });
  writeFileSync(path.join(dir, 'other-key.pem'), b.key);
  t.throws(() => loadOrCreateCertificate({ cert, key: path.join(dir, 'other-key.pem'), dataDir: dir, hostname: 'x' }), {
    message: /other-key\.pem does not belong to the certificate/,
  });
});

t.test('reload reaches new handshakes, keeps established ones, and refuses a bad pair', async (t) => {
  const a = loadOrCreateCertificate({ dataDir: tmp('A'), hostname: 'localhost' });
  const b = loadOrCreateCertificate({ dataDir: tmp('B'), hostname: 'localhost' });
  const dir = tmp('reload');
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  writeFileSync(certFile, a.cert);
  writeFileSync(keyFile, a.key);
  const holder = new TlsContextHolder({ cert: certFile, key: keyFile, dataDir: dir, hostname: 'localhost' });

  const implicit = tls.createServer(holder.serverOptions(), (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  holder.track(implicit);
  const upgrade = starttlsServer(holder);
  const implicitPort = await listen(implicit);
  const upgradePort = await listen(upgrade);
  const sockets: tls.TLSSocket[] = [];
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    implicit.close();
    upgrade.close();
  });
  const see = async (port: number, servername?: string) => {
    const c = await connect(port, servername);
    sockets.push(c.socket);
    return c;
  };

  const before = await see(implicitPort);
  t.equal(before.fp, fingerprint(a.cert), 'implicit TLS, no SNI: certificate A');
  t.equal((await see(implicitPort, 'localhost')).fp, fingerprint(a.cert), 'implicit TLS with SNI: A');
  t.equal((await see(upgradePort)).fp, fingerprint(a.cert), 'upgraded socket: A');
  t.equal(before.socket.getProtocol(), 'TLSv1.3');

  writeFileSync(certFile, b.cert);
  writeFileSync(keyFile, b.key);
  holder.reload();
  t.equal(holder.certificate(), b.cert);
  t.equal((await see(implicitPort)).fp, fingerprint(b.cert), 'implicit TLS, no SNI: B after reload');
  t.equal((await see(implicitPort, 'localhost')).fp, fingerprint(b.cert), 'implicit TLS with SNI: B after reload');
  t.equal((await see(upgradePort)).fp, fingerprint(b.cert), 'upgraded socket: B after reload');

  // The connection made before the reload still carries data on its original certificate.
  const echoed = await new Promise<string>((resolve) => {
    before.socket.once('data', (d: Buffer) => resolve(d.toString()));
    before.socket.write('still here');
  });
  t.equal(echoed, 'still here');
  t.equal(before.socket.getPeerCertificate().fingerprint256, fingerprint(a.cert));

  // A broken certificate file: reload throws, B stays in use.
  writeFileSync(certFile, 'garbage');
  t.throws(() => holder.reload(), { message: new RegExp(`${certFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`) });
  t.equal(holder.certificate(), b.cert);
  t.equal((await see(implicitPort)).fp, fingerprint(b.cert), 'still B after a failed reload');
  t.equal((await see(upgradePort)).fp, fingerprint(b.cert));

  // A key that does not match the certificate: the same.
  writeFileSync(certFile, a.cert);
  t.throws(() => holder.reload(), { message: /does not belong/ });
  t.equal((await see(implicitPort)).fp, fingerprint(b.cert), 'still B after a mismatched pair');
});

t.test('TLS older than 1.2 is refused', async (t) => {
  const holder = new TlsContextHolder({ dataDir: tmp('old'), hostname: 'localhost' });
  const material = loadOrCreateCertificate({ dataDir: tmp('old'), hostname: 'localhost' });
  const legacy = { ciphers: 'DEFAULT:@SECLEVEL=0', minVersion: 'TLSv1', maxVersion: 'TLSv1.1' } as const;
  const tryOld = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...legacy }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  const ours = tls.createServer(holder.serverOptions(), (s) => s.end());
  // The control: a server that allows TLS 1.1, to show this OpenSSL build can still speak it.
  const control = tls.createServer({ cert: material.cert, key: material.key, ...legacy }, (s) => s.end());
  for (const s of [ours, control]) s.on('tlsClientError', () => undefined);
  const oursPort = await listen(ours);
  const controlPort = await listen(control);
  t.teardown(() => {
    ours.close();
    control.close();
  });
  const controlWorks = await tryOld(controlPort);
  t.equal(await tryOld(oursPort), false, 'a TLS 1.1 client cannot connect', {
    skip: controlWorks ? false : 'this OpenSSL build refuses TLS 1.1 on both sides',
  });
});
