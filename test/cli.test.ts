/** The command line: --check-config validates (naming the bad key), --version, usage errors. */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './helpers/gateway.js';

const run = promisify(execFile);
const main = path.join(repoRoot, 'dist', 'main.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-cli-'));

async function check(yaml: string): Promise<{ code: number; out: string }> {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, yaml);
  try {
    const r = await run(process.execPath, [main, '--check-config', file]);
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

t.test('--check-config accepts the example config', async (t) => {
  const r = await run(process.execPath, [main, '--check-config', path.join(repoRoot, 'config.example.yaml')]);
  t.match(r.stdout, /configuration OK/);
});

t.test('--check-config rejects a wrong type and names the key', async (t) => {
  const r = await check('imap:\n  upstream:\n    port: "one forty three"\n');
  t.not(r.code, 0);
  t.match(r.out, /imap\.upstream\.port/);
});

t.test('--check-config rejects an unknown key and a bad enum, naming them', async (t) => {
  const r = await check('imap:\n  listen:\n    - { port: 1143, tls: sometimes }\n  upstrem: {}\n');
  t.not(r.code, 0);
  t.match(r.out, /imap\.listen\[0\]\.tls/);
  t.match(r.out, /upstrem/);
});

t.test('usage error without arguments', async (t) => {
  const r = await run(process.execPath, [main]).catch((e: { code: number; stderr: string }) => e);
  t.equal((r as { code: number }).code, 64);
});

t.test('--check-config prints the self-signed certificate it generated, and its fingerprint', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-cli-data-'));
  const r = await check(`hostname: mail.example.org\ndataDir: ${dataDir}\n`);
  t.equal(r.code, 0, r.out);
  const file = path.join(dataDir, 'tls', 'selfsigned-cert.pem');
  t.match(r.out, `TLS certificate: ${file} (self-signed`, 'the generated file');
  const expected = new X509Certificate(readFileSync(file)).fingerprint256;
  t.match(r.out, `SHA-256 fingerprint: ${expected}`, 'its SHA-256 fingerprint, as openssl prints it');
  const again = await check(`hostname: mail.example.org\ndataDir: ${dataDir}\n`);
  t.match(again.out, expected, 'the same certificate the next time (reused, not regenerated)');
});

t.test('--check-config warns about a sender policy that refuses every MAIL FROM', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-cli-data-'));
  const base = `dataDir: ${dataDir}\nsubmission:\n  listen: [{ port: 1587, tls: starttls }]\n  upstream: { host: 127.0.0.1, port: 25 }\n`;
  const bare = await check(base);
  t.equal(bare.code, 0, 'still valid');
  t.match(bare.out, /warning: submission\.senderPolicy\.mode is "own" but lists no domains and no addresses/);
  const withDomains = await check(`${base}  senderPolicy: { domains: [example.org] }\n`);
  t.notMatch(withDomains.out, /warning/, 'no warning once domains are set');
  const any = await check(`${base}  senderPolicy: { mode: any }\n`);
  t.notMatch(any.out, /warning/, 'nor with mode any');
});
