/**
 * FUTURERELEASE with the PostgreSQL store, through gateway processes (each its own
 * dataDir) on one real PostgreSQL in front of the real legacy Postfix and Dovecot:
 * - the operator's queue commands and XCANCEL act from one instance on messages held
 *   through another (the content is in the database, no instance's dataDir);
 * - issue 18 scenario 4: 200 messages held through A and B, A killed with SIGKILL while
 *   releasing; every message reaches the recipient, none lost, and a second copy only of
 *   a message A had in the content-end window ("committing", README);
 * - a release slower than the lease keeps its claim (renewed) while another instance runs;
 * - issue 18 scenario 7: messages held and a URL issued with the SQLite store are
 *   released and verify after `store copy-sqlite`, through another gateway.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { startLegacyStack, subjectCounts, type LegacyStack } from './helpers/stack.js';
import { metricValue, repoRoot, startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { query, startPostgres } from './helpers/postgres.js';

const server = await startPostgres();
t.teardown(() => server.stop());
let stack: LegacyStack;
t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
});
t.teardown(async () => {
  await stack?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const OWN_SENDER = { senderPolicy: { mode: 'own', domains: ['example.org'] } };
const heldId = (text: string) => /held as ([0-9a-f]+)/.exec(text)?.[1];

function pgConfig(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    store: { kind: 'postgres', url, poolSize: 4, ...extra },
    submission: OWN_SENDER,
  };
}

/** One held message by DATA (pipelined); the final reply, or undefined when the connection died first. */
async function submitHeld(c: RawSmtp, hold: string, subject: string, body = 'held\r\n'): Promise<{ code: number; text: string } | undefined> {
  try {
    c.write(`MAIL FROM:<alice@example.org> ${hold}\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n`);
    for (let i = 0; i < 3; i++) {
      const r = await c.reply(30_000);
      if (r === undefined || (i < 2 && r.code !== 250) || (i === 2 && r.code !== 354)) return r;
    }
    c.write(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ${subject}\r\n\r\n${body}.\r\n`);
    return await c.reply(30_000);
  } catch {
    return undefined;
  }
}

/** Waits until every subject is in bob's INBOX (or the time is up); the counts. */
async function waitForSubjects(prefix: string, subjects: Iterable<string>, timeoutMs: number): Promise<Map<string, number>> {
  const want = [...subjects];
  const until = Date.now() + timeoutMs;
  for (;;) {
    const counts = await subjectCounts(stack, 'bob', prefix);
    if (want.every((s) => counts.has(s)) || Date.now() > until) return counts;
    await sleep(500);
  }
}

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(repoRoot, 'dist', 'main.js'), ...args], (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Held content files in a gateway's dataDir (none with the PostgreSQL store). */
function spoolFiles(gw: RunningGateway): string[] {
  try {
    return readdirSync(path.join(gw.dir, 'data', 'spool', 'msg'));
  } catch {
    return [];
  }
}

/**
 * A loopback TCP proxy to 127.0.0.1:targetPort that passes what its clients send at about
 * bytesPerSecond (replies unthrottled): an MTA that takes its time to read a message.
 */
async function slowProxy(targetPort: number, bytesPerSecond: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => {
      client.pause();
      upstream.write(chunk);
      setTimeout(() => client.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    client.on('end', () => upstream.end());
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', drop);
      s.on('close', drop);
    }
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: (srv.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

t.test('queue list/show/release/cancel and XCANCEL from one instance on messages held through another', async (t) => {
  const url = await server.createDatabase();
  const [a, b] = await Promise.all([startGateway(stack, { plaintext: true, config: pgConfig(url) }), startGateway(stack, { plaintext: true, config: pgConfig(url) })]);
  t.teardown(async () => {
    await a.stop();
    await b.stop();
  });
  const prefix = `anyqueue-${Date.now()}-`;
  const c = await RawSmtp.authenticated(a.submissionPort, { ehlo: 'phone.example.org' });
  const ids: string[] = [];
  for (const name of ['release', 'cancel', 'xcancel']) {
    const r = await submitHeld(c, 'HOLDFOR=3600', `${prefix}${name}`);
    t.equal(r?.code, 250, `held through A: ${r?.text}`);
    ids.push(heldId(r!.text)!);
  }
  c.close();
  const [releaseId, cancelId, xcancelId] = ids as [string, string, string];
  t.same(spoolFiles(a), [], "nothing in A's dataDir: the content is in the database");
  t.equal(Number((await query<{ n: string }>(url, 'SELECT COUNT(DISTINCT id) AS n FROM held_content'))[0]!.n), 3, 'three messages in held_content');

  const list = await cli('queue', 'list', '--config', b.configFile);
  t.equal(list.code, 0, list.stderr);
  for (const id of ids) t.match(list.stdout, new RegExp(`^${id} +held`, 'm'), `B's queue list shows ${id}`);
  const show = await cli('queue', 'show', cancelId, '--config', b.configFile);
  t.match(show.stdout, /recipient: <bob@example\.org> pending/);
  t.match(show.stdout, /content: in the store \(held_content/, 'queue show: where the content is');

  const cancelled = await cli('queue', 'cancel', cancelId, '--config', b.configFile);
  t.equal(cancelled.code, 0, cancelled.stderr);
  t.same(await query(url, 'SELECT id FROM held_content WHERE id = $1', [cancelId]), [], 'cancelled from B: its content is gone too');
  const bSession = await RawSmtp.authenticated(b.submissionPort, { ehlo: 'phone.example.org' });
  t.match((await bSession.command(`XCANCEL ${xcancelId}`)).text, /^250 2\.0\.0 /, 'XCANCEL through B of a message held through A');
  t.match((await bSession.command(`XCANCEL ${xcancelId}`)).text, /^550 5\.0\.0 /, 'twice: unknown');
  bSession.close();
  t.same(await query(url, 'SELECT id FROM held_messages ORDER BY id'), [{ id: releaseId }], 'one message left');

  const released = await cli('queue', 'release', releaseId, '--config', b.configFile);
  t.equal(released.code, 0, released.stderr);
  const counts = await waitForSubjects(prefix, [`${prefix}release`], 30_000);
  t.equal(counts.get(`${prefix}release`), 1, 'released from B: delivered once');
  t.equal(counts.get(`${prefix}cancel`), undefined, 'the cancelled ones are not delivered');
  t.equal(counts.get(`${prefix}xcancel`), undefined);
  for (let i = 0; i < 20 && (await query(url, 'SELECT 1 FROM held_content')).length > 0; i++) await sleep(250);
  t.same(await query(url, 'SELECT id FROM held_content'), [], 'no content left in the database');
});

t.test('a recipient refused at release: the DSN is built from the content in the database and itself held there', async (t) => {
  const url = await server.createDatabase();
  const a = await startGateway(stack, { plaintext: true, config: pgConfig(url) });
  t.teardown(() => a.stop());
  const aliceBefore = await stack.messageCount('alice');
  const c = await RawSmtp.authenticated(a.submissionPort, { ehlo: 'phone.example.org' });
  const subject = `pg-refused-${Date.now()}`;
  t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=1')).code, 250);
  t.equal((await c.command('RCPT TO:<nobody@example.org>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  t.match((await c.command(`From: alice@example.org\r\nTo: nobody@example.org\r\nSubject: ${subject}\r\n\r\nhi\r\n.`)).text, /^250 .*held as/);
  c.close();
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1, 20_000)).toString('latin1');
  t.match(dsn, /Final-Recipient: rfc822;\s*nobody@example\.org/i, 'a DSN for the refused recipient');
  t.match(dsn, new RegExp(`Subject: ${subject}`), "with the original's headers, read from the database");
  for (let i = 0; i < 40 && (await query(url, 'SELECT 1 FROM held_messages')).length > 0; i++) await sleep(250);
  t.same(await query(url, 'SELECT id FROM held_messages'), [], 'message and DSN both gone from the index');
  t.same(await query(url, 'SELECT DISTINCT id FROM held_content'), [], 'and from the content table');
  t.same(spoolFiles(a), [], 'never in the dataDir');
});

t.test('scenario 4: 200 messages held through A and B; A killed with SIGKILL while releasing; each delivered, none lost', async (t) => {
  const url = await server.createDatabase();
  // A short lease, so B takes over A's claims within seconds of the kill.
  const LEASE_SECONDS = 6;
  const config = pgConfig(url, { releaseLeaseSeconds: LEASE_SECONDS });
  // A reaches Postfix at 400 KB/s a connection (a 20 KB message in some 50 ms), so that it
  // has releases under way at any moment it is killed; B directly.
  const proxy = await slowProxy(stack.smtpPort, 400 * 1024);
  t.teardown(() => proxy.close());
  const [a, b] = await Promise.all([
    startGateway({ ...stack, smtpPort: proxy.port }, { plaintext: true, config }),
    startGateway(stack, { plaintext: true, config }),
  ]);
  t.teardown(async () => {
    await a.stop('SIGKILL');
    await b.stop();
  });
  const prefix = `scenario4-${Date.now()}-`;
  const count = 200;
  // 20 KB each.
  const body = `${'y'.repeat(998)}\r\n`.repeat(20);
  // All due at one second, a few seconds after the last is held.
  const dueAt = new Date(Math.ceil((Date.now() + 12_000) / 1000) * 1000);
  const hold = `HOLDUNTIL=${dueAt.toISOString().replace(/\.\d{3}Z$/, 'Z')}`;
  const subjectOf = new Map<string, string>();
  const acked = new Set<string>();
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      const c = await RawSmtp.authenticated((i % 2 ? b : a).submissionPort, { ehlo: 'phone.example.org' });
      while (next < count) {
        const subject = `${prefix}${next++}`;
        const r = await submitHeld(c, hold, subject, body);
        if (r?.code === 250) {
          acked.add(subject);
          subjectOf.set(heldId(r.text)!, subject);
        }
      }
      c.close();
    }),
  );
  t.equal(acked.size, count, `all ${count} held, half through each`);
  t.ok(Date.now() < dueAt.getTime(), 'all held before they fall due');
  t.same([...spoolFiles(a), ...spoolFiles(b)], [], "no content in either instance's dataDir");

  // Kill A once it has released a few: it then has releases under way.
  const releasedBy = (gw: RunningGateway) => gw.logs.filter((l) => l.includes('"held message released"')).length;
  const waitUntil = dueAt.getTime() + 30_000;
  while (releasedBy(a) < 10 && Date.now() < waitUntil) await sleep(10);
  const aReleased = releasedBy(a);
  await a.stop('SIGKILL');
  t.ok(aReleased >= 10, `A released ${aReleased} before it was killed`);
  // A's claims are the ones whose lease nobody renews: B renews its own every third of the lease.
  type Claim = { id: string; state: string; claimed_until: string };
  const claims = () => query<Claim>(url, "SELECT id, state, claimed_until FROM held_messages WHERE state IN ('sending', 'committing')");
  const first = await claims();
  await sleep((LEASE_SECONDS * 1000) / 2);
  const second = new Map((await claims()).map((c) => [c.id, c]));
  const aClaims = first.filter((c) => second.get(c.id)?.claimed_until === c.claimed_until);
  const aCommitting = aClaims.filter((c) => c.state === 'committing').map((c) => subjectOf.get(c.id) ?? c.id);
  t.ok(aClaims.length >= 1, `A was killed with ${aClaims.length} releases under way (${aCommitting.length} of them handing the content end to the MTA)`);

  const counts = await waitForSubjects(prefix, acked, 120_000);
  const missing = [...acked].filter((s) => !counts.has(s));
  const twice = [...counts].filter(([, k]) => k > 1).map(([s]) => s);
  const outside = twice.filter((s) => !aCommitting.includes(s));
  const resent = metricValue(await b.metrics(), 'lemonade_futurerelease_messages_total', { event: 'resent_after_crash' });
  t.comment(
    `scenario 4: ${count} held (A and B), A killed after releasing ${aReleased}, with ${aClaims.length} claims ` +
      `(${aClaims.length - aCommitting.length} sending, ${aCommitting.length} committing); delivered ${counts.size}, lost ${missing.length}, ` +
      `delivered twice ${twice.length} (${twice.join(', ') || 'none'}); B's resent_after_crash ${resent}`,
  );
  t.same(missing, [], 'no held message lost');
  t.same(outside, [], 'a second copy only of a message A was killed handing to the MTA (committing)');
  t.equal(resent, aCommitting.length, "B counted each of A's committing messages it took over as resent_after_crash");
  for (let i = 0; i < 40 && (await query(url, 'SELECT 1 FROM held_messages LIMIT 1')).length > 0; i++) await sleep(250);
  t.same(await query(url, 'SELECT id, state FROM held_messages'), [], 'the spool index is empty');
  t.same(await query(url, 'SELECT DISTINCT id FROM held_content'), [], 'and so is the content table');
});

