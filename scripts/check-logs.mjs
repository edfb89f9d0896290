#!/usr/bin/env node
// Searches every gateway log of a test run for secrets: the legacy stack's passwords
// (plain, base64, and as SASL PLAIN responses), URLAUTH tokens (INTERNAL: 64 hex digits).
// scripts/test.sh points LEMONADE_LOG_DIR at a fresh directory, test/helpers/gateway.ts
// copies each gateway's output there, and this runs after the suite: a secret logged by
// any test's gateway fails the run. Exit 0 clean, 1 secrets found, 2 usage.
import { Buffer } from 'node:buffer';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: check-logs.mjs LOG_DIR\n');
  process.exit(2);
}
// The stack's credentials (scripts/legacy-stack.sh: USERS, USER_PASSWORD, MASTER_*).
const users = ['alice', 'bob', 'carol', 'submit'];
const passwords = ['password', 'masterpw'];
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const literal = new Map();
for (const p of passwords) {
  literal.set(p, "a stack password");
  literal.set(b64(p), "a stack password in base64");
  for (const u of users) {
    literal.set(b64(`\0${u}\0${p}`), `SASL PLAIN response of ${u}`);
    literal.set(b64(`${u}\0gateway\0${p}`), `SASL PLAIN response (authzid ${u})`);
  }
}
const patterns = [
  [/:internal:[0-9a-f]{8,}/i, 'URLAUTH token'],
  [/(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])/i, '64 hex digits (a URLAUTH token?)'],
];

let files = 0;
let lines = 0;
const found = [];
for (const name of readdirSync(dir).filter((n) => n.endsWith('.log'))) {
  files++;
  const text = readFileSync(path.join(dir, name), 'utf8');
  text.split('\n').forEach((line, i) => {
    if (line === '') return;
    lines++;
    for (const [secret, what] of literal) if (line.includes(secret)) found.push(`${name}:${i + 1}: ${what}`);
    for (const [re, what] of patterns) if (re.test(line)) found.push(`${name}:${i + 1}: ${what}`);
  });
}
if (found.length > 0) {
  process.stderr.write(`secrets in gateway logs (${found.length}):\n  ${found.slice(0, 50).join('\n  ')}\n`);
  process.exit(1);
}
process.stdout.write(`gateway logs: ${files} files, ${lines} lines, no password or token\n`);
