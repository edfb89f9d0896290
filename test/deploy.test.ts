/**
 * The container files (no container engine runs here, so they are read, not run): the
 * Dockerfile's stages, sources, user, health check and volumes; the .dockerignore
 * allow-list; deploy/compose.yaml's build contexts, mounts, ports and their agreement with
 * the gateway config, Prometheus and Grafana provisioning; the legacy servers' configs
 * checked by Dovecot's and Postfix's own parsers.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { repoRoot } from './helpers/gateway.js';

interface Instruction {
  cmd: string;
  args: string;
  /** Index of the stage (FROM) it belongs to. */
  stage: number;
}

/** Instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): { instructions: Instruction[]; stages: Array<{ name?: string; from: string }> } {
  const logical = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const instructions: Instruction[] = [];
  const stages: Array<{ name?: string; from: string }> = [];
  for (const line of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const cmd = m[1]!.toUpperCase();
    if (cmd === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(m[2]!.trim());
      stages.push({ from: f![1]!, name: f![2] });
    }
    instructions.push({ cmd, args: m[2]!.trim(), stage: stages.length - 1 });
  }
  return { instructions, stages };
}

/** COPY sources (without --from) and destination. */
function copyArgs(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const rest = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

const deploy = path.join(repoRoot, 'deploy');
const gatewayConfigFile = path.join(deploy, 'gateway', 'config.yaml');
const gatewayConfig = loadConfig(gatewayConfigFile);
const healthPort = gatewayConfig.metrics.port;

t.test('Dockerfile: multi-stage, production dependencies only, non-root, health check, volumes', async (t) => {
  const { instructions, stages } = parseDockerfile(readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8'));
  const args = new Map<string, string>();
  for (const i of instructions.filter((i) => i.cmd === 'ARG')) {
    const [k, v] = i.args.split('=');
    if (v !== undefined) args.set(k!, v);
  }
  t.ok(stages.length >= 3, `${stages.length} stages`);
  const final = stages.length - 1;
  const inFinal = instructions.filter((i) => i.stage === final);
  const stageNames = stages.map((s) => s.name);
  for (const s of stages) {
    const base = s.from.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? `\${${k}}`);
    t.ok(stageNames.includes(base) || /^[\w./-]+:[\w.-]+$/.test(base), `FROM ${s.from}: an earlier stage or a tagged image (${base})`);
  }

  const ignore = readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  t.ok(ignore.includes('*'), '.dockerignore is an allow-list');
  for (const i of instructions.filter((i) => i.cmd === 'COPY')) {
    const { from, sources } = copyArgs(i.args);
    if (from !== undefined) {
      const at = stageNames.indexOf(from);
      t.ok(at >= 0 && at < i.stage, `COPY --from=${from}: an earlier stage`);
      continue;
    }
    for (const src of sources) {
      t.ok(existsSync(path.join(repoRoot, src)), `COPY ${src}: exists`);
      t.ok(ignore.includes(`!${src}`) || ignore.includes(`!${src}/`), `COPY ${src}: in the build context (.dockerignore)`);
    }
  }

  // Production dependencies only: node_modules come from a stage that ran npm ci --omit=dev.
  const modules = inFinal.map((i) => (i.cmd === 'COPY' ? copyArgs(i.args) : undefined)).filter((c) => c?.sources.some((s) => s.endsWith('node_modules')));
  t.equal(modules.length, 1, 'the runtime stage copies node_modules once');
  const depsStage = stageNames.indexOf(modules[0]!.from);
  t.ok(
    instructions.some((i) => i.stage === depsStage && i.cmd === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)),
    'from a stage that installs with --omit=dev',
  );
  t.notOk(inFinal.some((i) => i.cmd === 'RUN' && /npm (ci|install)/.test(i.args)), 'the runtime stage installs nothing itself');
  t.ok(inFinal.some((i) => i.cmd === 'COPY' && /dist/.test(i.args)), 'the built dist/ is copied');
  t.equal(JSON.parse(readFileSync(path.join(repoRoot, 'tsconfig.json'), 'utf8')).compilerOptions.outDir, 'dist', 'npm run build writes dist/');

  const user = inFinal.filter((i) => i.cmd === 'USER').at(-1)?.args;
  t.ok(user !== undefined && !/^(root|0)(:|$)/.test(user), `runs as a non-root user (${user})`);
  const health = inFinal.find((i) => i.cmd === 'HEALTHCHECK')?.args ?? '';
  t.match(health, new RegExp(`http://127\\.0\\.0\\.1:${healthPort}/healthz`), 'HEALTHCHECK asks /healthz on the metrics port');
  const volumes = inFinal.filter((i) => i.cmd === 'VOLUME').flatMap((i) => JSON.parse(i.args) as string[]);
  t.ok(volumes.includes('/data'), 'dataDir volume');
  t.ok(volumes.includes('/etc/lemonade-gateway'), 'config volume');
  const cmd = JSON.parse(inFinal.find((i) => i.cmd === 'CMD')!.args) as string[];
  const configPath = cmd[cmd.indexOf('--config') + 1]!;
  t.ok(volumes.some((v) => configPath.startsWith(`${v}/`)), `the config (${configPath}) is read from a volume`);
  const entry = JSON.parse(inFinal.find((i) => i.cmd === 'ENTRYPOINT')!.args) as string[];
  t.same(entry, ['node', 'dist/main.js']);
  // `node dist/main.js` bypasses the shebang, so the image must set the same runtime flags.
  const shebang = readFileSync(path.join(repoRoot, 'src', 'main.ts'), 'utf8').split('\n')[0]!;
  const env = inFinal.filter((i) => i.cmd === 'ENV').map((i) => i.args).join(' ');
  const nodeFlags = shebang.slice(shebang.indexOf(' node ') + ' node '.length).trim();
  const tunables = /GLIBC_TUNABLES=(\S+)/.exec(shebang)![1]!;
  t.ok(env.includes(`NODE_OPTIONS="${nodeFlags}"`) || env.includes(`NODE_OPTIONS=${nodeFlags} `), `ENV NODE_OPTIONS carries the shebang's flags (${nodeFlags})`);
  t.ok(env.includes(`GLIBC_TUNABLES=${tunables}`), `ENV GLIBC_TUNABLES matches the shebang (${tunables})`);
  t.equal(gatewayConfig.dataDir, '/data', 'the trial config keeps its state in the /data volume');
  const exposed = inFinal.filter((i) => i.cmd === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
  for (const l of [...gatewayConfig.imap.listen, ...gatewayConfig.submission.listen]) t.ok(exposed.includes(l.port), `EXPOSE ${l.port}`);
  t.ok(exposed.includes(healthPort), `EXPOSE ${healthPort}`);
});

t.test('deploy/compose.yaml: builds, mounts and ports exist and agree with the configs they run', async (t) => {
  interface Service {
    build?: string | { context: string; dockerfile?: string };
    image?: string;
    volumes?: string[];
    ports?: string[];
    depends_on?: string[];
    stop_grace_period?: string;
  }
  const compose = parseYaml(readFileSync(path.join(deploy, 'compose.yaml'), 'utf8')) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
  const services = compose.services;
  t.same(Object.keys(services).sort(), ['dovecot', 'gateway', 'grafana', 'postfix', 'prometheus']);
  const mountOf = (svc: string, target: string) => services[svc]!.volumes?.map((v) => v.split(':')).find((v) => v[1] === target);

  for (const [name, svc] of Object.entries(services)) {
    t.ok(svc.build !== undefined || /^[\w./-]+:[\w.-]+$/.test(svc.image ?? ''), `${name}: built here or a pinned image`);
    if (svc.build !== undefined) {
      const build = typeof svc.build === 'string' ? { context: svc.build } : svc.build;
      const context = path.resolve(deploy, build.context);
      const dockerfile = path.join(context, build.dockerfile ?? 'Dockerfile');
      t.ok(existsSync(dockerfile), `${name}: ${path.relative(repoRoot, dockerfile)} exists`);
      const { instructions } = parseDockerfile(readFileSync(dockerfile, 'utf8'));
      for (const i of instructions.filter((i) => i.cmd === 'COPY' && !i.args.includes('--from='))) {
        for (const src of copyArgs(i.args).sources) t.ok(existsSync(path.join(context, src)), `${name}: COPY ${src} exists in its context`);
      }
    }
    for (const v of svc.volumes ?? []) {
      const [source] = v.split(':');
      if (source!.startsWith('.') || source!.startsWith('/')) t.ok(existsSync(path.resolve(deploy, source!)), `${name}: mount ${source} exists`);
      else t.ok(compose.volumes && source! in compose.volumes, `${name}: named volume ${source} is declared`);
    }
    for (const p of svc.ports ?? []) t.match(p, /^127\.0\.0\.1:\d+:\d+$/, `${name}: ${p} is published on loopback only`);
    for (const d of svc.depends_on ?? []) t.ok(d in services, `${name} depends on ${d}, a service`);
  }

  // The gateway: its config file, its ports, its data volume, its stop timeout.
  const configMount = mountOf('gateway', '/etc/lemonade-gateway');
  t.ok(configMount, 'the config directory is mounted where the image reads it');
  t.equal(path.resolve(deploy, configMount![0]!, 'config.yaml'), gatewayConfigFile);
  t.ok(mountOf('gateway', '/data'), 'dataDir is a volume');
  const published = (services.gateway!.ports ?? []).map((p) => Number(p.split(':')[2]));
  const listening = [...gatewayConfig.imap.listen, ...gatewayConfig.submission.listen];
  t.same(published.sort(), listening.map((l) => l.port).sort(), 'the published ports are the configured listeners');
  for (const l of listening) t.equal(l.host, '0.0.0.0', `listener ${l.port} binds every address inside the container`);
  t.equal(gatewayConfig.metrics.host, '0.0.0.0', 'Prometheus on the compose network can reach the metrics endpoint');
  t.equal(gatewayConfig.imap.upstream.host, 'dovecot');
  t.equal(gatewayConfig.submission.upstream.host, 'postfix');
  const grace = Number(/^(\d+)s$/.exec(services.gateway!.stop_grace_period ?? '')?.[1]);
  t.ok(grace > gatewayConfig.shutdown.graceSeconds, `stop_grace_period ${grace}s exceeds shutdown.graceSeconds`);

  // The legacy servers agree with the gateway config (master user, ports) and with their own parsers.
  const master = readFileSync(path.join(deploy, 'dovecot', 'master-users'), 'utf8');
  t.match(master, new RegExp(`^${gatewayConfig.imap.master!.user}:\\{PLAIN\\}${gatewayConfig.imap.master!.password}$`, 'm'), 'the master user the gateway logs in with');
  const dovecotConf = readFileSync(path.join(deploy, 'dovecot', 'dovecot.conf'), 'utf8');
  t.match(dovecotConf, new RegExp(`inet_listener imap \\{\\s*port = ${gatewayConfig.imap.upstream.port}\\s`), 'Dovecot listens where the gateway connects');
  t.match(dovecotConf, /master = yes/);
  execFileSync('doveconf', ['-n', '-c', path.join(deploy, 'dovecot', 'dovecot.conf')], { stdio: 'pipe' });
  t.pass('doveconf accepts deploy/dovecot/dovecot.conf');
  const mainCf = execFileSync('postconf', ['-c', path.join(deploy, 'postfix'), '-n'], { encoding: 'utf8' });
  t.match(mainCf, /^virtual_transport = lmtp:inet:dovecot:24$/m, 'Postfix delivers to the Dovecot container');
  const masterCf = execFileSync('postconf', ['-c', path.join(deploy, 'postfix'), '-M'], { encoding: 'utf8' });
  t.match(masterCf, new RegExp(`^smtp\\s+inet\\s.*smtpd$`, 'm'), `Postfix listens on port ${gatewayConfig.submission.upstream.port} (smtp)`);
  t.equal(gatewayConfig.submission.upstream.port, 25);

  // Prometheus scrapes the gateway; Grafana gets Prometheus and the dashboard.
  const prom = parseYaml(readFileSync(path.join(deploy, 'prometheus', 'prometheus.yml'), 'utf8')) as {
    scrape_configs: Array<{ static_configs: Array<{ targets: string[] }> }>;
  };
  const targets = prom.scrape_configs.flatMap((s) => s.static_configs.flatMap((c) => c.targets));
  t.ok(targets.includes(`gateway:${gatewayConfig.metrics.port}`), 'Prometheus scrapes gateway:metrics.port');
  t.equal(mountOf('prometheus', '/etc/prometheus/prometheus.yml')?.[0], './prometheus/prometheus.yml');
  const ds = parseYaml(readFileSync(path.join(deploy, 'grafana', 'provisioning', 'datasources', 'prometheus.yaml'), 'utf8')) as {
    datasources: Array<{ type: string; url: string; isDefault?: boolean }>;
  };
  t.match(ds.datasources[0], { type: 'prometheus', url: 'http://prometheus:9090', isDefault: true });
  const boards = parseYaml(readFileSync(path.join(deploy, 'grafana', 'provisioning', 'dashboards', 'lemonade.yaml'), 'utf8')) as {
    providers: Array<{ type: string; options: { path: string } }>;
  };
  const dashboardMount = services.grafana!.volumes!.map((v) => v.split(':')).find((v) => v[0]!.endsWith('lemonade-gateway.json'));
  t.ok(dashboardMount, 'the dashboard JSON is mounted');
  t.ok(statSync(path.resolve(deploy, dashboardMount![0]!)).isFile());
  t.equal(path.posix.dirname(dashboardMount![1]!), boards.providers[0]!.options.path, 'where the provisioning provider looks');
  t.equal(mountOf('grafana', '/etc/grafana/provisioning')?.[0], './grafana/provisioning');
});
