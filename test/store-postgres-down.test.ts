/**
 * Issue 18, "Failure behaviour" and scenario 5: the store unavailable.
 *
 * First the pieces: which failures mean "the store cannot be used now"
 * (store/availability.ts), against made-up errors of every kind and real ones (a stopped
 * PostgreSQL, a silent one behind a stalling proxy, a locked SQLite file); the guard's one
 * log line per outage, its metrics and its probe.
 *
 * Then scenario 5 with a gateway on a real PostgreSQL in front of a real Dovecot and
 * Postfix: PostgreSQL stopped mid-run. Commands that need the store get NO [UNAVAILABLE]
 * or 451 4.3.0, plain sessions go on, /metrics says the store is down; PostgreSQL started
 * again, the same gateway process serves them all again, logs its return, and delivers
 * the messages held before the outage.
 */
import t from 'tap';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import Database from 'better-sqlite3';
import {
  guardStore,
  isStoreUnavailable,
  StoreAvailability,
  StoreUnavailableError,
  unavailableReason,
} from '../src/store/availability.js';
import { PostgresStore } from '../src/store/postgres.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { ModseqStateGone, type Store } from '../src/store/store.js';
import { registry } from '../src/metrics/metrics.js';
import type { Logger } from '../src/log/logger.js';
import { metricValue, startGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { masterClient, startLegacyStack } from './helpers/stack.js';
import { startPostgres } from './helpers/postgres.js';

t.comment(`loaded ${process.uptime().toFixed(1)} s into this file`);
const server = await startPostgres();
t.teardown(() => server.stop());

const coded = (code: string, message = 'x'): Error => Object.assign(new Error(message), { code });

/** A pino logger whose lines (parsed) land in an array. */
function capturingLogger(): { log: Logger; lines: Array<{ level: number; msg: string; [k: string]: unknown }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as { level: number; msg: string });
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink) as unknown as Logger, lines };
}

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await registry.metrics(), name, labels);
}

t.test('classification: what means "the store cannot be used now", and what does not', async (t) => {
  const unavailable: Array<[string, unknown, string]> = [
    ['connection refused', coded('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432'), 'connection'],
    ['connection reset', coded('ECONNRESET'), 'connection'],
    ['host unreachable', coded('EHOSTUNREACH'), 'connection'],
    ['socket timeout', coded('ETIMEDOUT'), 'timeout'],
    ['57P01 admin_shutdown', coded('57P01', 'terminating connection due to administrator command'), 'shutdown'],
    ['57P03 cannot_connect_now', coded('57P03', 'the database system is starting up'), 'shutdown'],
    ['08006 connection_failure', coded('08006'), 'connection'],
    ['08001 unable to connect', coded('08001'), 'connection'],
    ['57014 statement_timeout', coded('57014', 'canceling statement due to statement timeout'), 'timeout'],
    ['53300 too_many_connections', coded('53300'), 'resources'],
    ['53100 disk_full', coded('53100'), 'resources'],
    ['58030 io_error', coded('58030'), 'io'],
    ['25006 a standby after failover', coded('25006'), 'read_only'],
    ['pg: connection ended', new Error('Connection terminated unexpectedly'), 'connection'],
    ['pg: query_timeout', new Error('Query read timeout'), 'timeout'],
    ['pg-pool: connectionTimeoutMillis', new Error('timeout exceeded when trying to connect'), 'timeout'],
    ['pg-pool: connect timeout wrapping the socket error', new Error('Connection terminated due to connection timeout', { cause: coded('ECONNRESET') }), 'timeout'],
    ['wrapped in a cause', new Error('cannot open the store', { cause: coded('ECONNREFUSED') }), 'connection'],
    ['SQLITE_BUSY', coded('SQLITE_BUSY', 'database is locked'), 'busy'],
    ['SQLITE_BUSY_SNAPSHOT (extended)', coded('SQLITE_BUSY_SNAPSHOT'), 'busy'],
    ['SQLITE_IOERR_FSYNC (extended)', coded('SQLITE_IOERR_FSYNC', 'disk I/O error'), 'io'],
    ['SQLITE_FULL', coded('SQLITE_FULL', 'database or disk is full'), 'resources'],
    ['SQLITE_READONLY', coded('SQLITE_READONLY'), 'read_only'],
    ['already classified', new StoreUnavailableError('getMeta', 'timeout', new Error('Query read timeout')), 'timeout'],
  ];
  for (const [what, err, reason] of unavailable) {
    t.equal(unavailableReason(err), reason, `${what}: ${reason}`);
    t.ok(isStoreUnavailable(err), `${what}: unavailable`);
  }
  const other: Array<[string, unknown]> = [
    ['a state dropped by UIDVALIDITY', new ModseqStateGone(3)],
    ['23505 unique_violation', coded('23505', 'duplicate key value')],
    ['42P01 undefined_table', coded('42P01')],
    ['22P02 invalid input', coded('22P02')],
    ['40P01 deadlock (retry, not an outage)', coded('40P01')],
    ['SQLITE_CONSTRAINT_UNIQUE', coded('SQLITE_CONSTRAINT_UNIQUE')],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['an ENOENT (no network code)', coded('ENOENT')],
    ['not an Error', 'ECONNREFUSED'],
    ['undefined', undefined],
  ];
  for (const [what, err] of other) t.notOk(isStoreUnavailable(err), `${what}: not unavailable`);
});

