/**
 * The release scheduler with a manual clock (days pass in milliseconds) against the real
 * legacy Postfix and Dovecot: a recipient the MTA refuses at release gets its sender a
 * DSN (RFC 3464); an MTA that stays down is retried with backoff until giveUpSeconds, and
 * then the sender is told; a store that goes away between the MTA's 250 and recording
 * it (the release recorded when it is back, not sent again); crash recovery of "sending" and "committing" rows (both
 * released again: nothing acknowledged is lost).
 *
 * Rows are put in the spool index directly here, as a submission would have left them:
 * the recipients refused at release are ones Postfix refuses at any time (it verified
 * the others at submission), which only a row made by hand can hold.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { SqliteStore } from '../src/store/sqlite.js';
import type { HeldMessage } from '../src/store/store.js';
import { SpoolFiles } from '../src/lemonade/futurerelease/spool.js';
import { ReleaseScheduler, newSpoolId } from '../src/lemonade/futurerelease/scheduler.js';
import { ManualClock } from '../src/lemonade/futurerelease/clock.js';
import { RelayPool } from '../src/smtp/relay-pool.js';
import { configureLogger } from '../src/log/logger.js';
import { StoreUnavailableError } from '../src/store/availability.js';

let stack: LegacyStack;
t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
});
t.teardown(async () => {
  await stack?.stop();
});

const HOUR = 3600_000;
const log = configureLogger('silent');

interface Rig {
  store: SqliteStore;
  files: SpoolFiles;
  pool: RelayPool;
  clock: ManualClock;
  scheduler: ReleaseScheduler;
  /** Spools a message as a submission would: file first, then its row. */
  hold(subject: string, to: string[], releaseAt: number, state?: HeldMessage['state']): Promise<string>;
  /** Moves the clock and waits for the release pass it starts. */
  step(ms: number): Promise<void>;
  close(): Promise<void>;
}

async function rig(): Promise<Rig> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-sched-'));
  const store = SqliteStore.open(path.join(dir, 'gateway.sqlite'));
  const files = new SpoolFiles(dir);
  await files.init();
  const pool = new RelayPool(
    { host: '127.0.0.1', port: stack.smtpPort, tls: 'none', tlsOptions: { rejectUnauthorized: true }, connectTimeoutMs: 2000 },
    { heloName: 'gateway.test', replyTimeoutMs: 10_000, poolSize: 2 },
  );
  const clock = new ManualClock(Date.now());
  const scheduler = new ReleaseScheduler(store, files, pool, clock, {
    concurrency: 4, retryInitialSeconds: 60, retryMaxSeconds: 3600, giveUpSeconds: 5 * 24 * 3600, hostname: 'gateway.test',
  }, log);
  return {
    store, files, pool, clock, scheduler,
    async hold(subject, to, releaseAt, state = 'held') {
      const id = newSpoolId();
      const w = files.create(id);
      w.write(Buffer.from(`From: alice@example.org\r\nTo: ${to.join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: <${id}@test>\r\n\r\nbody of ${subject}\r\n`));
      const size = await w.commit();
      await store.spoolInsert({
        id, user: 'alice', sender: 'alice@example.org', mailParams: [],
        recipients: to.map((address) => ({ address, params: [], status: 'pending' })),
        size, createdAt: clock.now(), releaseAt, holdRequest: 'for;60', nextAttemptAt: releaseAt, attempts: 0, state,
      });
      return id;
    },
    async step(ms) {
      clock.advance(ms);
      await new Promise((r) => setImmediate(r));
      await scheduler.settled();
    },
    async close() {
      await scheduler.stop();
      await pool.close();
      await store.close();
    },
  };
}

t.test('a recipient the MTA refuses at release: the others get it, the sender gets a DSN', async (t) => {
  const r = await rig();
  const subject = `refused-at-release-${Date.now()}`;
  const bobBefore = await stack.messageCount('bob');
  const aliceBefore = await stack.messageCount('alice');
  await r.hold(subject, ['bob@example.org', 'nobody@example.org'], r.clock.now() + HOUR);
  await r.scheduler.start();
  await r.step(30 * 60_000);
  t.equal(await stack.messageCount('bob'), bobBefore, 'not released half an hour early');
  await r.step(31 * 60_000);
  const delivered = (await stack.newestMessage('bob', bobBefore + 1)).toString('latin1');
  t.match(delivered, new RegExp(`Subject: ${subject}`), 'released when due');
  await r.step(1000);
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1)).toString('latin1');
  t.match(dsn, /Content-Type: multipart\/report;[^]*report-type="?delivery-status/i, 'a multipart/report DSN (RFC 6522)');
  t.match(dsn, /Final-Recipient: rfc822;\s*nobody@example\.org/i, 'for the refused recipient');
  t.match(dsn, /Action: failed/i);
  t.match(dsn, /Status: 5\.1\.1/, "with the MTA's enhanced code");
  t.match(dsn, /Diagnostic-Code: smtp;\s*550/i, "and its reply");
  t.notMatch(dsn, /Final-Recipient: rfc822;\s*bob@/i, 'nothing about the delivered one');
  t.match(dsn, new RegExp(`Subject: ${subject}`), 'the original headers returned');
  t.equal((await r.store.spoolStats()).count, 0, 'the spool is empty: message and DSN both gone');
  await r.close();
});

