/**
 * Reading the YAML config and turning every problem into a line that names the key and
 * says why, all at once, so an operator fixes the file in one go.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.js';

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(issues.join('; '));
    this.name = 'ConfigError';
  }
}

function keyPath(p: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const k of p) out += typeof k === 'number' ? `[${k}]` : out === '' ? String(k) : `.${String(k)}`;
  return out === '' ? '(top level)' : out;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${String(value)}`;
}

function valueAt(root: unknown, p: ReadonlyArray<PropertyKey>): unknown {
  let v: unknown = root;
  for (const k of p) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function issueLine(issue: z.core.$ZodIssue, input: unknown): string[] {
  const where = keyPath(issue.path);
  switch (issue.code) {
    case 'invalid_type':
      return [`${where}: expected ${issue.expected === 'object' ? 'a mapping' : issue.expected === 'array' ? 'a list' : `a ${issue.expected}`}, got ${describe(valueAt(input, issue.path))}`];
    case 'unrecognized_keys':
      return issue.keys.map((k) => `${keyPath([...issue.path, k])}: unknown option`);
    case 'invalid_value':
      return [`${where}: must be one of ${issue.values.map(String).join(', ')}, got ${describe(valueAt(input, issue.path))}`];
    case 'too_small':
      return [`${where}: must be at least ${String(issue.minimum)}${issue.origin === 'array' ? ' entries' : issue.origin === 'string' ? ' characters' : ''}`];
    case 'too_big':
      return [`${where}: must be at most ${String(issue.maximum)}`];
    default:
      return [`${where}: ${issue.message}`];
  }
}

/** Checks the schema cannot express: listeners that would collide. */
function crossChecks(config: Config): string[] {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  const claim = (key: string, host: string, port: number) => {
    if (port === 0) return;
    const id = `${host}:${port}`;
    const prior = seen.get(id);
    if (prior) problems.push(`${key}: ${id} is already used by ${prior}`);
    else seen.set(id, key);
  };
  config.imap.listen.forEach((l, i) => claim(`imap.listen[${i}]`, l.host, l.port));
  config.submission.listen.forEach((l, i) => claim(`submission.listen[${i}]`, l.host, l.port));
  if (config.metrics.enabled) claim('metrics', config.metrics.host, config.metrics.port);
  return problems;
}

/** A key written with only comments under it ("tls:") is YAML null: treat it as left out. */
function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => [k, dropNulls(v)]),
  );
}

export function parseConfig(text: string, sourceName: string): Config {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${sourceName}: YAML: ${e.message.split('\n')[0]}`));
  }
  const input: unknown = dropNulls(doc.toJS() ?? {});
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(result.error.issues.flatMap((i) => issueLine(i, input)));
  const problems = crossChecks(result.data);
  if (problems.length > 0) throw new ConfigError(problems);
  return result.data;
}

/** Reads FILE; relative paths inside it are relative to FILE's directory. */
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
  return config;
}