t.test('the guard: one log line when the store goes, one when it is back; the gauge, the counter, the probe', async (t) => {
  let failing: Error | undefined = coded('ECONNREFUSED');
  let probes = 0;
  const fake = {
    calls: 0,
    async getMeta(key: string): Promise<string | undefined> {
      this.calls++;
      if (failing) throw failing;
      return key;
    },
    async modseqState(id: number): Promise<never> {
      throw new ModseqStateGone(id);
    },
    async mailboxLock(): Promise<{ release(): Promise<void> }> {
      return { release: async () => { if (failing) throw failing; } };
    },
    async close(): Promise<void> {},
    where: 'fake',
  };
  const { log, lines } = capturingLogger();
  const availability = new StoreAvailability(
    log,
    async () => {
      probes++;
      if (failing) throw failing;
    },
    { probeMinMs: 50, probeMaxMs: 200 },
  );
  const store = guardStore(fake, availability);
  t.equal(await metric('lemonade_store_up'), 1, 'up once opened');
  t.equal(store.where, 'fake', 'other properties pass through');
  const before = await metric('lemonade_store_errors_total', { operation: 'getMeta', reason: 'connection' });

  for (let i = 0; i < 20; i++) {
    const err = await store.getMeta('k').then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!(err instanceof StoreUnavailableError) || err.operation !== 'getMeta' || err.reason !== 'connection') t.fail(`call ${i}: ${String(err)}`);
  }
  t.equal(availability.up, false);
  t.equal(await metric('lemonade_store_up'), 0, 'the gauge says down');
  t.equal((await metric('lemonade_store_errors_total', { operation: 'getMeta', reason: 'connection' })) - before, 20, 'every failed call counted, by operation');
  const down = lines.filter((l) => /^store unavailable/.test(l.msg));
  t.equal(down.length, 1, 'twenty failed calls, one log line');
  t.match(down[0], { level: 50, operation: 'getMeta', reason: 'connection' });
  await t.rejects(store.modseqState(7), ModseqStateGone, 'an error of the call itself is passed on as it is');
  t.equal(availability.up, true, '...and shows that the store answers');
  t.equal(lines.filter((l) => l.msg === 'store available again').length, 1);

  // Down again; this time only the probe finds it back (no other call comes).
  const lock = (await store.mailboxLock())!;
  await t.rejects(store.getMeta('k'), StoreUnavailableError);
  await t.rejects(lock.release(), StoreUnavailableError, "a lock's release() is guarded too");
  const probesWhileDown = probes;
  failing = undefined;
  const until = Date.now() + 3000;
  while (!availability.up && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.ok(availability.up, 'the probe noticed the store back');
  t.ok(probes > probesWhileDown, `${probes - probesWhileDown} probe(s) after it came back`);
  t.equal(await metric('lemonade_store_up'), 1);
  t.equal(lines.filter((l) => /^store unavailable/.test(l.msg)).length, 2, 'two outages, two lines');
  const back = lines.filter((l) => l.msg === 'store available again');
  t.equal(back.length, 2);
  t.type(back[1]!.downSeconds, 'number', 'with how long it lasted');
  const calls = fake.calls;
  const probesUp = probes;
  await new Promise((r) => setTimeout(r, 300));
  t.equal(probes, probesUp, 'no probing while up');
  t.equal(fake.calls, calls, 'nor other calls');
  await store.close();
});

