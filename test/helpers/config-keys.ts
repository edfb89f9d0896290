/**
 * Every option of the config schema as a flat list, for the tests that keep
 * config.example.yaml and the README's option table in step with the schema.
 */
import type { z } from 'zod';
import { configSchema } from '../../src/config/schema.js';

export interface SchemaEntry {
  /** Dotted key path; entries of a list of mappings as `list[].key`. */
  key: string;
  /** string, number, boolean, one of ..., list of strings, list (of mappings), map. */
  type: string;
  /** The default, when the option has one. */
  default?: { value: unknown };
  /** No default and not optional: must be given (where its parent is). */
  required: boolean;
}

type Def = {
  type: string;
  innerType?: z.core.$ZodType;
  in?: z.core.$ZodType;
  defaultValue?: unknown;
  shape?: Record<string, z.core.$ZodType>;
  element?: z.core.$ZodType;
  entries?: Record<string, string>;
};

const def = (s: z.core.$ZodType) => s._zod.def as Def;

/** Every option, optional ones included; a list of mappings is one entry and one per key of its elements. */
export function schemaEntries(schema: z.core.$ZodType = configSchema, prefix = ''): SchemaEntry[] {
  let s = schema;
  let dflt: { value: unknown } | undefined;
  let optional = false;
  for (;;) {
    const d = def(s);
    if (d.type === 'default') {
      dflt ??= { value: d.defaultValue };
      s = d.innerType!;
    } else if (d.type === 'prefault' || d.type === 'optional') {
      // prefault({}): the defaults are those of the keys inside.
      if (d.type === 'optional') optional = true;
      s = d.innerType!;
    } else if (d.type === 'pipe') s = d.in!;
    else break;
  }
  const d = def(s);
  if (d.type === 'object') return Object.entries(d.shape!).flatMap(([k, v]) => schemaEntries(v, prefix === '' ? k : `${prefix}.${k}`));
  const entry = (type: string): SchemaEntry => ({ key: prefix, type, ...(dflt ? { default: dflt } : {}), required: dflt === undefined && !optional });
  if (d.type === 'array') {
    const element = def(d.element!);
    if (element.type === 'object') return [entry('list'), ...schemaEntries(d.element!, `${prefix}[]`)];
    return [entry(`list of ${element.type}s`)];
  }
  if (d.type === 'enum') return [entry(`one of ${Object.values(d.entries!).join(', ')}`)];
  if (d.type === 'record') return [entry('map')];
  // `workers: number | "auto"`: "number or auto".
  if (d.type === 'union') {
    const options = (d as { options?: z.core.$ZodType[] }).options ?? [];
    return [entry(options.map((o) => (def(o).type === 'literal' ? ((o._zod.def as { values?: unknown[] }).values ?? []).map(String).join(', ') : def(o).type)).join(' or '))];
  }
  return [entry(d.type)];
}
