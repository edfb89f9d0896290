/**
 * `npm run lint` rejects import cycles (scripts/check-cycles.sh, issue 17): shown on a
 * deliberately cyclic pair of modules, by value and by type only, and on the tree itself.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './helpers/gateway.js';

const run = promisify(execFile);
const script = path.join(repoRoot, 'scripts', 'check-cycles.sh');

async function check(dir: string): Promise<{ code: number; out: string }> {
  try {
    const r = await run('bash', [script, dir], { cwd: repoRoot });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

/** A fixture directory inside the checkout (dpdm resolves relative to it). */
function fixture(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(repoRoot, '.tap', 'cycles-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return path.relative(repoRoot, dir);
}

t.before(() => mkdirSync(path.join(repoRoot, '.tap'), { recursive: true }));

t.test('a value import cycle fails the check', async (t) => {
  const dir = fixture({
    'a.ts': "import { b } from './b.js';\nexport const a = (): unknown => b;\n",
    'b.ts': "import { a } from './a.js';\nexport const b = (): unknown => a;\n",
  });
  const r = await check(dir);
  t.equal(r.code, 1, 'exit 1');
  t.match(r.out, /\b[ab]\.ts -> \S*\b[ab]\.ts/, 'names the cycle');
});

t.test('a type-only import cycle fails it too', async (t) => {
  const dir = fixture({
    'conn/upstream.ts': "import type { Credentials } from '../commands/context.js';\nexport function login(c: Credentials): string { return c.user; }\n",
    'commands/context.ts': "import { login } from '../conn/upstream.js';\nexport interface Credentials { user: string }\nexport const use = login;\n",
  });
  t.equal((await check(dir)).code, 1);
});

t.test('no cycle: passes', async (t) => {
  const dir = fixture({
    'credentials.ts': 'export interface Credentials { user: string }\n',
    'upstream.ts': "import type { Credentials } from './credentials.js';\nexport function login(c: Credentials): string { return c.user; }\n",
    'context.ts': "import { login } from './upstream.js';\nexport const use = login;\n",
  });
  t.equal((await check(dir)).code, 0);
});

t.test('the source tree has no cycle', async (t) => {
  const r = await check('src');
  t.equal(r.code, 0, r.out);
});
