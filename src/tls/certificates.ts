/**
 * The gateway's TLS identity: the operator's certificate, or a self-signed one generated
 * once into dataDir and reused. The SecureContext is swapped on reload (SIGHUP) so new
 * handshakes — on the implicit-TLS listener and after STARTTLS — get the new certificate
 * while established sessions keep theirs.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes, X509Certificate } from 'node:crypto';
import path from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';

export interface CertificateSource {
  cert?: string;
  key?: string;
  dataDir: string;
  hostname: string;
}

export interface CertificateMaterial {
  cert: string;
  key: string;
  generated: boolean;
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function generateSelfSigned(hostname: string): { cert: string; key: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  // A positive serial: the top bit of the first byte clear.
  cert.serialNumber = `0${randomBytes(15).toString('hex')}`;
  const now = Date.now();
  cert.validity.notBefore = new Date(now - 24 * 3600 * 1000);
  cert.validity.notAfter = new Date(now + 365 * 24 * 3600 * 1000);
  const subject = [{ name: 'commonName', value: hostname }, { name: 'organizationName', value: 'lemonade-gateway self-signed' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [
        { type: 2, value: hostname },
        { type: 2, value: 'localhost' },
        { type: 7, ip: '127.0.0.1' },
        { type: 7, ip: '::1' },
      ],
    },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

function expired(certPem: string): boolean {
  return new Date(new X509Certificate(certPem).validTo).getTime() < Date.now();
}

export function loadOrCreateCertificate(src: CertificateSource): CertificateMaterial {
  if (src.cert !== undefined && src.key !== undefined) {
    return { cert: readPem(src.cert, 'certificate'), key: readPem(src.key, 'key'), generated: false };
  }
  const dir = path.join(src.dataDir, 'tls');
  const certFile = path.join(dir, 'selfsigned-cert.pem');
  const keyFile = path.join(dir, 'selfsigned-key.pem');
  if (existsSync(certFile) && existsSync(keyFile)) {
    const cert = readPem(certFile, 'certificate');
    if (!expired(cert)) return { cert, key: readPem(keyFile, 'key'), generated: true };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const made = generateSelfSigned(src.hostname);
  writeFileSync(keyFile, made.key, { mode: 0o600 });
  writeFileSync(certFile, made.cert, { mode: 0o644 });
  return { ...made, generated: true };
}

export class TlsContextHolder {
  private current: tls.SecureContext;
  private material: CertificateMaterial;
  private readonly servers = new Set<tls.Server>();

  constructor(private readonly source: CertificateSource) {
    this.material = loadOrCreateCertificate(source);
    this.current = TlsContextHolder.build(this.material);
  }

  private static build(material: CertificateMaterial): tls.SecureContext {
    // createSecureContext fails on a key that does not match the certificate.
    return tls.createSecureContext({ cert: material.cert, key: material.key, minVersion: 'TLSv1.2' });
  }

  context(): tls.SecureContext {
    return this.current;
  }

  /** An implicit-TLS server whose default context must follow reloads. */
  track(server: tls.Server): void {
    this.servers.add(server);
    server.once('close', () => this.servers.delete(server));
  }

  /** Re-reads the certificate; on any error the old one stays in use and the error is thrown. */
  reload(): void {
    const material = loadOrCreateCertificate(this.source);
    const context = TlsContextHolder.build(material);
    for (const server of this.servers) server.setSecureContext({ cert: material.cert, key: material.key, minVersion: 'TLSv1.2' });
    this.material = material;
    this.current = context;
  }

  /** The certificate in use (PEM), e.g. for logging its fingerprint. */
  certificate(): string {
    return this.material.cert;
  }

  /** Options for tls.createServer / new TLSSocket that follow reloads. */
  serverOptions(): tls.TlsOptions {
    return {
      minVersion: 'TLSv1.2',
      cert: this.material.cert,
      key: this.material.key,
      // Clients that send SNI get the current context even between reload and setSecureContext.
      SNICallback: (_name, cb) => cb(null, this.current),
    };
  }
}