t.test('the MTA down for days: retried with backoff, then given up with a DSN once it is back', async (t) => {
  const r = await rig();
  const subject = `given-up-${Date.now()}`;
  const aliceBefore = await stack.messageCount('alice');
  const id = await r.hold(subject, ['bob@example.org'], r.clock.now());
  await stack.stopPostfix();
  try {
    await r.scheduler.start();
    await r.step(0);
    const first = await r.store.spoolGet(id);
    t.equal(first?.attempts, 1, 'one attempt');
    t.equal(first?.state, 'held', 'back to held');
    t.equal(first!.nextAttemptAt - r.clock.now(), 60_000, 'next in retryInitialSeconds');
    await r.step(60_000);
    const second = await r.store.spoolGet(id);
    t.equal(second!.nextAttemptAt - r.clock.now(), 120_000, 'then twice as long');
    // Four days and a half of hourly (capped) retries: still there.
    for (let i = 0; i < 108; i++) await r.step(HOUR);
    const late = await r.store.spoolGet(id);
    t.ok(late !== undefined && late.attempts > 100, `still held after ${late?.attempts} attempts`);
    t.ok(late!.nextAttemptAt - late!.releaseAt <= 4.6 * 24 * HOUR, 'backoff capped at retryMaxSeconds');
    for (let i = 0; i < 14; i++) await r.step(HOUR);
    t.equal(await r.store.spoolGet(id), undefined, 'given up after giveUpSeconds');
    t.equal((await r.store.spoolStats()).count, 1, 'its DSN waits in the spool for the MTA');
  } finally {
    await stack.startPostfix();
  }
  await r.step(HOUR);
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1)).toString('latin1');
  t.match(dsn, /Final-Recipient: rfc822;\s*bob@example\.org/i);
  t.match(dsn, /Action: failed/i);
  t.match(dsn, /Status: 4\.4\.7/, 'delivery time expired');
  t.equal((await r.store.spoolStats()).count, 0);
  await r.close();
});

t.test('after a crash: a release cut short is done again, and so is one whose content end may have reached the MTA', async (t) => {
  const r = await rig();
  const cut = `cut-short-${Date.now()}`;
  const handed = `maybe-handed-over-${Date.now()}`;
  const bobBefore = await stack.messageCount('bob');
  await r.hold(cut, ['bob@example.org'], r.clock.now(), 'sending');
  const handedId = await r.hold(handed, ['bob@example.org'], r.clock.now(), 'committing');
  await r.scheduler.start();
  t.equal((await r.store.spoolGet(handedId))?.state, 'held', 'the committing row is held again, not taken as delivered');
  await r.step(1000);
  // "committing" is written before the end of the content goes out: taking it as
  // delivered would lose a message whose end never left (or got a 4xx); a second copy is
  // the lesser harm (RFC 5321 §6.1).
  t.equal(await stack.waitForMessageCount('bob', 'INBOX', bobBefore + 2), bobBefore + 2, 'both are delivered');
  const bob = await masterClient(stack, 'bob');
  await bob.mailboxOpen('INBOX');
  t.equal(((await bob.search({ subject: cut })) || []).length, 1, 'the cut-short release is done again');
  t.equal(((await bob.search({ subject: handed })) || []).length, 1, 'the maybe-handed-over one too');
  await bob.logout();
  t.equal(await r.store.spoolGet(handedId), undefined, 'and it left the spool');
  await t.rejects(r.files.read(handedId).toArray(), /ENOENT/, 'with its file');
  await r.close();
});

t.test('the store away between the MTA taking a release and its record: recorded once it is back, not sent again', async (t) => {
  const r = await rig();
  const subject = `unrecorded-${Date.now()}`;
  const bobBefore = await stack.messageCount('bob');
  const id = await r.hold(subject, ['bob@example.org'], r.clock.now());
  // The store goes away for spoolDelete, the write after the MTA's 250 (availability.ts's error).
  let down = true;
  const deletes: boolean[] = [];
  const spoolDelete = r.store.spoolDelete.bind(r.store);
  r.store.spoolDelete = async (...args) => {
    deletes.push(down);
    if (down) throw new StoreUnavailableError('spoolDelete', 'connection', new Error('connection refused'));
    return spoolDelete(...args);
  };
  await r.scheduler.start();
  await r.step(0);
  t.equal(await stack.waitForMessageCount('bob', 'INBOX', bobBefore + 1), bobBefore + 1, 'delivered');
  t.equal((await r.store.spoolGet(id))?.state, 'committing', 'the store still shows it being handed over');
  // Passes while the store is away back off (up to 15 s apart) and record nothing.
  for (let i = 0; i < 5; i++) await r.step(16_000);
  t.ok(deletes.length >= 3 && deletes.every((d) => d), `the record was retried while the store was away (${deletes.length} tries)`);
  t.ok(await r.store.spoolGet(id), 'and the message is still in the index');
  down = false;
  await r.step(16_000);
  t.equal(await r.store.spoolGet(id), undefined, 'recorded once the store is back: out of the index');
  await t.rejects(r.files.read(id).toArray(), /ENOENT/, 'its content removed');
  for (let i = 0; i < 3; i++) await r.step(60_000);
  await new Promise((resolve) => setTimeout(resolve, 2000)); // a second copy would have arrived by now
  t.equal(await stack.messageCount('bob'), bobBefore + 1, 'sent once');
  await r.close();
});