t.test('a real PostgreSQL stopped, then silent: calls fail as unavailable, within store.timeoutMs', async (t) => {
  const url = await server.createDatabase();
  // A TCP proxy in front of the server that can go silent (forwards nothing, closes nothing).
  const sockets = new Set<net.Socket>();
  let stalled = false;
  const proxy = net.createServer((client) => {
    const upstream = net.connect(server.port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (d) => stalled || upstream.write(d));
    upstream.on('data', (d) => stalled || client.write(d));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    proxy.close();
  });
  const viaProxy = new URL(url);
  viaProxy.port = String((proxy.address() as net.AddressInfo).port);
  const { log, lines } = capturingLogger();
  const raw = await PostgresStore.open({ url: viaProxy.toString(), poolSize: 2, timeoutMs: 1500 });
  const store = guardStore<Store>(raw, new StoreAvailability(log, () => raw.getMeta('probe'), { probeMinMs: 100, probeMaxMs: 200 }));
  const key = await store.mailboxAccessKey('alice', 'INBOX');

  stalled = true;
  let started = Date.now();
  const err = await store.existingMailboxAccessKey('alice', 'INBOX').catch((e: unknown) => e);
  const took = Date.now() - started;
  t.ok(err instanceof StoreUnavailableError, `a silent database: ${String(err)}`);
  t.equal((err as StoreUnavailableError).reason, 'timeout');
  t.ok(took >= 1400 && took < 4000, `answered after ${took} ms (timeoutMs 1500)`);
  started = Date.now();
  const inTx = await store.modseqOpen('alice', 'Other', 5).catch((e: unknown) => e);
  t.ok(isStoreUnavailable(inTx), `a transaction on a silent database fails too (${String(inTx)})`);
  t.ok(Date.now() - started < 4000, `within one timeout, no ROLLBACK waited for (${Date.now() - started} ms)`);

  stalled = false;
  for (const s of sockets) s.destroy(); // the silent connections are dropped; new ones work
  const until = Date.now() + 10_000;
  let again: Buffer | undefined;
  while (Date.now() < until) {
    again = await store.existingMailboxAccessKey('alice', 'INBOX').catch(() => undefined);
    if (again) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(again?.equals(key), 'the same store works once the network does');

  // Stopped: refused at once (no timeout to wait), and back with the server.
  await server.halt();
  started = Date.now();
  const refused = await store.getMeta('x').catch((e: unknown) => e);
  t.ok(refused instanceof StoreUnavailableError, String(refused));
  t.ok(Date.now() - started < 1500, `a stopped server is answered at once (${Date.now() - started} ms)`);
  await server.start();
  const back = Date.now() + 10_000;
  while (Date.now() < back && lines.filter((l) => l.msg === 'store available again').length < 2) await new Promise((r) => setTimeout(r, 100));
  t.equal(lines.filter((l) => /^store unavailable/.test(l.msg)).length, 2, 'two outages (silent, stopped), one line each');
  t.equal(lines.filter((l) => l.msg === 'store available again').length, 2, 'and their ends, found by the probe');
  t.ok((await store.existingMailboxAccessKey('alice', 'INBOX'))?.equals(key));
  await store.close();
});

t.test('SQLite: a file locked past the busy timeout is unavailable, not a bug', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-sqlite-busy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'store.sqlite');
  const raw = await SqliteStore.open(file);
  const { log } = capturingLogger();
  const store = guardStore<Store>(raw, new StoreAvailability(log, () => raw.getMeta('probe')));
  await store.setMeta('a', '1');
  // Another process's writer holding the file (here: another connection in this one).
  const other = new Database(file, { timeout: 0 });
  other.exec('BEGIN EXCLUSIVE');
  const err = await store.setMeta('a', '2').catch((e: unknown) => e);
  t.ok(err instanceof StoreUnavailableError, String(err));
  t.equal((err as StoreUnavailableError).reason, 'busy');
  other.exec('ROLLBACK');
  other.close();
  await store.setMeta('a', '3');
  t.equal(await store.getMeta('a'), '3', 'works once the lock is gone');
  await store.close();
});

