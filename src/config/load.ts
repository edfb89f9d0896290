/**
 * Reading the YAML config and turning every problem into a line that names the key and
 * says why, all at once, so an operator fixes the file in one go.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { configSchema, type Config } from './schema.js';

export class ConfigError extends Error {
  readonly issues: string[];

  constructor(issues: string[]) {
    super(issues.join('; '));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

function keyPath(p: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out === '' ? String(k) : `.${String(k)}`;
  return out === '' ? '(top level)' : out;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${String(value)}`;
}

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  int: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'a boolean (true or false)',
};

function valueAt(root: unknown, p: ReadonlyArray<PropertyKey>): unknown {
  let v: unknown = root;
  for (const k of p) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function issueLines(issue: z.core.$ZodIssue, input: unknown): string[] {
  const where = keyPath(issue.path);
  switch (issue.code) {
    case 'invalid_type': {
      const expected = TYPE_NAMES[issue.expected] ?? `a ${issue.expected}`;
      const value = valueAt(input, issue.path);
      if (value === undefined) return [`${where}: required option is missing (expected ${expected})`];
      return [`${where}: expected ${expected}, got ${describe(value)}`];
    }
    case 'unrecognized_keys':
      return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown option`);
    case 'invalid_value':
      return [`${where}: must be one of ${issue.values.map(String).join(', ')}, got ${describe(valueAt(input, issue.path))}`];
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return [`${where}: must not be empty`];
      if (issue.origin === 'array') return [`${where}: must have at least ${String(issue.minimum)} entries`];
      return [`${where}: must be ${issue.inclusive === false ? 'greater than' : 'at least'} ${String(issue.minimum)}`];
    case 'too_big':
      if (issue.origin === 'array') return [`${where}: must have at most ${String(issue.maximum)} entries`];
      return [`${where}: must be ${issue.inclusive === false ? 'less than' : 'at most'} ${String(issue.maximum)}`];
    default:
      return [`${where}: ${issue.message}`];
  }
}

/** The schema under default/prefault/optional/pipe wrappers, where the object shape or list element lives. */
function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  for (;;) {
    const def = schema._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType };
    if (def.innerType !== undefined) schema = def.innerType;
    else if (def.type === 'pipe' && def.in !== undefined) schema = def.in;
    else return schema;
  }
}

/**
 * A key written with nothing after it ("tls:" followed only by comments) is YAML null;
 * for an option that may be left out, read it as left out. Required options and unknown
 * keys keep their null so they are still reported.
 */
function dropOmittedNulls(value: unknown, schema: z.core.$ZodType | undefined): unknown {
  if (schema === undefined || value === null || typeof value !== 'object') return value;
  const def = unwrap(schema)._zod.def as {
    type: string;
    shape?: Record<string, z.core.$ZodType>;
    element?: z.core.$ZodType;
  };
  if (Array.isArray(value)) {
    return def.type === 'array' ? value.map((v) => dropOmittedNulls(v, def.element)) : value;
  }
  if (def.type !== 'object' || def.shape === undefined) return value;
  const shape = def.shape;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const child = Object.hasOwn(shape, k) ? shape[k] : undefined;
    if (v === null && child !== undefined && z.safeParse(child, undefined).success) continue;
    out[k] = dropOmittedNulls(v, child);
  }
  return out;
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]', '*']);

/**
 * Checks the schema cannot express: listeners that would collide. A wildcard address
 * takes the port on every address (Linux refuses a second listener even with SO_REUSEADDR),
 * so it collides with any host on the same port. Port 0 is an ephemeral port and never collides.
 */
function crossChecks(config: Config): string[] {
  const problems: string[] = [];
  const claimed: Array<{ key: string; host: string; port: number }> = [];
  const claim = (key: string, host: string, port: number) => {
    if (port === 0) return;
    const h = host.toLowerCase();
    const prior = claimed.find(
      (c) => c.port === port && (c.host === h || WILDCARD_HOSTS.has(c.host) || WILDCARD_HOSTS.has(h)),
    );
    if (prior) problems.push(`${key}: ${host}:${port} collides with ${prior.key} (${prior.host}:${prior.port})`);
    else claimed.push({ key, host: h, port });
  };
  config.imap.listen.forEach((l, i) => claim(`imap.listen[${i}].port`, l.host, l.port));
  config.submission.listen.forEach((l, i) => claim(`submission.listen[${i}].port`, l.host, l.port));
  if (config.metrics.enabled) claim('metrics.port', config.metrics.host, config.metrics.port);
  return problems;
}

/** yaml reports only where a duplicate key starts; name the key too, as it is usually far from its twin. */
function duplicateKeyMessage(text: string, at: number): string | undefined {
  const rest = text.slice(at, text.indexOf('\n', at) === -1 ? undefined : text.indexOf('\n', at));
  const m = /^("[^"]*"|'[^']*'|[^:#{}[\],]+?)\s*:/.exec(rest);
  return m ? `key ${m[1].trim()} appears twice in the same mapping` : undefined;
}

/** Parses and validates config TEXT; SOURCENAME only labels YAML syntax errors. */
export function parseConfig(text: string, sourceName: string): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter: lines });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        const at = `${sourceName}:${line}:${col}`;
        const message =
          e.code === 'MULTIPLE_DOCS'
            ? 'the file must hold a single YAML document (found a second "---")'
            : e.code === 'DUPLICATE_KEY'
              ? duplicateKeyMessage(text, e.pos[0]) ?? e.message
              : e.message;
        return `${at}: YAML syntax error: ${message}`;
      }),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (err) {
    // toJS refuses alias bombs (maxAliasCount) and similar; it is still a problem with the file.
    throw new ConfigError([`${sourceName}: YAML: ${(err as Error).message}`]);
  }
  const input = dropOmittedNulls(raw ?? {}, configSchema);
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(result.error.issues.flatMap((i) => issueLines(i, input)));
  const problems = crossChecks(result.data);
  if (problems.length > 0) throw new ConfigError(problems);
  return result.data;
}

/** Reads FILE; relative paths inside it are relative to FILE's directory, not the working directory. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read ${file}: ${(err as Error).message}`]);
  }
  const config = parseConfig(text, file);
  const base = path.dirname(path.resolve(file));
  const resolve = (p: string | undefined) => (p === undefined ? undefined : path.resolve(base, p));
  config.dataDir = path.resolve(base, config.dataDir);
  config.tls.cert = resolve(config.tls.cert);
  config.tls.key = resolve(config.tls.key);
  config.imap.upstream.tlsOptions.ca = resolve(config.imap.upstream.tlsOptions.ca);
  config.submission.upstream.tlsOptions.ca = resolve(config.submission.upstream.tlsOptions.ca);
  config.store.passwordFile = resolve(config.store.passwordFile);
  return config;
}
