/** The embedded store: mailbox access keys (RFC 4467 §5) and its schema migrations. */
import t from 'tap';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../src/store/sqlite.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-store-'));

t.test('keys: 128 bits, created once, stable across reopen, per user and mailbox', async (t) => {
  const file = path.join(dir, 'a', 'store.sqlite');
  const store = new SqliteStore(file);
  const k1 = await store.mailboxAccessKey('alice', 'INBOX');
  t.equal(k1.length, 16);
  t.ok((await store.mailboxAccessKey('alice', 'inbox')).equals(k1), 'INBOX is case-insensitive');
  t.notOk((await store.mailboxAccessKey('alice', 'Sent')).equals(await store.mailboxAccessKey('alice', 'sent')), 'other names are exact');
  t.notOk((await store.mailboxAccessKey('bob', 'INBOX')).equals(k1), 'per user');
  t.equal(statSync(file).mode & 0o777, 0o600, 'file mode 0600');
  t.equal(store.schemaVersion, 1);
  await store.close();
  const again = new SqliteStore(file);
  t.ok((await again.mailboxAccessKey('alice', 'INBOX')).equals(k1), 'same key after reopen');
  t.equal(again.schemaVersion, 1, 'migrations ran once');
  await again.close();
});

t.test('concurrent first use from two stores on one file: one key', async (t) => {
  const file = path.join(dir, 'b.sqlite');
  const [a, b] = [new SqliteStore(file), new SqliteStore(file)];
  const keys = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).mailboxAccessKey('carol', 'Drafts')));
  t.ok(keys.every((k) => k.equals(keys[0]!)), 'every caller got the same key');
  await a.close();
  await b.close();
});

t.test('reset: one mailbox, or all of one user, nobody else', async (t) => {
  const store = new SqliteStore(path.join(dir, 'c.sqlite'));
  const inbox = await store.mailboxAccessKey('alice', 'INBOX');
  const sent = await store.mailboxAccessKey('alice', 'Sent');
  const bobs = await store.mailboxAccessKey('bob', 'INBOX');
  await store.resetAccessKeys('alice', 'inbox');
  t.notOk((await store.mailboxAccessKey('alice', 'INBOX')).equals(inbox), 'INBOX key changed');
  t.ok((await store.mailboxAccessKey('alice', 'Sent')).equals(sent), 'Sent key kept');
  await store.resetAccessKeys('alice');
  t.notOk((await store.mailboxAccessKey('alice', 'Sent')).equals(sent), 'all of alice changed');
  t.ok((await store.mailboxAccessKey('bob', 'INBOX')).equals(bobs), "bob's kept");
  await store.close();
});

t.test('a file that is not a database: a clear error', async (t) => {
  const file = path.join(dir, 'garbage.sqlite');
  writeFileSync(file, 'this is not sqlite'.repeat(100));
  t.throws(() => new SqliteStore(file), /cannot open the store .*garbage\.sqlite/);
});
