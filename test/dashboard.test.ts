/**
 * grafana/lemonade-gateway.json against a live /metrics scrape of the built gateway:
 * every metric a panel queries is one the gateway exports, every exported metric is on
 * some panel, and the dashboard imports anywhere (Prometheus data source as a variable).
 * A metric added to src/metrics/metrics.ts without a panel fails here by name.
 */
import t from 'tap';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { freePort, repoRoot, startGateway, type RunningGateway } from './helpers/gateway.js';

interface Target {
  refId?: string;
  expr?: string;
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  uid?: string;
  title?: string;
  panels?: Panel[];
  templating?: { list?: Array<{ name?: string; type?: string; query?: string }> };
}

const dashboard = JSON.parse(readFileSync(path.join(repoRoot, 'grafana', 'lemonade-gateway.json'), 'utf8')) as Dashboard;

/** Panels, with those inside collapsed rows. */
function allPanels(d: Dashboard): Panel[] {
  return (d.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Metric names an expression refers to: lemonade_ identifiers not followed by "(" (functions) . */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(lemonade_[a-zA-Z0-9_:]+)\b(?!\s*\()/g)].map((m) => m[1]!);
}

let gw: RunningGateway;
let exposition: string;
t.before(async () => {
  // Nothing listens there: the gateway starts anyway (a failed upstream probe is not fatal).
  const port = await freePort();
  // smtpPort makes the helper configure submission listeners, so nothing about the submission front is left out.
  gw = await startGateway({ imapHost: '127.0.0.1', imapPort: port, smtpPort: port });
  exposition = await gw.metrics();
});
t.teardown(() => gw?.stop());

/** Metric families in the scrape with their type, and the sample names each one exports. */
function families(text: string): Map<string, { type: string; samples: Set<string>; labels: Set<string> }> {
  const out = new Map<string, { type: string; samples: Set<string>; labels: Set<string> }>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const samples = type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : type === 'summary' ? [name!, `${name}_sum`, `${name}_count`] : [name!];
    out.set(name!, { type: type!, samples: new Set(samples), labels: new Set() });
  }
  for (const [, sample, labels] of text.matchAll(/^([a-zA-Z_:][\w:]*)\{([^}]*)\} /gm)) {
    for (const f of out.values()) {
      if (!f.samples.has(sample!)) continue;
      for (const [, label] of labels!.matchAll(/(\w+)="/g)) f.labels.add(label!);
    }
  }
  return out;
}

t.test('the dashboard imports anywhere: Prometheus as a variable, unique ids, every target has a query', async (t) => {
  t.equal(dashboard.uid, 'lemonade-gateway');
  const variable = dashboard.templating?.list?.find((v) => v.type === 'datasource');
  t.match(variable, { name: 'datasource', query: 'prometheus' }, 'a data source variable of type prometheus');
  const panels = allPanels(dashboard).filter((p) => p.type !== 'row');
  t.ok(panels.length >= 20, `${panels.length} panels`);
  const ids = panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    t.same(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `"${p.title}" uses the data source variable`);
    t.ok((p.targets ?? []).length > 0, `"${p.title}" has targets`);
    for (const target of p.targets ?? []) t.ok(target.expr && metricNames(target.expr).length > 0, `"${p.title}" ${target.refId}: a query of lemonade_ metrics`);
  }
});

t.test('every metric a panel queries is exported, and every exported metric is on a panel', async (t) => {
  const exported = families(exposition);
  t.ok(exported.size >= 40, `${exported.size} metric families in the live scrape`);
  const sampleToFamily = new Map<string, string>();
  for (const [name, f] of exported) for (const s of f.samples) sampleToFamily.set(s, name);

  const shown = new Set<string>();
  for (const p of allPanels(dashboard)) {
    for (const target of p.targets ?? []) {
      const expr = target.expr ?? '';
      const families_ = new Set<string>();
      for (const name of metricNames(expr)) {
        const family = sampleToFamily.get(name);
        if (family === undefined) {
          t.fail(`panel "${p.title}" queries ${name}, which the gateway does not export`);
          continue;
        }
        shown.add(family);
        families_.add(family);
      }
      // Labels grouped by must exist on a metric of the query (when the scrape shows its series).
      for (const [, list] of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
        for (const label of list!.split(',').map((l) => l.trim()).filter((l) => l !== '' && l !== 'le')) {
          const withSeries = [...families_].map((f) => exported.get(f)!).filter((f) => f.labels.size > 0);
          if (withSeries.length === 0) continue;
          t.ok(withSeries.some((f) => f.labels.has(label)), `panel "${p.title}": label ${label} exists on ${[...families_].join(', ')}`);
        }
      }
    }
  }
  const missing = [...exported.keys()].filter((name) => !shown.has(name));
  t.same(missing, [], 'exported metrics that no panel shows (add a panel to grafana/lemonade-gateway.json)');
  for (const name of missing) t.fail(`${name} is exported but on no panel`);
});
