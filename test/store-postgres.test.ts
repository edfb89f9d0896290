/**
 * The PostgreSQL store against a real PostgreSQL (scripts/postgres.sh, one server for this
 * file, a fresh database per case): the same Store contract as the SQLite store
 * (test/helpers/store-contract.ts), and what several instances sharing one database need:
 * each other's keys and mod-sequences at once, every held message claimed exactly once
 * by racing instances, leases a live claimant renews and a dead instance's claims expire
 * by, held content in chunks (streamed, read back, removed with its row, orphans), and
 * migrations applied once when instances start together. Plus the config: store.url, passwordFile, errors
 * that never show a password. Last, issue 18's scenarios 1, 2 and 3 with two gateway
 * processes (separate dataDirs, one database) in front of one real Dovecot and Postfix.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { ConfigError, parseConfig } from '../src/config/load.js';
import { openStore } from '../src/store/index.js';
import type { Migration } from '../src/store/migrate.js';
import { migratePostgres } from '../src/store/postgres-migrate.js';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres-schema.js';
import { PostgresStore, redactUrl } from '../src/store/postgres.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { ReleaseClaimLost, type HeldMessage, type Store } from '../src/store/store.js';
import { CHUNK, DbContent } from '../src/lemonade/futurerelease/db-content.js';
import { SpoolFiles } from '../src/lemonade/futurerelease/spool.js';
import { prng } from './helpers/prng.js';
import { startGateway } from './helpers/gateway.js';
import { masterClient, startLegacyStack, withoutTrace } from './helpers/stack.js';
import { appendSession, burl, genurlauth, imapLogin, urlfetch, wrongAppendUids } from './helpers/lemonade-clients.js';
import { query, startPostgres } from './helpers/postgres.js';
import { allModseq, keyContract, modseqContract, spoolContract, type StoreBackend } from './helpers/store-contract.js';

t.comment(`loaded ${process.uptime().toFixed(1)} s into this file`);
const server = await startPostgres();
t.teardown(() => server.stop());
t.comment(`PostgreSQL up ${process.uptime().toFixed(1)} s into this file`);

const open = (url: string, leaseMs?: number) => PostgresStore.open({ url, poolSize: 4, ...(leaseMs !== undefined ? { leaseMs } : {}) });
const backend: StoreBackend = { fresh: () => server.createDatabase(), open: (url) => open(url) };

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of chunks) out.push(c);
  return out;
}

function held(id: string, nextAttemptAt: number): HeldMessage {
  return {
    id,
    user: 'alice',
    sender: 'alice@example.org',
    mailParams: [],
    recipients: [{ address: 'bob@example.org', params: [], status: 'pending' }],
    size: 100,
    createdAt: 1,
    releaseAt: nextAttemptAt,
    holdRequest: 'for;1',
    nextAttemptAt,
    attempts: 0,
    state: 'held',
  };
}

t.test('the Store contract', async (t) => {
  keyContract(t, backend);
  spoolContract(t, backend);
  modseqContract(t, backend);
});

t.test('two instances on one database see each other at once: keys, RESETKEY, mod-sequences', async (t) => {
  const url = await server.createDatabase();
  const a = await open(url);
  const b = await open(url);
  const key = await a.mailboxAccessKey('alice', 'INBOX');
  t.ok((await b.existingMailboxAccessKey('alice', 'inbox'))?.equals(key), "B verifies with A's key");
  await b.resetAccessKeys('alice');
  t.equal(await a.existingMailboxAccessKey('alice', 'INBOX'), undefined, "B's RESETKEY voids the key for A at once");

  const sa = await a.modseqOpen('alice', 'INBOX', 42);
  const sb = await b.modseqOpen('alice', 'INBOX', 42);
  t.same(sb, sa, 'one state');
  const byA = await a.modseqRecord(sa.id, { changed: [{ uid: 1, flags: ['\\Seen'] }, { uid: 2, flags: [] }], expunged: [] });
  // B sees A's change, and a repeat of it (B's own upstream saw the same flags) costs nothing.
  const repeat = await b.modseqRecord(sb.id, { changed: [{ uid: 1, flags: ['\\Seen'] }], expunged: [] });
  t.same(repeat, { highestModseq: byA.highestModseq, modseqs: [byA.modseqs[0]!] }, 'the same mod-sequence for the same change');
  const byB = await b.modseqRecord(sb.id, { changed: [], expunged: [2] });
  t.same(await a.modseqChangedSince(sa.id, sa.highestModseq, 0, 10), [{ uid: 1, flags: ['\\Seen'], modseq: byA.modseqs[0] }]);
  t.same(await a.modseqVanishedSince(sa.id, byA.highestModseq), [2], "A's delta holds B's expunge");
  t.equal((await a.modseqState(sa.id)).highestModseq, byB.highestModseq);

  // Both record at once, many times: no mod-sequence handed out twice.
  const runs = await Promise.all(
    [a, b].map(async (store, n) => {
      const got: number[] = [];
      for (let i = 0; i < 40; i++) {
        const r = await store.modseqRecord(sa.id, { changed: [{ uid: 1000 * (n + 1) + i, flags: [] }, { uid: 1, flags: i % 2 ? ['\\Flagged'] : [] }], expunged: [] });
        got.push(r.modseqs[0]!);
      }
      return got;
    }),
  );
  const given = runs.flat();
  t.equal(new Set(given).size, 80, 'every new message its own mod-sequence');
  await a.close();
  await b.close();
});

t.test('mailbox locks across instances: one holder per key, waiters in turn, abandoned waits, lapsed holders', async (t) => {
  const url = await server.createDatabase();
  const [a, b] = await Promise.all([open(url), open(url)]);
  const key = 'alice\u0000INBOX';
  const first = (await a.mailboxLock(key, 10_000))!;
  let second: Awaited<ReturnType<Store['mailboxLock']>>;
  const waiting = b.mailboxLock(key, 10_000).then((l) => (second = l));
  const other = await b.mailboxLock('alice\u0000Sent', 10_000);
  t.ok(other, 'another mailbox is not held up');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(second, undefined, 'B waits while A holds it');
  const gone = new AbortController();
  const abandoned = a.mailboxLock(key, 10_000, gone.signal);
  setTimeout(() => gone.abort(), 100);
  t.equal(await abandoned, undefined, 'a waiter whose session ended never gets it');
  await first.release();
  await first.release(); // idempotent
  await waiting;
  t.ok(second, 'B has it once A let go');
  const lapsed = await a.mailboxLock('bob\u0000INBOX', 300);
  t.ok(lapsed);
  const started = Date.now();
  t.ok(await b.mailboxLock('bob\u0000INBOX', 300), 'a holder that never releases (it died) loses the lock when its lease ends');
  t.ok(Date.now() - started >= 200, 'but not before');
  await second!.release();
  await other!.release();
  t.same(await query(url, 'SELECT key FROM mailbox_locks ORDER BY key'), [{ key: JSON.stringify('bob\u0000INBOX') }], 'released rows are gone');
  await a.close();
  await b.close();
});

t.test('racing instances claim each held message exactly once', async (t) => {
  const url = await server.createDatabase();
  const seed = await open(url);
  const n = 200;
  await seed.spoolInsert(...Array.from({ length: n }, (_, i) => held(`m${String(i).padStart(3, '0')}`, 1000 + (i % 7))));
  const stores = await Promise.all([open(url), open(url), open(url)]);
  // Each instance runs the scheduler's loop: read a batch of due ones, claim each.
  const claimedBy = await Promise.all(
    stores.map(async (store) => {
      const mine: string[] = [];
      for (;;) {
        const due = await store.spoolDue(5000, 20);
        if (due.length === 0) return mine;
        const won = await Promise.all(due.map(async (m) => ((await store.spoolClaim(m.id)) ? m.id : undefined)));
        mine.push(...won.filter((id): id is string => id !== undefined));
      }
    }),
  );
  const all = claimedBy.flat();
  t.equal(all.length, n, 'every message claimed');
  t.equal(new Set(all).size, n, 'and none twice');
  t.ok(claimedBy.filter((c) => c.length > 0).length >= 2, `the instances really raced (${claimedBy.map((c) => c.length).join(' + ')})`);
  const rows = await query<{ state: string; attempts: number; count: string }>(url, 'SELECT state, attempts, COUNT(*) AS count FROM held_messages GROUP BY state, attempts');
  t.same(rows, [{ state: 'sending', attempts: 1, count: String(n) }], 'each counted one attempt');
  for (const s of [seed, ...stores]) await s.close();
});

t.test("leases: a dead instance's claims are taken over once it expires, and not before; a live one renews", async (t) => {
  const url = await server.createDatabase();
  const dead = await open(url, 1500);
  const live = await open(url, 1500);
  const other = await open(url, 1500);
  const patient = await open(url); // the default lease: a minute
  const renewer = await open(url, 1500);
  await dead.spoolInsert(held('sending', 10), held('committing', 20), held('kept', 30), held('renewed', 40));
  t.ok(await dead.spoolClaim('sending'));
  t.ok(await dead.spoolClaim('committing'));
  await dead.spoolCommitting('committing');
  t.ok(await patient.spoolClaim('kept'), "a live instance's claim with a long lease");
  t.ok(await renewer.spoolClaim('renewed'), 'a claim its holder renews');
  t.equal(await other.spoolRenew('renewed'), false, 'only the claimant renews');

  t.same(await live.spoolRecover(), [], "before the lease ends, another instance's start takes nothing");
  t.same(await other.spoolExpired(), [], 'nor does a pass');
  t.same(await live.spoolDue(100, 10), [], 'and nothing is due');
  t.equal((await live.spoolGet('sending'))!.state, 'sending');
  await dead.close(); // "dies": its claims stay in the database

  // 2.1 s: past the 1.5 s lease; 'renewed' is renewed every 0.5 s meanwhile.
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 525));
    t.ok(await renewer.spoolRenew('renewed'), `renewal ${i + 1}`);
  }
  t.same(await live.spoolDue(100, 10), [], 'an expired claim is not due before a pass takes it back');
  const taken = await Promise.all([live.spoolExpired(), other.spoolExpired()]);
  t.same(taken.flat().map((m) => [m.id, m.state]), [['committing', 'committing']], "the dead one's committing message goes to exactly one pass, named as committing");
  t.same((await live.spoolDue(100, 10)).map((m) => m.id), ['sending', 'committing'], 'both of its messages are due again');
  t.equal((await live.spoolGet('renewed'))!.state, 'sending', 'a renewed claim outlives its first lease');
  t.equal((await live.spoolGet('kept'))!.state, 'sending', 'a claim whose lease runs is left alone');
  t.ok(await other.spoolClaim('sending'), 'taken over');
  // A late reschedule by an instance that does not hold the claim must not undo it.
  await live.spoolReschedule('sending', [], 99_999, 'late');
  t.equal((await other.spoolGet('sending'))!.state, 'sending', 'a reschedule without the claim changes nothing');
  await other.spoolReschedule('sending', [], 99_999, '451 later');
  const after = (await other.spoolGet('sending'))!;
  t.same([after.state, after.attempts, after.lastError], ['held', 2, '451 later'], 'the claimant\'s does');

  // A claimant that stalls past its lease loses the message to another before its content end.
  await new Promise((r) => setTimeout(r, 1700));
  t.same(await other.spoolExpired(), [], "'renewed', no longer renewed, is taken back (sending: not named)");
  t.ok(await other.spoolClaim('renewed'));
  t.equal(await renewer.spoolRenew('renewed'), false, 'the stalled claimant cannot renew it');
  await t.rejects(renewer.spoolCommitting('renewed'), ReleaseClaimLost, 'nor mark it committing: it must not send the end');
  await other.spoolCommitting('renewed');
  t.equal((await other.spoolGet('renewed'))!.state, 'committing', 'the new claimant does');
  for (const s of [live, other, patient, renewer]) await s.close();
});

t.test('held content in the database: any instance releases any message; rows an earlier build left with an origin only their gateway', async (t) => {
  const url = await server.createDatabase();
  const a = await PostgresStore.open({ url, poolSize: 2, node: 'gateway-a', leaseMs: 1000 });
  const b = await PostgresStore.open({ url, poolSize: 2, node: 'gateway-b', leaseMs: 1000 });
  await a.spoolInsert(held('a1', 10), held('a2', 20), held('a3', 30));
  await b.spoolInsert(held('b1', 15));
  t.same(await query(url, 'SELECT DISTINCT origin FROM held_messages'), [{ origin: null }], 'new rows name no gateway');
  t.same((await b.spoolDue(100, 10)).map((m) => m.id), ['a1', 'b1', 'a2', 'a3'], "B releases A's messages too");
  t.equal((await b.spoolCancel('a3'))?.id, 'a3', 'and cancels any (queue cancel, XCANCEL)');
  t.ok(await a.spoolClaim('a1'));
  t.ok(await a.spoolClaim('a2'));
  await a.spoolCommitting('a2');
  await a.close(); // A dies mid-release
  await new Promise((r) => setTimeout(r, 1200));
  t.same((await b.spoolExpired()).map((m) => m.id), ['a2'], "B takes back A's releases once their lease ran out, naming the committing one");
  t.same((await b.spoolDue(100, 10)).map((m) => m.id), ['a1', 'b1', 'a2']);

  // A row an earlier build wrote, its content a file in gateway-a's spool: only gateway-a's.
  await b.spoolInsert(held('a0a0a0a0a0a0a0a0', 12));
  await query(url, "UPDATE held_messages SET origin = 'gateway-a' WHERE id = 'a0a0a0a0a0a0a0a0'");
  t.same((await b.spoolDue(100, 10)).map((m) => m.id), ['a1', 'b1', 'a2'], "B leaves gateway-a's file-backed row alone");
  t.equal(await b.spoolClaim('a0a0a0a0a0a0a0a0'), false);
  const aBack = await PostgresStore.open({ url, poolSize: 2, node: 'gateway-a', leaseMs: 1000 });
  t.same((await aBack.spoolDue(100, 10)).map((m) => m.id), ['a1', 'a0a0a0a0a0a0a0a0', 'b1', 'a2'], 'gateway-a releases it and the others');
  // gateway-a's start moves that content into the database: then it is anyone's.
  const oldSpool = new SpoolFiles(path.join(server.dir, 'gw-a-data'));
  await oldSpool.init();
  const w = oldSpool.create('a0a0a0a0a0a0a0a0');
  w.write(Buffer.alloc(CHUNK + 5, 'q'));
  await w.commit();
  t.same(await aBack.contentOnDisk(), ['a0a0a0a0a0a0a0a0']);
  t.same(await b.contentOnDisk(), [], "none of B's");
  await new DbContent(aBack, oldSpool).init();
  t.same(await aBack.contentOnDisk(), []);
  t.ok(Buffer.concat(await readAll(new DbContent(b).read('a0a0a0a0a0a0a0a0'))).equals(Buffer.alloc(CHUNK + 5, 'q')), 'its content moved into the database');
  t.same(readdirSync(path.join(server.dir, 'gw-a-data', 'spool', 'msg')), [], 'and its file removed');
  t.same((await b.spoolDue(100, 10)).map((m) => m.id), ['a1', 'a0a0a0a0a0a0a0a0', 'b1', 'a2'], 'B releases it now');
  await aBack.close();
  await b.close();

  // openStore names the gateway by its dataDir: a node-id file made once, kept across opens.
  const dataDir = path.join(server.dir, 'gw-data');
  const config = { dataDir, store: { kind: 'postgres' as const, path: 'x', url, poolSize: 2 } };
  const first = await openStore(config);
  const second = await openStore(config);
  t.equal(readFileSync(path.join(dataDir, 'node-id'), 'utf8').trim().length, 36, 'DATADIR/node-id');
  t.equal(statSync(path.join(dataDir, 'node-id')).mode & 0o777, 0o600);
  await first.close();
  await second.close();
});

t.test('held content: streamed in chunks, read back whole, removed; orphans only when idle and unindexed', async (t) => {
  const url = await server.createDatabase();
  const store = await open(url);
  const content = new DbContent(store);
  const random = prng(18);
  const body = Buffer.alloc(CHUNK * 3 + 12_345);
  for (let i = 0; i < body.length; i++) body[i] = Math.floor(random() * 256);
  const w = content.create('0123456789abcdef01');
  // Odd-sized pieces, respecting back-pressure as the session does.
  let paused = 0;
  for (let at = 0; at < body.length; ) {
    const n = Math.min(body.length - at, 1000 + Math.floor(random() * 90_000));
    if (!w.write(body.subarray(at, at + n))) {
      paused++;
      await new Promise<void>((r) => w.onceDrain(r));
    }
    at += n;
  }
  t.equal(await w.commit(), body.length, 'commit: the size');
  t.ok(paused > 0, `the writer pushed back (${paused} times)`);
  const chunks = await query<{ seq: number; n: number }>(url, 'SELECT seq, length(data) AS n FROM held_content ORDER BY seq');
  t.ok(chunks.every((c) => c.n <= CHUNK), `${chunks.length} chunks, none over ${CHUNK} octets`);
  t.same(chunks.map((c) => c.seq), chunks.map((_, i) => i + 1), 'numbered in order');
  t.ok(Buffer.concat(await readAll(content.read('0123456789abcdef01'))).equals(body), 'read back byte for byte');
  t.same(await readAll(content.read('fedcba9876543210')), [], 'no content: nothing');

  const gone = content.create('aaaaaaaaaaaaaaaa01');
  gone.write(Buffer.alloc(CHUNK + 10, 1));
  gone.abort();
  await new Promise((r) => setTimeout(r, 300));
  t.same(await query(url, "SELECT id FROM held_content WHERE id = 'aaaaaaaaaaaaaaaa01'"), [], 'an aborted write leaves nothing');

  // Orphans: the first has a row; the other two none, one idle for long, one just written (an upload under way elsewhere).
  await store.spoolInsert({ ...held('0123456789abcdef01', 10), size: body.length });
  for (const id of ['bbbbbbbbbbbbbbbb01', 'cccccccccccccccc01']) {
    const o = content.create(id);
    o.write(Buffer.from('orphan'));
    await o.commit();
  }
  await query(url, "UPDATE held_content SET written_at = written_at - 7200000 WHERE id IN ('0123456789abcdef01', 'bbbbbbbbbbbbbbbb01')");
  t.equal(await content.removeOrphans(), 1, 'one orphan removed');
  t.same((await query<{ id: string }>(url, 'SELECT DISTINCT id FROM held_content ORDER BY id')).map((r) => r.id), ['0123456789abcdef01', 'cccccccccccccccc01'], 'the indexed and the recent kept');
  await content.remove('0123456789abcdef01');
  t.same(await readAll(content.read('0123456789abcdef01')), [], 'removed');
  // A row's delete or cancel takes its content along, in the same statement.
  for (const [id, how] of [['dddddddddddddddd01', 'delete'], ['eeeeeeeeeeeeeeee01', 'cancel']] as const) {
    const x = content.create(id);
    x.write(Buffer.from('goes with its row'));
    await x.commit();
    await store.spoolInsert(held(id, 10));
    if (how === 'delete') t.ok(await store.spoolDelete(id, held('ffffffffffffffff01', 20)));
    else t.equal((await store.spoolCancel(id))?.id, id);
    t.same(await readAll(content.read(id)), [], `spool${how === 'delete' ? 'Delete' : 'Cancel'} removes the content with the row`);
  }
  t.match(content.where('0123456789abcdef01'), /held_content/);
  await store.close();
});

t.test('migrations: applied once when instances start together; versioned; all or nothing', async (t) => {
  const url = await server.createDatabase();
  const stores = await Promise.all(Array.from({ length: 5 }, () => open(url)));
  const versions = await query<{ version: number; name: string }>(url, 'SELECT version, name FROM schema_version ORDER BY version');
  t.same(versions.map((v) => v.version), POSTGRES_MIGRATIONS.map((m) => m.version), 'each version once, in order');
  t.equal(await stores[0]!.schemaVersion(), POSTGRES_MIGRATIONS.length);
  for (const s of stores) await s.close();

  // The mechanism itself, on a scratch database, with instances racing through a slow migration.
  const scratch = await server.createDatabase();
  const pools = Array.from({ length: 4 }, () => new pg.Pool({ connectionString: scratch, max: 2 }));
  const m1: Migration = { version: 1, name: 'one', sql: 'CREATE TABLE one (x int); SELECT pg_sleep(0.5)' };
  const m2: Migration = { version: 2, name: 'two', sql: 'CREATE TABLE two (y int)' };
  const applied = await Promise.all(pools.map((p) => migratePostgres(p, [m1, m2])));
  t.same(applied.filter((a) => a.length > 0), [[1, 2]], 'one instance applied both, the others found nothing to do');
  const pool = pools[0]!;
  t.same(await migratePostgres(pool, [m1, m2]), [], 'nothing the second time');
  const m3: Migration = { version: 3, name: 'three', sql: 'CREATE TABLE three (z int)' };
  t.same(await migratePostgres(pool, [m1, m2, m3]), [3], 'only the new one');
  await t.rejects(migratePostgres(pool, [m1]), /schema version 3 is newer than this program knows \(1\)/);
  const bad: Migration = { version: 4, name: 'bad', sql: 'CREATE TABLE four (z int); CREATE TABLE one (x int)' };
  await t.rejects(migratePostgres(pool, [m1, m2, m3, bad]), /already exists/);
  t.same(await query(scratch, "SELECT to_regclass('four') AS t"), [{ t: null }], 'a failed migration leaves nothing');
  await t.rejects(migratePostgres(pool, [m2]), /version 2, expected 1/, 'gaps are refused');
  for (const p of pools) await p.end();
});

t.test('config: store.kind postgres with url, passwordFile and poolSize; errors never show a password', async (t) => {
  const issues = (yaml: string) => {
    try {
      parseConfig(yaml, 'test.yaml');
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
  };
  t.same(issues('store: { kind: postgres }\n'), ['store.url: required when store.kind is postgres']);
  t.same(issues('store: { kind: postgres, url: "mysql://x/y" }\n'), ['store.url: must be a postgres:// or postgresql:// URI']);
  t.same(issues('store: { kind: postgres, url: "postgres://u@h/d", poolSize: 0 }\n'), ['store.poolSize: must be at least 1']);
  const parsed = parseConfig('store: { kind: postgres, url: "postgres://u@h/d", passwordFile: pw }\n', 'test.yaml');
  t.same(parsed.store, { kind: 'postgres', path: 'gateway.sqlite', url: 'postgres://u@h/d', passwordFile: 'pw', poolSize: 10, timeoutMs: 10_000, releaseLeaseSeconds: 60 });
  t.same(issues('store: { kind: postgres, url: "postgres://u@h/d", releaseLeaseSeconds: 2 }\n'), ['store.releaseLeaseSeconds: must be at least 3']);

  // The password only in a file: the URL carries none.
  const url = await server.createDatabase({ withPassword: false });
  const dataDir = path.dirname(server.passwordFile);
  const config = { dataDir, store: { kind: 'postgres' as const, path: 'x', url, passwordFile: server.passwordFile, poolSize: 2 } };
  const store: Store = await openStore(config);
  t.equal((await store.mailboxAccessKey('alice', 'INBOX')).length, 16, 'opened with the password from the file');
  await store.close();

  const wrong = path.join(dataDir, 'wrong-password');
  writeFileSync(wrong, 'not-the-password-xyzzy\n', { mode: 0o600 });
  const err = (await openStore({ ...config, store: { ...config.store, passwordFile: wrong } }).catch((e: unknown) => e)) as Error;
  t.equal(err.name, 'StoreError');
  t.match(err.message, /^cannot open the store postgres:\/\/lemonade@127\.0\.0\.1:\d+\/t\d+_\d+: .*password authentication failed/);
  t.notMatch(err.message, /xyzzy/, 'the wrong password is not in the message');
  const inUrl = (await openStore({ ...config, store: { ...config.store, url: server.url.replace(server.password, 'secret-xyzzy'), passwordFile: undefined } }).catch(
    (e: unknown) => e,
  )) as Error;
  t.match(inUrl.message, /postgres:\/\/lemonade:\*\*\*@127\.0\.0\.1/, 'a password in the URL is masked');
  t.notMatch(inUrl.message, /xyzzy/);
  await t.rejects(openStore({ ...config, store: { ...config.store, passwordFile: path.join(dataDir, 'missing') } }), {
    name: 'StoreError',
    message: /cannot read store\.passwordFile .*missing: ENOENT/,
  });
  t.equal(redactUrl('not a url secret'), '(unparseable store.url)');
});

t.test('two gateway processes (dataDirs of their own) on one database', async (t) => {
  const stack = await startLegacyStack({ postfix: true });
  t.teardown(() => stack.stop());
  // The password only in store.passwordFile: it must reach the pool and never a log line.
  const url = await server.createDatabase({ withPassword: false });
  const config = {
    store: { kind: 'postgres', url, passwordFile: server.passwordFile, poolSize: 4 },
    submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } },
  };
  const [a, b] = await Promise.all([startGateway(stack, { config }), startGateway(stack, { config })]);
  t.teardown(async () => {
    await a.stop();
    await b.stop();
  });
  t.not(a.dir, b.dir, 'two processes, each with a dataDir of its own');

  t.test('scenario 1: GENURLAUTH on A; URLFETCH and BURL through B; RESETKEY on B voids the URL on A', async (t) => {

    const raw = Buffer.from('From: alice@example.org\r\nTo: bob@example.org\r\nSubject: shared\r\n\r\nOne store, two gateways.\r\n');
    const src = await stack.append('alice', 'INBOX', raw);
    const base = `imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}`;
    const aliceOnA = await imapLogin(a, 'alice');
    const forBob = await genurlauth(aliceOnA, `${base};URLAUTH=user+bob`);
    const forSubmit = await genurlauth(aliceOnA, `${base};URLAUTH=submit+alice`);

    const bobOnB = await imapLogin(b, 'bob');
    t.equal(await urlfetch(bobOnB, forBob), raw.toString('latin1'), 'URLFETCH on B of a URL issued by A: the exact message');
    const bobBefore = await stack.messageCount('bob');
    t.match(await burl(b, forSubmit), /^250 /, 'BURL through B of a URL issued by A');
    const delivered = await stack.newestMessage('bob', bobBefore + 1);
    t.ok(withoutTrace(delivered).equals(raw), 'bob got the message byte for byte (only trace headers added)');

    const aliceOnB = await imapLogin(b, 'alice');
    t.match((await aliceOnB.command('r', 'RESETKEY')).at(-1), /^r OK/, 'RESETKEY on B');
    const bobOnA = await imapLogin(a, 'bob');
    t.equal(await urlfetch(bobOnA, forBob), undefined, 'the URL is void on A at once: NIL');
    t.equal(await urlfetch(bobOnB, forBob), undefined, 'and on B');
    t.match(await burl(a, forSubmit), /^554 5\.7\.0 /, 'BURL of the voided URL through A is refused');
    const again = await genurlauth(aliceOnB, `${base};URLAUTH=user+bob`);
    t.not(again, forBob, 'B issues a new token with the new key');
    t.equal(await urlfetch(bobOnA, again), raw.toString('latin1'), 'which A verifies');
    for (const c of [aliceOnA, bobOnB, aliceOnB, bobOnA]) c.close();

    for (const gw of [a, b]) t.notOk(gw.logs.some((l) => l.includes(server.password)), 'the database password is in no log line');
  });

  t.test('scenario 2: changes through A and upstream; QRESYNC through B gets exactly the delta, with A\'s mod-sequences', async (t) => {
    for (let i = 1; i <= 12; i++) await stack.append('alice', 'Shared', Buffer.from(`Subject: shared ${i}\r\n\r\nbody ${i}\r\n`));
    const onA = await imapLogin(a, 'alice');
    await onA.command('e', 'ENABLE QRESYNC');
    const opened = await onA.command('s', 'SELECT Shared');
    const uidValidity = Number(/\[UIDVALIDITY ([0-9]+)\]/.exec(opened.join('\n'))?.[1]);
    const saved = BigInt(/\[HIGHESTMODSEQ ([0-9]+)\]/.exec(opened.join('\n'))?.[1] ?? '0');
    t.ok(saved > 0n && uidValidity > 0, `A: UIDVALIDITY ${uidValidity}, HIGHESTMODSEQ ${saved}`);

    // Through A: a flag change (A reports its MODSEQ) and an expunge.
    const stored = await onA.command('f', 'UID STORE 3 +FLAGS (\\Flagged)');
    const modseq3 = /^\* [0-9]+ FETCH \(.*MODSEQ \(([0-9]+)\)/.exec(stored.find((l) => / FETCH /.test(l)) ?? '')?.[1];
    t.ok(modseq3 !== undefined && BigInt(modseq3) > saved, `A reported UID 3 at MODSEQ ${modseq3}`);
    await onA.command('d', 'UID STORE 5 +FLAGS.SILENT (\\Deleted)');
    t.match((await onA.command('x', 'EXPUNGE')).at(-1), /^x OK/);
    // Straight at Dovecot: another flag change and another expunge, which A then sees.
    const direct = await masterClient(stack, 'alice');
    await direct.mailboxOpen('Shared');
    await direct.messageFlagsAdd('7', ['$Work'], { uid: true });
    await direct.messageDelete('9', { uid: true });
    await direct.logout();
    const noop = await onA.command('n', 'NOOP');
    const modseq7 = /^\* [0-9]+ FETCH \(.*MODSEQ \(([0-9]+)\)/.exec(noop.find((l) => / FETCH /.test(l) && /\$Work/.test(l)) ?? '')?.[1];
    t.ok(modseq7 !== undefined, `A saw UID 7 change at MODSEQ ${modseq7} (${noop.join(' | ')})`);

    const onB = await imapLogin(b, 'alice');
    await onB.command('e', 'ENABLE QRESYNC');
    const lines = await onB.command('s', `SELECT Shared (QRESYNC (${uidValidity} ${saved}))`);
    t.match(lines.at(-1), /^s OK/);
    t.same(lines.filter((l) => l.startsWith('* VANISHED (EARLIER) ')), ['* VANISHED (EARLIER) 5,9'], 'B: exactly the two expunges');
    const changes = lines
      .filter((l) => /^\* [0-9]+ FETCH /.test(l))
      .map((l) => ({ uid: Number(/UID ([0-9]+)/.exec(l)?.[1]), modseq: /MODSEQ \(([0-9]+)\)/.exec(l)?.[1] }))
      .sort((x, y) => x.uid - y.uid);
    t.same(changes, [{ uid: 3, modseq: modseq3 }, { uid: 7, modseq: modseq7 }], 'B: exactly the two changed messages, at the mod-sequences A reported');
    for (const c of [onA, onB]) c.close();
  });

  t.test('scenario 3: 100 concurrent APPENDs, half through A, half through B: every APPENDUID names its message', async (t) => {
    await stack.append('alice', 'Busy', Buffer.from('Subject: first\r\n\r\nx\r\n'));
    // 20 sessions, 10 per gateway, 5 APPENDs each back to back: 20 at a time, not 100
    // logins at once, which a loaded 2-core machine cannot upstream within the gateway's
    // 3 s connect timeout of these tests.
    const results = (await Promise.all(Array.from({ length: 20 }, (_, i) => appendSession(i % 2 ? b : a, 5 * i)))).flat();
    t.equal(new Set(results.map((r) => r.uid)).size, 100, 'one hundred different UIDs');
    const { stored, wrong } = await wrongAppendUids(stack, results);
    t.equal(stored, 101);
    t.same(wrong, [], 'each APPENDUID is the UID of the message that client appended');
  });
});

t.test('store copy-sqlite: an existing SQLite store moves into PostgreSQL whole (keys, meta, mod-sequences, held messages with their content)', async (t) => {
  const dataDir = path.join(server.dir, 'copy-data');
  const sqlite = SqliteStore.open(path.join(dataDir, 'gateway.sqlite'));
  const inbox = await sqlite.mailboxAccessKey('alice', 'INBOX');
  const sent = await sqlite.mailboxAccessKey('bob', 'Sent');
  await sqlite.initMeta('urlauth-secret', 'abc123');
  const state = await sqlite.modseqOpen('alice', 'INBOX', 77);
  await sqlite.modseqRecord(state.id, { changed: Array.from({ length: 30 }, (_, i) => ({ uid: i + 1, flags: i % 3 ? ['\\Seen'] : [] })), expunged: [] });
  for (const uid of [4, 8, 15, 16]) await sqlite.modseqRecord(state.id, { changed: [], expunged: [uid] });
  await sqlite.modseqCompact(state.id, 2);
  const before = await sqlite.modseqState(state.id);
  const messages = await allModseq(sqlite, state.id);
  // Held messages as the gateway leaves them: a spool file each, then the row.
  const spool = new SpoolFiles(dataDir);
  await spool.init();
  const contents = new Map([
    ['20261206aaaaaaaa', Buffer.from('Subject: small\r\n\r\nheld before the move\r\n')],
    ['20261206bbbbbbbb', Buffer.alloc(CHUNK * 2 + 77, 'x')],
  ]);
  for (const [id, data] of contents) {
    const w = spool.create(id);
    w.write(data);
    await w.commit();
  }
  await spool.syncDir();
  await sqlite.spoolInsert(
    { ...held('20261206aaaaaaaa', 1000), size: contents.get('20261206aaaaaaaa')!.length },
    { ...held('20261206bbbbbbbb', 2000), size: contents.get('20261206bbbbbbbb')!.length, lastError: '451 4.3.0 retry' },
  );
  await sqlite.close();

  const url = await server.createDatabase({ withPassword: false });
  const configFile = path.join(server.dir, 'copy.yaml');
  const yaml = (kind: string) =>
    `hostname: mail.example.org\ndataDir: ${dataDir}\nstore:\n  kind: ${kind}\n  url: ${url}\n  passwordFile: ${server.passwordFile}\n`;
  writeFileSync(configFile, yaml('postgres'));
  const cli = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [path.join(import.meta.dirname, '..', 'dist', 'main.js'), ...args], (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
  const copied = await cli('store', 'copy-sqlite', '--config', configFile);
  t.equal(copied.code, 0, copied.stderr);
  t.match(copied.stdout, new RegExp(`2 access keys, 1 meta values, 1 mailboxes' mod-sequence state \\(26 messages, 2 vanished UIDs\\), 2 held messages with their content \\(${CHUNK * 2 + 77 + 40} octets\\)`));
  t.notMatch(copied.stdout + copied.stderr, server.password, 'the password appears nowhere');

  const pgStore = await PostgresStore.open({ url, password: server.password, poolSize: 2, node: 'some-other-gateway' });
  t.ok((await pgStore.existingMailboxAccessKey('alice', 'INBOX'))?.equals(inbox), "alice's INBOX key, byte for byte: her URLs still verify");
  t.ok((await pgStore.existingMailboxAccessKey('bob', 'Sent'))?.equals(sent));
  t.equal(await pgStore.getMeta('urlauth-secret'), 'abc123');
  const after = await pgStore.modseqOpen('alice', 'INBOX', 77);
  t.same([after.highestModseq, after.vanishedFloor], [before.highestModseq, before.vanishedFloor], 'HIGHESTMODSEQ and the vanished floor');
  t.same(await allModseq(pgStore, after.id), messages, 'every message with its flags and mod-sequence');
  t.same(await pgStore.modseqVanishedSince(after.id, before.vanishedFloor), [15, 16], 'the vanished UIDs kept');
  t.same((await pgStore.spoolDue(5000, 10)).map((m) => [m.id, m.lastError]), [['20261206aaaaaaaa', undefined], ['20261206bbbbbbbb', '451 4.3.0 retry']], 'held messages, due for any gateway');
  const inDb = new DbContent(pgStore);
  for (const [id, data] of contents) t.ok(Buffer.concat(await readAll(inDb.read(id))).equals(data), `${id}: its content in the database, byte for byte`);
  await pgStore.close();

  const again = await cli('store', 'copy-sqlite', '--config', configFile);
  t.equal(again.code, 1);
  t.match(again.stderr, /already holds state; copy only into a new, empty database/, 'never merged into a database in use');
  writeFileSync(configFile, yaml('sqlite'));
  t.equal((await cli('store', 'copy-sqlite', '--config', configFile)).code, 78, 'only into a postgres store');
  t.equal((await cli('store', 'bogus', '--config', configFile)).code, 64);

  // A held row whose spool file is missing: the copy fails whole, the database stays empty.
  const broken = SqliteStore.open(path.join(dataDir, 'broken.sqlite'));
  await broken.spoolInsert(held('20261206cccccccc', 3000));
  await broken.close();
  const emptyUrl = await server.createDatabase();
  writeFileSync(configFile, `hostname: mail.example.org\ndataDir: ${dataDir}\nstore:\n  kind: postgres\n  path: broken.sqlite\n  url: ${emptyUrl}\n`);
  const failed = await cli('store', 'copy-sqlite', '--config', configFile);
  t.equal(failed.code, 1);
  t.match(failed.stderr, /held message 20261206cccccccc: no spool file .*20261206cccccccc\.eml/, 'names the message and the missing file');
  t.same(await query(emptyUrl, 'SELECT COUNT(*)::int AS n FROM held_messages'), [{ n: 0 }], 'nothing copied');
});

t.test('the database restarting: calls fail while it is down, the same store works again after', async (t) => {
  const url = await server.createDatabase();
  const store = await open(url);
  const key = await store.mailboxAccessKey('alice', 'INBOX');
  const before = await store.modseqOpen('alice', 'INBOX', 1);
  await server.halt();
  await t.rejects(store.existingMailboxAccessKey('alice', 'INBOX'), 'a call while it is down fails (the caller answers NO / 4xx)');
  await t.rejects(store.spoolDue(Date.now(), 10));
  await server.start();
  t.ok((await store.existingMailboxAccessKey('alice', 'INBOX'))?.equals(key), 'the pool reconnects by itself: the same key');
  t.same(await store.modseqOpen('alice', 'INBOX', 1), before, 'and the same mod-sequence state');
  t.equal(JSON.parse(readFileSync(path.join(server.dir, 'postgres.json'), 'utf8')).port, server.port, 'on its old port');
  await store.close();
});

t.test('postgres.sh: stop is idempotent, a running server is not started twice, --dir is checked', async (t) => {
  const script = path.join(import.meta.dirname, '..', 'scripts', 'postgres.sh');
  const run = (...args: string[]) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile('bash', [script, ...args], (err, _stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stderr }));
    });
  const twice = await run('start', '--dir', server.dir);
  t.not(twice.code, 0, 'start on a running server fails');
  t.match(twice.stderr, /a server is already running in/);
  t.match((await run('start', '--dir', '/tmp/bad dir')).stderr, /--dir must consist of/);
  t.equal((await run('stop', '--dir', path.join(server.dir, 'no-such'))).code, 0, 'stop of a directory that is not there succeeds');
  t.equal((await run('missing')).code, 0);
  t.equal((await run('nonsense')).code, 64, 'usage');
});
