/**
 * The config loader's error messages, path resolution, and config.example.yaml kept in
 * step with the schema (every option present, values equal to the defaults).
 */
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { ConfigError, loadConfig, parseConfig } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { schemaEntries } from './helpers/config-keys.js';
import { applyReload, changedKeys } from '../src/config/reload.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const examplePath = path.join(repoRoot, 'config.example.yaml');
const exampleText = readFileSync(examplePath, 'utf8');

/** Every leaf of VALUE as a dotted key path; list entries are walked, an empty list is a leaf. */
function leafPaths(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) {
    if (value.length === 0) return [prefix];
    return value.flatMap((v, i) => leafPaths(v, `${prefix}[${i}]`));
  }
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => leafPaths(v, prefix === '' ? k : `${prefix}.${k}`));
  }
  return [prefix];
}

function valueAtPath(root: unknown, dotted: string): unknown {
  let v: unknown = root;
  for (const part of dotted.split(/\.|(?=\[)/)) {
    if (v === null || typeof v !== 'object') return undefined;
    const m = /^\[(\d+)\]$/.exec(part);
    v = (v as Record<string, unknown>)[m ? Number(m[1]) : part];
  }
  return v;
}

/** Every option key in the schema, optional ones included (list entries as `[]`). */
function schemaKeyPaths(): string[] {
  return schemaEntries()
    .filter((e) => e.type !== 'list')
    .map((e) => e.key);
}

function issuesOf(text: string): string[] {
  try {
    parseConfig(text, 'test.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

t.test('config.example.yaml is valid and equals the schema defaults', async (t) => {
  const parsed = parseConfig(exampleText, examplePath);
  // Options the example deliberately sets to something other than the default: none today.
  // Add the key path here (and say so in the example's comment) when that changes.
  const deliberate = new Set<string>();
  const defaults = configSchema.parse({});
  for (const leaf of leafPaths(defaults)) {
    if (deliberate.has(leaf)) continue;
    t.same(valueAtPath(parsed, leaf), valueAtPath(defaults, leaf), `${leaf} equals the default`);
  }
  t.same(parsed, defaults);
});

t.test('every defaulted option is written out in config.example.yaml', async (t) => {
  const raw: unknown = parseYaml(exampleText);
  const leaves = leafPaths(configSchema.parse({}));
  t.ok(leaves.length > 25, 'the walk found the options');
  for (const leaf of leaves) t.not(valueAtPath(raw, leaf), undefined, `${leaf} is in config.example.yaml`);
});

t.test('every option without a default is at least shown (commented) in config.example.yaml', async (t) => {
  const raw: unknown = parseYaml(exampleText);
  const comments = exampleText
    .split('\n')
    .filter((l) => /^\s*#/.test(l))
    .join('\n');
  const all = schemaKeyPaths();
  t.ok(all.includes('imap.master.user') && all.includes('tls.cert'), 'the schema walk sees optional options');
  for (const key of all) {
    const present = !key.includes('[]') && valueAtPath(raw, key) !== undefined;
    const name = key.split(/\.|\[\]\.?/).filter(Boolean).at(-1) ?? key;
    t.ok(present || new RegExp(`\\b${name}:`).test(comments) || new RegExp(`\\b${name}:`).test(exampleText), `${key} is documented`);
  }
});

t.test('a wrong type names the full key path and the value', async (t) => {
  const issues = issuesOf('imap:\n  upstream:\n    port: "x"\n');
  t.same(issues, ['imap.upstream.port: expected a number, got string "x"']);
});

t.test('an unknown key is reported as an unknown option', async (t) => {
  t.same(issuesOf('foo: 1\n'), ['foo: unknown option']);
  t.same(issuesOf('imap:\n  upstrem: {}\n'), ['imap.upstrem: unknown option']);
  // Even with no value (YAML null) an unknown key must not slip through.
  t.same(issuesOf('imap:\n  upstrem:\n'), ['imap.upstrem: unknown option']);
});

t.test('a bad enum lists the allowed values', async (t) => {
  const issues = issuesOf('imap:\n  listen:\n    - { port: 1143, tls: sometimes }\n');
  t.equal(issues.length, 1);
  t.match(issues[0], /^imap\.listen\[0\]\.tls: must be one of none, starttls, implicit/);
});

t.test('all problems are reported at once, one line each', async (t) => {
  const issues = issuesOf(
    [
      'hostname: ""',
      'imap:',
      '  listen:',
      '    - { tls: implicit }',
      '  upstream: { port: 70000, connectTimeoutMs: 0 }',
      '  limits: { maxLineLength: 1.5 }',
      '  timeouts: { idleSeconds: 60 }',
      'submission:',
      '  listen: {}',
      'metrics: { enabled: "yes" }',
      'log: { level: loud }',
      'bogus: true',
      '',
    ].join('\n'),
  );
  t.same(new Set(issues), new Set([
    'hostname: must not be empty',
    'imap.listen[0].port: required option is missing (expected a number)',
    'imap.upstream.port: must be at most 65535',
    'imap.upstream.connectTimeoutMs: must be greater than 0',
    'imap.limits.maxLineLength: expected an integer, got number 1.5',
    'imap.timeouts.idleSeconds: must be at least 1800',
    'submission.listen: expected a list, got a mapping',
    'metrics.enabled: expected a boolean (true or false), got string "yes"',
    'log.level: must be one of fatal, error, warn, info, debug, trace, silent, got string "loud"',
    'bogus: unknown option',
  ]));
});

t.test('the cross-field rules name the key', async (t) => {
  t.same(issuesOf('tls:\n  cert: a.pem\n'), ['tls: cert and key must be given together']);
  t.same(issuesOf('imap:\n  listen: []\n'), ['imap.listen: must have at least 1 entries']);
  t.same(issuesOf('imap:\n  master: { user: gw }\n'), ['imap.master.password: required option is missing (expected a string)']);
});

t.test('a key left empty means the default, but only where the option may be left out', async (t) => {
  const c = parseConfig('tls:\n  # nothing here\nimap:\n  upstream:\n    port:\n', 't.yaml');
  t.equal(c.imap.upstream.port, 143);
  t.same(c.tls, {});
  t.same(issuesOf('imap:\n  listen:\n    - { host: 127.0.0.1, port: }\n'), ['imap.listen[0].port: expected a number, got null']);
  t.same(parseConfig('', 'empty.yaml'), configSchema.parse({}), 'an empty file is all defaults');
  t.same(issuesOf('- a\n- b\n'), ['(top level): expected a mapping, got a list']);
});

t.test('YAML syntax errors carry line and column', async (t) => {
  const [bad] = issuesOf('imap:\n  upstream:\n    port: [143\n  limits: {}\n');
  t.match(bad, /^test\.yaml:\d+:\d+: YAML syntax error: /);
  const unclosed = issuesOf('hostname: "mail.example\n');
  t.match(unclosed[0], /^test\.yaml:2:1: YAML syntax error: .*quote/);
  const dup = issuesOf('hostname: a\nhostname: b\n');
  t.match(issuesOf('imap: { upstream: { port: 1, "port": 2 } }\n')[0], /key "port" appears twice/);
  t.equal(dup.length, 1);
  t.match(dup[0], /^test\.yaml:2:1: YAML syntax error: .*key hostname appears twice in the same mapping$/);
  t.match(issuesOf('a: 1\n---\nb: 2\n')[0], /single YAML document/);
  t.match(issuesOf('\thostname: x\n')[0], /^test\.yaml:1:1: YAML syntax error: .*[Tt]ab/);
});

t.test('listeners that would take the same address are refused', async (t) => {
  const same = issuesOf(
    'imap:\n  listen:\n    - { port: 1143 }\n    - { port: 1143, tls: implicit }\nsubmission:\n  listen:\n    - { port: 1143 }\n',
  );
  t.same(same, [
    'imap.listen[1].port: 127.0.0.1:1143 collides with imap.listen[0].port (127.0.0.1:1143)',
    'submission.listen[0].port: 127.0.0.1:1143 collides with imap.listen[0].port (127.0.0.1:1143)',
  ]);
  const metrics = issuesOf('imap:\n  listen:\n    - { port: 9464 }\n');
  t.same(metrics, ['metrics.port: 127.0.0.1:9464 collides with imap.listen[0].port (127.0.0.1:9464)']);
  const wildcard = issuesOf('imap:\n  listen:\n    - { host: 0.0.0.0, port: 1143 }\nsubmission:\n  listen:\n    - { host: 10.0.0.1, port: 1143 }\n');
  t.equal(wildcard.length, 1);
  t.match(wildcard[0], /^submission\.listen\[0\]\.port: /);
  // Different hosts, ephemeral ports, and a disabled metrics endpoint do not collide.
  t.doesNotThrow(() =>
    parseConfig(
      'imap:\n  listen:\n    - { host: 127.0.0.1, port: 1143 }\n    - { host: 127.0.0.2, port: 1143 }\n    - { port: 0 }\n    - { port: 0 }\n    - { port: 9464 }\nmetrics: { enabled: false }\n',
      't.yaml',
    ),
  );
});

t.test('loadConfig resolves paths against the config file directory', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-config-'));
  const file = path.join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    [
      'dataDir: state',
      'tls: { cert: certs/fullchain.pem, key: /abs/key.pem }',
      'imap:',
      '  upstream: { tlsOptions: { ca: ca.pem } }',
      'submission:',
      '  upstream: { tlsOptions: { ca: ../mta-ca.pem } }',
      '',
    ].join('\n'),
  );
  const c = loadConfig(file);
  t.equal(c.dataDir, path.join(dir, 'state'));
  t.equal(c.tls.cert, path.join(dir, 'certs', 'fullchain.pem'));
  t.equal(c.tls.key, '/abs/key.pem');
  t.equal(c.imap.upstream.tlsOptions.ca, path.join(dir, 'ca.pem'));
  t.equal(c.submission.upstream.tlsOptions.ca, path.join(path.dirname(dir), 'mta-ca.pem'));

  // The default dataDir is relative too, so it lands next to the config file.
  writeFileSync(file, 'hostname: mail.example.org\n');
  t.equal(loadConfig(file).dataDir, path.join(dir, 'data'));

  const missing = path.join(dir, 'nope.yaml');
  t.throws(() => loadConfig(missing), { name: 'ConfigError', message: new RegExp(`cannot read ${missing}`) });
});

t.test('SIGHUP reload: the reloadable subtrees are swapped in place, other changes only reported', async (t) => {
  const running = configSchema.parse({});
  const submission = running.submission;
  const next = configSchema.parse({
    log: { level: 'debug' },
    shutdown: { graceSeconds: 3 },
    imap: { limits: { maxSessions: 5 }, urlauth: { allowAnonymousFetch: true } },
    submission: { senderPolicy: { mode: 'any' }, limits: { maxRecipients: 7 } },
  });
  const outcome = applyReload(running, next);
  t.same(outcome.applied.sort(), ['imap.urlauth.allowAnonymousFetch', 'log.level', 'shutdown.graceSeconds', 'submission.senderPolicy.mode']);
  t.same(outcome.restartNeeded.sort(), ['imap.limits.maxSessions', 'submission.limits.maxRecipients']);
  t.equal(running.log.level, 'debug');
  t.equal(running.shutdown.graceSeconds, 3);
  t.equal(running.imap.urlauth.allowAnonymousFetch, true);
  t.equal(running.submission.senderPolicy.mode, 'any');
  t.equal(running.submission, submission, 'sessions holding the config see the change: the same objects, their parts replaced');
  t.equal(running.imap.limits.maxSessions, 10_000, 'not applied');
  t.equal(running.submission.limits.maxRecipients, 100, 'not applied');
  t.same(applyReload(running, configSchema.parse({ log: { level: 'debug' }, shutdown: { graceSeconds: 3 }, imap: { urlauth: { allowAnonymousFetch: true } }, submission: { senderPolicy: { mode: 'any' } } })).applied, [], 'nothing changed: nothing to apply');
  t.same(changedKeys({ a: [1, 2], b: { c: 1 } }, { a: [1, 3], b: { c: 1, d: 2 } }).sort(), ['a', 'b.d'], 'lists compare whole');
});
