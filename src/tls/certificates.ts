/**
 * The gateway's TLS identity: the operator's certificate, or a self-signed one generated
 * once into dataDir and reused. The SecureContext is swapped on reload (SIGHUP) so new
 * handshakes — on the implicit-TLS listener and after STARTTLS — get the new certificate
 * while established sessions keep theirs.
 */
import { createPrivateKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
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
  /** Where the certificate is on disk (the operator's file, or the generated one under dataDir). */
  file: string;
}

/** What an operator needs to pin the certificate in a client (mbsync CertificateFile, ...). */
export interface CertificateIdentity {
  file: string;
  /** SHA-256 of the DER certificate, colon-separated hex (the form openssl x509 -fingerprint -sha256 prints). */
  sha256: string;
  selfSigned: boolean;
  validTo: string;
}

export function certificateIdentity(material: CertificateMaterial): CertificateIdentity {
  const x509 = new X509Certificate(material.cert);
  return { file: material.file, sha256: x509.fingerprint256, selfSigned: material.generated, validTo: x509.validTo };
}

const DAY_MS = 24 * 3600 * 1000;
const MIN_VERSION: tls.SecureVersion = 'TLSv1.2';

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function parseCert(pem: string, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new Error(`TLS certificate ${file} is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
}

function parseKey(pem: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new Error(`TLS key ${file} is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
}

/** A positive, minimally encoded DER INTEGER of 128 random bits (RFC 5280 §4.1.2.2 wants ≤ 20 octets, unpredictable). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  if (bytes[0] === 0) bytes[0] = 1;
  return bytes.toString('hex');
}

function generateSelfSigned(hostname: string): { cert: string; key: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  const now = Date.now();
  // Back-dated so a client whose clock runs a little behind still accepts it.
  cert.validity.notBefore = new Date(now - DAY_MS);
  cert.validity.notAfter = new Date(now + 365 * DAY_MS);
  const subject = [
    { name: 'commonName', value: hostname },
    { name: 'organizationName', value: 'lemonade-gateway self-signed' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  // SAN type 2 is dNSName, 7 is iPAddress (RFC 5280 §4.2.1.6); clients check these, not the CN.
  const altNames: Array<{ type: number; value?: string; ip?: string }> = [
    { type: 2, value: 'localhost' },
    { type: 7, ip: '127.0.0.1' },
    { type: 7, ip: '::1' },
  ];
  const covered = (n: string) => altNames.some((a) => (a.value ?? a.ip) === n);
  if (!covered(hostname)) altNames.unshift(isIP(hostname) ? { type: 7, ip: hostname } : { type: 2, value: hostname });
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

/**
 * The stored self-signed pair, if it is still fit to use: both files parse, belong together
 * (a crash between the two writes could leave them apart), are valid for at least another
 * day, and name the configured hostname (it may have changed since generation).
 */
function reusableSelfSigned(certFile: string, keyFile: string, hostname: string): { cert: string; key: string } | undefined {
  if (!existsSync(certFile) || !existsSync(keyFile)) return undefined;
  try {
    const cert = readFileSync(certFile, 'utf8');
    const key = readFileSync(keyFile, 'utf8');
    const x509 = new X509Certificate(cert);
    if (!x509.checkPrivateKey(createPrivateKey(key))) return undefined;
    if (new Date(x509.validTo).getTime() < Date.now() + DAY_MS) return undefined;
    if (x509.checkHost(hostname) === undefined && x509.checkIP(hostname) === undefined) return undefined;
    return { cert, key };
  } catch {
    // Unreadable or corrupt: it is our own file, so replacing it is the repair.
    return undefined;
  }
}

/** Write-then-rename, so a reader (or a crash) never sees half a PEM file. */
function writeAtomically(file: string, data: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, file);
}

export function loadOrCreateCertificate(src: CertificateSource): CertificateMaterial {
  if (src.cert !== undefined || src.key !== undefined) {
    if (src.cert === undefined || src.key === undefined) throw new Error('TLS cert and key must be given together');
    const cert = readPem(src.cert, 'certificate');
    const key = readPem(src.key, 'key');
    if (!parseCert(cert, src.cert).checkPrivateKey(parseKey(key, src.key))) {
      throw new Error(`TLS key ${src.key} does not belong to the certificate ${src.cert}`);
    }
    return { cert, key, generated: false, file: src.cert };
  }
  const dir = path.join(src.dataDir, 'tls');
  const certFile = path.join(dir, 'selfsigned-cert.pem');
  const keyFile = path.join(dir, 'selfsigned-key.pem');
  const stored = reusableSelfSigned(certFile, keyFile, src.hostname);
  if (stored) return { ...stored, generated: true, file: certFile };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const made = generateSelfSigned(src.hostname);
  writeAtomically(keyFile, made.key, 0o600);
  writeAtomically(certFile, made.cert, 0o644);
  return { ...made, generated: true, file: certFile };
}

function contextOptions(material: CertificateMaterial): tls.SecureContextOptions {
  return { cert: material.cert, key: material.key, minVersion: MIN_VERSION };
}

export class TlsContextHolder {
  private current: tls.SecureContext;
  private material: CertificateMaterial;
  private readonly servers = new Set<tls.Server>();

  constructor(private source: CertificateSource) {
    this.material = loadOrCreateCertificate(source);
    this.current = tls.createSecureContext(contextOptions(this.material));
  }

  /** The context for new handshakes; pass it to `new tls.TLSSocket(..., { secureContext })` at STARTTLS. */
  context(): tls.SecureContext {
    return this.current;
  }

  /**
   * Registers an implicit-TLS server so reload() updates its default context: clients that
   * send no SNI (every client connecting by IP address) never reach SNICallback.
   */
  track(server: tls.Server): void {
    this.servers.add(server);
    server.once('close', () => this.servers.delete(server));
  }

  /**
   * Re-reads the certificate and key (a generated one is reused unless it needs renewing).
   * On any error the old context stays in use and the error is thrown. Established
   * connections keep the context they were handshaken with. `files` are new paths from a
   * reloaded config; they are kept only when the reload succeeds.
   */
  reload(files?: Pick<CertificateSource, 'cert' | 'key'>): void {
    const source = files ? { ...this.source, cert: files.cert, key: files.key } : this.source;
    const material = loadOrCreateCertificate(source);
    const options = contextOptions(material);
    // Built before anything is swapped: a bad pair throws here and changes nothing.
    const context = tls.createSecureContext(options);
    for (const server of this.servers) server.setSecureContext(options);
    this.source = source;
    this.material = material;
    this.current = context;
  }

  /** The certificate in use (PEM). */
  certificate(): string {
    return this.material.cert;
  }

  /** Path and fingerprint of the certificate in use, for the log and --check-config. */
  identity(): CertificateIdentity {
    return certificateIdentity(this.material);
  }

  /** Options for tls.createServer that follow reloads (together with track()). */
  serverOptions(): tls.TlsOptions {
    return {
      ...contextOptions(this.material),
      SNICallback: (_name, cb) => cb(null, this.current),
    };
  }
}