t.test('a release slower than the lease renews it: the other instance never takes the message over', async (t) => {
  const url = await server.createDatabase();
  const LEASE_SECONDS = 3;
  const config = pgConfig(url, { releaseLeaseSeconds: LEASE_SECONDS });
  // A reaches Postfix through a proxy passing 100 KB/s: 900 KB take some 9 s, three leases.
  const proxy = await slowProxy(stack.smtpPort, 100 * 1024);
  t.teardown(() => proxy.close());
  const a = await startGateway({ ...stack, smtpPort: proxy.port }, { plaintext: true, config });
  t.teardown(() => a.stop());
  const subject = `slow-release-${Date.now()}`;
  const c = await RawSmtp.authenticated(a.submissionPort, { ehlo: 'phone.example.org' });
  const r = await submitHeld(c, 'HOLDFOR=1', subject, `${'s'.repeat(998)}\r\n`.repeat(900));
  c.close();
  t.equal(r?.code, 250, r?.text ?? 'no reply');
  const id = heldId(r!.text)!;
  // A claims it; then B starts, whose passes would take over a claim whose lease ran out.
  let claimedAt = 0;
  let state: string | undefined = 'held';
  for (const until = Date.now() + 60_000; claimedAt === 0 && state !== undefined && Date.now() < until; ) {
    state = (await query<{ state: string }>(url, 'SELECT state FROM held_messages WHERE id = $1', [id]))[0]?.state;
    if (state === 'sending' || state === 'committing') claimedAt = Date.now();
    else await sleep(50);
  }
  t.ok(claimedAt > 0, `A claimed it (last seen: ${state ?? 'gone'})`);
  const b = await startGateway(stack, { plaintext: true, config });
  t.teardown(() => b.stop());
  for (let i = 0; i < 600 && (await query(url, 'SELECT 1 FROM held_messages WHERE id = $1', [id])).length > 0; i++) await sleep(100);
  const took = Date.now() - claimedAt;
  t.ok(took > 2 * LEASE_SECONDS * 1000, `the release took ${(took / 1000).toFixed(1)} s, more than two leases of ${LEASE_SECONDS} s`);
  const counts = await waitForSubjects(subject, [subject], 30_000);
  t.equal(counts.get(subject), 1, 'delivered once');
  const releasedBy = (gw: RunningGateway) => gw.logs.some((l) => l.includes('"held message released"') && l.includes(id));
  t.ok(releasedBy(a), 'by A, the claimant');
  t.notOk(releasedBy(b), 'not by B');
  const event = async (gw: RunningGateway, e: string) => metricValue(await gw.metrics(), 'lemonade_futurerelease_messages_total', { event: e });
  t.equal(await event(b, 'resent_after_crash'), 0, 'B took nothing over');
  t.equal(await event(a, 'claim_lost'), 0, 'A never lost its claim');
});

