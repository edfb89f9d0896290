/**
 * The operator README kept in step with the code: the configuration reference table is
 * the schema (every option, its type and default, nothing else), the metrics table is
 * the registry (every metric the gateway defines, its type and labels), and the SIGHUP
 * paragraph names every reloadable option. A failure prints the row to paste.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { registry } from '../src/metrics/metrics.js';
import { RELOADABLE_KEYS } from '../src/config/reload.js';
import { repoRoot } from './helpers/gateway.js';
import { schemaEntries, type SchemaEntry } from './helpers/config-keys.js';

const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

/** Table rows (cells, trimmed) between <!-- NAME:start --> and <!-- NAME:end -->, header and rule dropped. */
function tableRows(name: string): string[][] {
  const m = new RegExp(`<!-- ${name}:start -->\\n([\\s\\S]*?)<!-- ${name}:end -->`).exec(readme);
  if (!m) throw new Error(`README.md has no <!-- ${name}:start --> ... <!-- ${name}:end --> section`);
  return m[1]!
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .slice(2)
    .map((l) =>
      l
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim()),
    );
}

function formatDefault(e: SchemaEntry): string {
  if (e.default === undefined) return e.required ? 'required' : '—';
  const v = e.default.value;
  if (typeof v === 'string') return v === '' ? '`""`' : `\`${v}\``;
  if (typeof v === 'number' || typeof v === 'boolean') return `\`${String(v)}\``;
  return `\`${JSON.stringify(v)}\``;
}

t.test('the configuration reference is the schema', async (t) => {
  const rows = new Map(tableRows('config-reference').map((r) => [r[0]!.replace(/^`|`$/g, ''), r]));
  const entries = schemaEntries();
  t.ok(entries.length > 80, `${entries.length} options in the schema`);
  for (const e of entries) {
    const expected = `| \`${e.key}\` | ${e.type} | ${formatDefault(e)} | (meaning) |`;
    const row = rows.get(e.key);
    if (row === undefined) {
      t.fail(`README lacks ${e.key}; add: ${expected}`);
      continue;
    }
    t.equal(row[1], e.type, `${e.key}: type`);
    t.equal(row[2], formatDefault(e), `${e.key}: default (${expected})`);
    t.ok((row[3] ?? '').length > 3, `${e.key}: says what it does`);
  }
  const known = new Set(entries.map((e) => e.key));
  for (const key of rows.keys()) t.ok(known.has(key), `README option ${key} is in the schema`);
});

t.test('the metrics list is the registry', async (t) => {
  const rows = new Map(tableRows('metrics').map((r) => [r[0]!.replace(/^`|`$/g, ''), r]));
  const metrics = (await registry.getMetricsAsJSON()).filter((m) => !/^lemonade_(process|nodejs)_/.test(m.name));
  t.ok(metrics.length >= 20, `${metrics.length} gateway metrics`);
  const labelsOf = new Map(registry.getMetricsAsArray().map((m) => [m.name, (m as unknown as { labelNames?: string[] }).labelNames ?? []]));
  for (const m of metrics) {
    const labels = labelsOf.get(m.name)!.map((l) => `\`${l}\``).join(', ') || '—';
    const row = rows.get(m.name);
    if (row === undefined) {
      t.fail(`README lacks ${m.name}; add: | \`${m.name}\` | ${m.type} | ${labels} | ${m.help} |`);
      continue;
    }
    t.equal(row[1], String(m.type), `${m.name}: type`);
    t.equal(row[2], labels, `${m.name}: labels`);
  }
  const defined = new Set(metrics.map((m) => m.name));
  for (const name of rows.keys()) t.ok(defined.has(name), `README metric ${name} exists`);
});

t.test('the SIGHUP paragraph names every reloadable option', async (t) => {
  const sighup = /^\| `SIGHUP` \|(.*)$/m.exec(readme)?.[1] ?? '';
  for (const key of RELOADABLE_KEYS) t.match(sighup, `\`${key}\``, `${key} is listed as reloadable`);
});