t.test('scenario 5: PostgreSQL stopped and started under a running gateway', async (t) => {
  const stack = await startLegacyStack({ postfix: true });
  t.teardown(() => stack.stop());
  const url = await server.createDatabase();
  const gw = await startGateway(stack, {
    config: {
      store: { kind: 'postgres', url, poolSize: 4, timeoutMs: 3000 },
      submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } },
    },
  });
  t.teardown(() => gw.stop());
  const login = (user: string) => RawImap.loggedIn(gw.imapsPort, user);
  const smtp = () => RawSmtp.authenticated(gw.submissionsPort, { tls: true });
  const tagged = (lines: string[]) => lines.at(-1)!;

  // Before: a URL issued, and three messages held, due while the database is away.
  const raw = Buffer.from('From: alice@example.org\r\nTo: bob@example.org\r\nSubject: before\r\n\r\nIssued before the outage.\r\n');
  const src = await stack.append('alice', 'INBOX', raw);
  const base = `imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}`;
  const alice = await login('alice');
  const issued = await alice.command('g', `GENURLAUTH "${base};URLAUTH=user+bob" INTERNAL`);
  t.match(tagged(issued), /^g OK/);
  const forBob = /^\* GENURLAUTH "([^"]+)"$/.exec(issued[0]!)![1]!;
  const forSubmit = /^\* GENURLAUTH "([^"]+)"$/.exec((await alice.command('g', `GENURLAUTH "${base};URLAUTH=submit+alice" INTERNAL`))[0]!)![1]!;
  const forAlice = /^\* GENURLAUTH "([^"]+)"$/.exec((await alice.command('g', `GENURLAUTH "${base};URLAUTH=user+alice" INTERNAL`))[0]!)![1]!;
  alice.close();
  // A CONDSTORE session open across the outage.
  const condstore = await login('alice');
  t.match(tagged(await condstore.command('s', 'SELECT INBOX (CONDSTORE)')), /^s OK/);
  const bobAtStart = await stack.messageCount('bob');
  const heldIds: string[] = [];
  {
    const c = await smtp();
    for (let i = 0; i < 3; i++) {
      t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=6')).code, 250);
      t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
      t.equal((await c.command('DATA')).code, 354);
      const done = await c.command(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: held ${i}\r\n\r\nheld before the outage\r\n.`, 20_000);
      t.match(done.text, /^250 2\.0\.0 Ok: held as /, `held ${i}`);
      heldIds.push(/held as ([0-9a-f]+)/.exec(done.text)![1]!);
    }
    c.close();
  }

  const outageStarted = Date.now();
  await server.halt();
  t.comment('PostgreSQL stopped');

  t.test('while it is down: what needs the store is refused for now, the rest works', async (t) => {
    const alice = await login('alice');
    t.match(tagged(await alice.command('g', `GENURLAUTH "${base};URLAUTH=user+bob" INTERNAL`)), /^g NO \[UNAVAILABLE\] /, 'GENURLAUTH');
    t.match(tagged(await alice.command('r', 'RESETKEY')), /^r NO \[UNAVAILABLE\] /, 'RESETKEY');
    const bob = await login('bob');
    const fetched = await bob.command('f', `URLFETCH "${forBob}"`);
    t.match(tagged(fetched), /^f NO \[UNAVAILABLE\] /, 'URLFETCH');
    t.notOk(fetched.some((l) => /^\* URLFETCH .* NIL$/.test(l)), 'not NIL: that would say the URL is bad');
    bob.close();

    // A CONDSTORE SELECT cannot have its mod-sequences: refused, and no mailbox is left selected.
    const cond = await alice.command('s', 'SELECT INBOX (CONDSTORE)');
    t.match(tagged(cond), /^s NO \[UNAVAILABLE\] /, 'SELECT (CONDSTORE)');
    const after = tagged(await alice.command('x', 'FETCH 1 (FLAGS)'));
    t.match(after, /^x (NO|BAD) /, `after it no mailbox is selected, upstream too: ${after}`);
    t.match(tagged(await alice.command('st', 'STATUS INBOX (MESSAGES HIGHESTMODSEQ)')), /^st NO \[UNAVAILABLE\] /, 'STATUS HIGHESTMODSEQ');
    t.match(tagged(await alice.command('st2', 'STATUS INBOX (MESSAGES)')), /^st2 OK/, 'STATUS without it');

    // CATENATE with a URLAUTH URL: its key is in the store.
    alice.write('c APPEND INBOX CATENATE (URL "' + forAlice + '")\r\n');
    t.match(tagged(await alice.until('c', 20_000)), /^c NO \[UNAVAILABLE\] /, 'CATENATE with a URLAUTH URL');
    // A plain APPEND goes on, without the APPENDUID only the store's lock makes certain.
    const msg = 'Subject: appended during\r\n\r\nx\r\n';
    alice.write(`a APPEND INBOX {${msg.length}}\r\n`);
    t.match(await alice.line(), /^\+/);
    alice.write(`${msg}\r\n`);
    const appended = tagged(await alice.until('a', 20_000));
    t.match(appended, /^a OK/, 'plain APPEND works');
    t.notMatch(appended, /APPENDUID/, 'with no UID code rather than a guessed one');
    alice.close();

    // The session that enabled CONDSTORE before: what needs mod-sequences is refused for now.
    // Nothing changed: the session's own view answers, no store write needed.
    t.match(tagged(await condstore.command('f0', 'FETCH 1:* (FLAGS) (CHANGEDSINCE 1)')), /^f0 OK/, 'FETCH CHANGEDSINCE with nothing new');
    // A change made elsewhere needs a new mod-sequence, which only the store can give.
    const direct = await masterClient(stack, 'alice');
    await direct.mailboxOpen('INBOX');
    await direct.messageFlagsAdd(String(src.uid), ['$Elsewhere'], { uid: true });
    await direct.logout();
    t.match(tagged(await condstore.command('f', 'FETCH 1:* (FLAGS) (CHANGEDSINCE 1)')), /^f NO \[UNAVAILABLE\] /, 'FETCH CHANGEDSINCE after a change elsewhere');
    t.match(tagged(await condstore.command('n', 'NOOP')), /^n OK/, 'the session goes on');

    // A session that never asks for mod-sequences: LOGIN, SELECT, FETCH as ever.
    const plain = await login('alice');
    const sel = await plain.command('s', 'SELECT INBOX');
    t.match(tagged(sel), /^s OK \[READ-WRITE\]/, 'plain SELECT works');
    t.ok(sel.some((l) => /^\* OK \[NOMODSEQ\]/.test(l)), 'with NOMODSEQ instead of a HIGHESTMODSEQ it cannot know');
    const body = await plain.command('f', `UID FETCH ${src.uid} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])`);
    t.match(tagged(body), /^f OK/, 'FETCH works');
    t.ok(body.some((l) => /Subject: before/.test(l)));
    t.match(tagged(await plain.command('n', 'STORE 1 +FLAGS (\\Flagged)')), /^n OK/, 'plain STORE works');
    plain.close();

    // Submission: plain works; what needs the store gets 451 4.3.0.
    const bobBefore = await stack.messageCount('bob');
    const c = await smtp();
    t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
    t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
    t.equal((await c.command('DATA')).code, 354);
    t.match((await c.command('From: alice@example.org\r\nSubject: during\r\n\r\nplain\r\n.', 20_000)).text, /^250 /, 'plain submission');
    t.equal(await stack.waitForMessageCount('bob', 'INBOX', bobBefore + 1), bobBefore + 1, 'and delivered');

    t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=60')).code, 250);
    t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
    t.equal((await c.command('DATA')).code, 354);
    const held = await c.command('From: alice@example.org\r\nSubject: held during\r\n\r\nnot committed\r\n.', 20_000);
    t.match(held.text, /^451 4\.3\.0 /, 'a FUTURERELEASE message that cannot be committed: 451 4.3.0, not acknowledged');

    t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
    t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
    t.match((await c.command(`BURL ${forSubmit} LAST`, 20_000)).text, /^451 4\.3\.0 /, 'BURL of our URL: 451 4.3.0');
    t.match((await c.command(`XCANCEL ${heldIds[0]}`)).text, /^451 4\.3\.0 /, 'XCANCEL: 451 4.3.0');
    t.equal((await c.command('NOOP')).code, 250, 'the session goes on');
    c.close();

    const m = await gw.metrics();
    t.equal(metricValue(m, 'lemonade_store_up'), 0, '/metrics: the store is down');
    t.ok(metricValue(m, 'lemonade_store_errors_total', { operation: 'existingMailboxAccessKey', reason: 'connection' }) >= 1, 'errors counted by operation');
    t.equal(gw.logs.filter((l) => l.includes('"msg":"store unavailable')).length, 1, 'one log line for the outage, however many calls failed');
    t.notOk(gw.logs.some((l) => l.includes('command handler failed') || l.includes('"level":60')), 'no handler failure or fatal line');
    t.equal(gw.proc.exitCode, null, 'the gateway runs on');
  });

  t.test('started again: the same process serves all of it, says so, and delivers what it held', async (t) => {
    // The held messages became due while the database was away.
    const wait = 6500 - (Date.now() - outageStarted);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await server.start();
    t.comment(`PostgreSQL started after ${((Date.now() - outageStarted) / 1000).toFixed(1)} s`);
    const until = Date.now() + 20_000;
    while (Date.now() < until && metricValue(await gw.metrics(), 'lemonade_store_up') !== 1) await new Promise((r) => setTimeout(r, 200));
    t.equal(metricValue(await gw.metrics(), 'lemonade_store_up'), 1, '/metrics: up again, without a restart');
    t.equal(gw.logs.filter((l) => l.includes('"msg":"store available again"')).length, 1, 'one log line for the return');

    const changed = await condstore.command('f', 'FETCH 1:* (FLAGS) (CHANGEDSINCE 1)', 20_000);
    t.match(tagged(changed), /^f OK/, 'FETCH CHANGEDSINCE in the session open across the outage');
    t.ok(changed.some((l) => /^\* [0-9]+ FETCH \(.*MODSEQ \([0-9]+\)/.test(l) && l.includes('$Elsewhere')), 'with the change made during the outage, and its mod-sequence');
    condstore.close();
    const alice = await login('alice');
    t.match(tagged(await alice.command('g', `GENURLAUTH "${base};URLAUTH=user+bob" INTERNAL`)), /^g OK/, 'GENURLAUTH');
    const sel = await alice.command('s', 'SELECT INBOX (CONDSTORE)');
    t.match(tagged(sel), /^s OK/, 'SELECT (CONDSTORE)');
    t.ok(sel.some((l) => /^\* OK \[HIGHESTMODSEQ [0-9]+\]/.test(l)), 'with its HIGHESTMODSEQ');
    alice.close();
    const bob = await login('bob');
    const fetched = await bob.command('f', `URLFETCH "${forBob}"`, 20_000);
    t.match(tagged(fetched), /^f OK/, 'URLFETCH of the URL issued before the outage');
    t.ok(fetched.some((l) => l.includes('Issued before the outage.')), 'with its content');
    bob.close();

    t.equal(await stack.waitForMessageCount('bob', 'INBOX', bobAtStart + 4, 45_000), bobAtStart + 4, 'the three messages held before the outage are delivered (and the plain one)');

    const c = await smtp();
    t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=60')).code, 250);
    t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
    t.equal((await c.command('DATA')).code, 354);
    const held = await c.command('From: alice@example.org\r\nSubject: held after\r\n\r\nx\r\n.', 20_000);
    t.match(held.text, /^250 2\.0\.0 Ok: held as /, 'FUTURERELEASE accepted again');
    const id = /held as ([0-9a-f]+)/.exec(held.text)![1]!;
    t.match((await c.command(`XCANCEL ${id}`)).text, /^250 /, 'and XCANCEL');
    c.close();
    t.equal(gw.proc.exitCode, null, 'one gateway process throughout');
  });
});
