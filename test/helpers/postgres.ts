/**
 * A real PostgreSQL for one test file: scripts/postgres.sh starts a private server
 * (initdb in a temp directory, 127.0.0.1 on a port of its own, a socket directory inside),
 * stopped by stop() or, if the test process dies first, by the script's watcher.
 *
 *   const server = await startPostgres();
 *   t.teardown(() => server.stop());
 *   const url = await server.createDatabase();   // a fresh, empty database per test
 *
 * The role (LOGIN CREATEDB) and its password are the server's own; every database made
 * here belongs to it.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const repoRoot = ((): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
const script = path.join(repoRoot, 'scripts', 'postgres.sh');

/** What scripts/postgres.sh start prints. */
export interface PostgresInfo {
  /** postgres://lemonade:PASSWORD@127.0.0.1:PORT/lemonade */
  url: string;
  host: string;
  port: number;
  socketDir: string;
  database: string;
  user: string;
  password: string;
  /** A file whose only line is the password (for store.passwordFile). */
  passwordFile: string;
  pid: number;
  dir: string;
}

export interface PostgresServer extends PostgresInfo {
  /** A new empty database owned by the role; its URL, with the password unless withPassword is false. */
  createDatabase(opts?: { withPassword?: boolean }): Promise<string>;
  /** Stops the server, keeping its data (start() brings it back on the same port). */
  halt(): Promise<void>;
  /** Starts a halted server again with its data. */
  start(): Promise<void>;
  /** Stops the server and removes its directory (kept with LEMONADE_KEEP_STACK=1). Idempotent. */
  stop(): Promise<void>;
}

function runScript(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('bash', [script, ...args], { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const how = err.killed ? `timed out after ${timeoutMs} ms` : `exit ${String(err.code)}`;
        reject(new Error(`postgres.sh ${args.join(' ')} failed (${how}):\n${stderr.trim()}`));
        return;
      }
      resolve(stdout);
    });
  });
}

function parseInfo(stdout: string): PostgresInfo {
  const last = stdout.trim().split('\n').at(-1) ?? '';
  try {
    const info = JSON.parse(last) as PostgresInfo;
    if (typeof info.port === 'number' && typeof info.url === 'string') return info;
  } catch {
    // reported below with the output
  }
  throw new Error(`postgres.sh start printed no usable JSON as its last line:\n${stdout}`);
}

export async function startPostgres(): Promise<PostgresServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-pg-'));
  const startArgs = ['start', '--dir', dir, '--owner-pid', String(process.pid)];
  const info = parseInfo(await runScript(startArgs, 120_000));
  let databases = 0;
  let stopping: Promise<void> | undefined;
  return {
    ...info,
    async createDatabase({ withPassword = true } = {}) {
      const name = `t${process.pid}_${++databases}`;
      const admin = new pg.Client({ connectionString: info.url });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(info.url);
      url.pathname = `/${name}`;
      if (!withPassword) url.password = '';
      return url.toString();
    },
    async halt() {
      await runScript(['stop', '--dir', dir], 60_000);
    },
    async start() {
      // Same directory: same data, role, password and port; a new watcher for this process.
      await runScript(startArgs, 120_000);
    },
    stop() {
      stopping ??= (async () => {
        await runScript(['stop', '--dir', dir], 60_000);
        if (!process.env.LEMONADE_KEEP_STACK) rmSync(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

/** Rows of one query on url, on a connection of its own. */
export async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}
