/**
 * The SQLite store: the Store contract for access keys, meta values and the spool index
 * (test/helpers/store-contract.ts, shared with the PostgreSQL store), and what is
 * SQLite's own: migrations, file permissions and open errors. Real SQLite files in a
 * temporary directory; the cross-process race uses real processes.
 */
import t from 'tap';
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { openStore, sqlitePath } from '../src/store/index.js';
import { migrate, type Migration } from '../src/store/migrate.js';
import { SQLITE_MIGRATIONS } from '../src/store/sqlite-schema.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { StoreError } from '../src/store/store.js';
import { keyContract, spoolContract, type StoreBackend } from './helpers/store-contract.js';

const thisFile = fileURLToPath(import.meta.url);

// Child mode for the cross-process race: take many first-use keys, report them, exit.
if (process.argv[2] === 'race') {
  const store = SqliteStore.open(process.argv[3]!);
  // Start together: the parent says go once every racer has loaded and opened the file.
  await new Promise<void>((resolve) => {
    process.on('message', (m) => (m as { go?: boolean }).go && resolve());
    process.send!({ ready: true });
  });
  const users = Array.from({ length: 30 }, (_, i) => `racer${i}`);
  const keys = await Promise.all(users.map((u) => store.mailboxAccessKey(u, 'INBOX')));
  await store.close();
  process.send!({ raced: keys.map((k) => k.toString('hex')) }, () => process.exit(0));
} else {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-store-'));
  const file = (name: string) => path.join(dir, name, 'store.sqlite');

  // The contract every backend meets (test/helpers/store-contract.ts), on SQLite files.
  const backend: StoreBackend = {
    fresh: async (name) => file(name),
    open: async (f) => SqliteStore.open(f),
  };
  keyContract(t, backend);
  spoolContract(t, backend);

  t.test('concurrent first use in four processes ends with one key', async (t) => {
    const f = file('race');
    const a = SqliteStore.open(f);
    // Four processes race for the same 30 fresh keys on one file.
    const racers = 4;
    let ready = 0;
    const children: ReturnType<typeof fork>[] = [];
    const runs = await Promise.all(
      Array.from({ length: racers }, () =>
        new Promise<string[]>((resolve, reject) => {
          const child = fork(thisFile, ['race', f], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
          children.push(child);
          // tap's own machinery talks on the channel too: take only our messages.
          child.on('message', (m) => {
            const msg = m as { ready?: boolean; raced?: string[] };
            if (msg.ready && ++ready === racers) for (const c of children) c.send({ go: true });
            if (msg.raced !== undefined) resolve(msg.raced);
          });
          child.once('error', reject);
          child.once('exit', (code) => reject(new Error(`racer exited ${code} without an answer`)));
        }),
      ),
    );
    t.equal(runs[0]!.length, 30);
    t.equal(new Set(runs[0]).size, 30, 'a key per user');
    for (const run of runs.slice(1)) t.same(run, runs[0], 'every process got the same keys');
    t.equal((await a.mailboxAccessKey('racer7', 'inbox')).toString('hex'), runs[0]![7], 'and they are the stored ones');
    await a.close();
  });

  t.test('the file is 0600 in a new 0700 directory; WAL and synchronous=FULL', async (t) => {
    const f = file('mode');
    const store = SqliteStore.open(f);
    await store.mailboxAccessKey('alice', 'INBOX');
    t.equal(statSync(f).mode & 0o777, 0o600, 'file');
    t.equal(statSync(path.dirname(f)).mode & 0o777, 0o700, 'directory');
    t.equal(statSync(`${f}-wal`).mode & 0o777, 0o600, 'WAL file');
    await store.close();
    const loose = path.join(dir, 'loose.sqlite');
    writeFileSync(loose, '', { mode: 0o644 });
    await SqliteStore.open(loose).close();
    t.equal(statSync(loose).mode & 0o777, 0o600, 'an existing readable file is tightened');
    const db = new Database(f, { readonly: true });
    t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
  });

  t.test('migrations run once and the version is recorded', async (t) => {
    const f = file('migrate');
    const store = SqliteStore.open(f);
    t.equal(store.schemaVersion, SQLITE_MIGRATIONS.length);
    await store.close();
    await SqliteStore.open(f).close();
    const db = new Database(f, { readonly: true });
    const rows = db.prepare('SELECT version, name FROM schema_version ORDER BY version').all() as { version: number; name: string }[];
    t.same(rows.map((r) => r.version), SQLITE_MIGRATIONS.map((m) => m.version), 'each version once, in order');
    db.close();

    // The mechanism itself, on a scratch database.
    const mem = new Database(':memory:');
    const m1: Migration = { version: 1, name: 'one', sql: 'CREATE TABLE one (x)' };
    const m2: Migration = { version: 2, name: 'two', sql: 'CREATE TABLE two (y)' };
    t.same(migrate(mem, [m1]), [1]);
    t.same(migrate(mem, [m1]), [], 'nothing to do the second time');
    t.same(migrate(mem, [m1, m2]), [2], 'only the new one');
    t.throws(() => migrate(mem, [m1]), /schema version 2 is newer than this program knows \(1\)/);
    const bad: Migration = { version: 3, name: 'bad', sql: 'CREATE TABLE three (z); CREATE TABLE one (x)' };
    t.throws(() => migrate(mem, [m1, m2, bad]), /already exists/);
    t.same(mem.prepare("SELECT name FROM sqlite_master WHERE name = 'three'").all(), [], 'a failed migration leaves nothing');
    t.throws(() => migrate(mem, [m2]), /version 2, expected 1/, 'gaps are refused');
    mem.close();
  });

  t.test('a corrupt or unwritable path gives a clear error', async (t) => {
    const garbage = path.join(dir, 'garbage.sqlite');
    writeFileSync(garbage, 'this is not an SQLite file\n'.repeat(200));
    t.throws(() => SqliteStore.open(garbage), { name: 'StoreError', message: /^cannot open the store .*garbage\.sqlite: file is not a database/ });
    const notDir = path.join(dir, 'plain-file');
    writeFileSync(notDir, '');
    const under = path.join(notDir, 'store.sqlite');
    const err = t.throws(() => SqliteStore.open(under)) as Error;
    t.ok(err instanceof StoreError, 'a StoreError');
    t.match(err.message, /^cannot open the store .*plain-file\/store\.sqlite: .*(ENOTDIR|EEXIST)/);
    const isDir = path.join(dir, 'a-directory');
    mkdirSync(isDir);
    t.throws(() => SqliteStore.open(isDir), { message: /^cannot open the store .*a-directory: .*EISDIR/ });
  });

  t.test('openStore uses store.path under dataDir', async (t) => {
    const config = { dataDir: path.join(dir, 'data'), store: { kind: 'sqlite' as const, path: 'sub/gw.sqlite', poolSize: 10 } };
    t.equal(sqlitePath(config), path.join(dir, 'data', 'sub', 'gw.sqlite'));
    t.equal(sqlitePath({ ...config, store: { ...config.store, path: '/abs/x.sqlite' } }), '/abs/x.sqlite');
    const store = await openStore(config);
    t.equal((await store.mailboxAccessKey('u', 'INBOX')).length, 16);
    await store.close();
    t.ok(statSync(sqlitePath(config)).isFile());
    await t.rejects(openStore({ ...config, store: { ...config.store, kind: 'mysql' as 'sqlite' } }), /store\.kind mysql is not implemented/);
  });
}