/** LOGIN over implicit TLS through gw, as user (every test user's password is "password"). */
async function imapLogin(gw: RunningGateway, user: string): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(r.at(-1) ?? '')) throw new Error(r.join('\n'));
  return c;
}

t.test('scenario 7: messages held and a URL issued with SQLite are released and verify after store copy-sqlite, through another gateway', async (t) => {
  const prefix = `scenario7-${Date.now()}-`;
  const old = await startGateway(stack, { plaintext: true, config: { submission: OWN_SENDER } });
  const dataDir = path.join(old.dir, 'data');
  const c = await RawSmtp.authenticated(old.submissionPort, { ehlo: 'phone.example.org' });
  const subjects: string[] = [];
  for (let i = 0; i < 5; i++) {
    const subject = `${prefix}${i}`;
    // Due some seconds after the move (the copy and two starts take a few).
    const r = await submitHeld(c, 'HOLDFOR=20', subject, `${'z'.repeat(998)}\r\n`.repeat(i * 100 + 1));
    t.equal(r?.code, 250, `held with SQLite: ${r?.text}`);
    subjects.push(subject);
  }
  c.close();
  const raw = Buffer.from('From: alice@example.org\r\nTo: bob@example.org\r\nSubject: moved\r\n\r\nIssued before the move.\r\n');
  const src = await stack.append('alice', 'INBOX', raw);
  const alice = await imapLogin(old, 'alice');
  const g = await alice.command('g', `GENURLAUTH "imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid};URLAUTH=user+bob" INTERNAL`);
  const issued = /^\* GENURLAUTH "([^"]+)"$/.exec(g[0] ?? '')?.[1];
  t.ok(issued, 'a URL issued with the SQLite store');
  alice.close();
  await old.stop();

  const url = await server.createDatabase();
  const configFile = path.join(old.dir, 'copy.yaml');
  writeFileSync(configFile, `hostname: localhost\ndataDir: ${dataDir}\nstore:\n  kind: postgres\n  url: ${url}\n`);
  const copied = await cli('store', 'copy-sqlite', '--config', configFile);
  t.equal(copied.code, 0, copied.stderr);
  t.match(copied.stdout, /5 held messages with their content/);

  // Not the old gateway's dataDir: any instance on the database has the content.
  const next = await startGateway(stack, { plaintext: true, config: pgConfig(url) });
  t.teardown(() => next.stop());
  const bob = await imapLogin(next, 'bob');
  const f = await bob.command('f', `URLFETCH "${issued}"`);
  t.ok(f.some((l) => l.includes('Issued before the move.')), 'the URL issued before the move verifies after it, on another gateway');
  bob.close();
  const counts = await waitForSubjects(prefix, subjects, 60_000);
  t.same(
    subjects.map((s) => counts.get(s)),
    subjects.map(() => 1),
    'every message held before the move is delivered once after it',
  );
});
