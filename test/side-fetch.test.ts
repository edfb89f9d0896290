/**
 * Side connections and part fetching against the real (legacy) Dovecot: the master login
 * as a user, EXAMINE + UID FETCH BODY.PEEK streamed to a sink (a 10 MB part arrives whole
 * and byte-exact), UIDVALIDITY and missing messages reported, and the pool's reuse, cap
 * and eviction.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { configureLogger } from '../src/log/logger.js';
import { SidePool, SideLoginRefused } from '../src/imap/side-pool.js';
import { fetchPart, type PartRef } from '../src/lemonade/fetch-part.js';
import type { LiteralSink } from '../src/imap/upstream.js';
import { registry } from '../src/metrics/metrics.js';

let stack: LegacyStack;
let config: Config;
const log = configureLogger('silent');
const attachment = randomBytes(10 * 1024 * 1024).toString('base64').replace(/.{76}/g, '$&\r\n');
const message = Buffer.from(
  'From: bob@example.org\r\nTo: alice@example.org\r\nSubject: with attachment\r\nMIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello Alice,\r\nsee attached.\r\n' +
    `--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${attachment}\r\n--b1--\r\n`,
);
let uid = 0;
let uidValidity = 0;

t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  config = configSchema.parse({
    imap: { upstream: { host: stack.imapHost, port: stack.imapPort }, master: stack.master },
  });
  const client = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: 'alice' }, logger: false,
  });
  await client.connect();
  const appended = await client.append('INBOX', message);
  const box = await client.mailboxOpen('INBOX');
  uidValidity = Number(box.uidValidity);
  uid = appended && appended.uid ? appended.uid : Number(box.uidNext) - 1;
  await client.logout();
});
t.teardown(async () => {
  await stack?.stop();
});

/** A sink collecting into memory, with an optional slow consumer to exercise back-pressure. */
function collector(slow = false): { sink: (size: number) => LiteralSink; data: () => Buffer; announced: () => number } {
  const parts: Buffer[] = [];
  let announced = -1;
  let pendingDrain: (() => void) | undefined;
  let writes = 0;
  return {
    sink: (size) => {
      announced = size;
      return {
        write(chunk) {
          parts.push(Buffer.from(chunk));
          if (!slow || ++writes % 8 !== 0) return true;
          setTimeout(() => pendingDrain?.(), 5);
          return false;
        },
        onceDrain(fn) {
          pendingDrain = fn;
        },
        end() {},
      };
    },
    data: () => Buffer.concat(parts),
    announced: () => announced,
  };
}

/** Most connections seen open at once by any fetch. */
let peakOpen = 0;

async function fetchAs(pool: SidePool, user: string, ref: PartRef, slow = false) {
  const c = collector(slow);
  const result = await pool.withConnection(user, (conn) => {
    peakOpen = Math.max(peakOpen, pool.openCount);
    return fetchPart(conn, ref, c.sink);
  });
  return { result, data: c.data(), announced: c.announced() };
}

t.test('whole message, sections, MIME headers and partial ranges, byte-exact', async (t) => {
  const pool = new SidePool(config, { maxIdle: 4, idleMs: 60_000, maxOpen: 4 }, log);
  const whole = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uidValidity, uid }, true);
  t.same(whole.result, { ok: true, size: message.length });
  t.equal(whole.announced, message.length);
  t.ok(whole.data.equals(message), 'whole message byte-identical, streamed with back-pressure');

  const text = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid, section: '1' });
  t.equal(text.data.toString(), 'Hello Alice,\r\nsee attached.');
  const mime = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid, section: '2.MIME' });
  t.equal(mime.data.toString(), 'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n');
  const part2 = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid, section: '2' });
  t.equal(part2.data.toString(), attachment, '10 MB attachment section exact');
  const partial = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid, section: '2', partial: { offset: 100, length: 50 } });
  t.equal(partial.data.toString(), attachment.slice(100, 150), 'partial range');
  const tail = await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid, partial: { offset: message.length - 10 } });
  t.equal(tail.data.toString(), message.subarray(message.length - 10).toString(), 'partial without length runs to the end');
  t.equal(pool.idleCount, 1, 'one connection served all of them');
  await pool.close();
});

t.test('failures: UIDVALIDITY, missing message, missing mailbox, unknown user', async (t) => {
  const pool = new SidePool(config, { maxIdle: 4, idleMs: 60_000, maxOpen: 4 }, log);
  t.same((await fetchAs(pool, 'alice', { mailbox: 'INBOX', uidValidity: uidValidity + 1, uid })).result, { ok: false, reason: 'uidvalidity' });
  t.same((await fetchAs(pool, 'alice', { mailbox: 'INBOX', uid: uid + 1000 })).result, { ok: false, reason: 'no-message' });
  t.same((await fetchAs(pool, 'alice', { mailbox: 'Nonexistent', uid })).result, { ok: false, reason: 'no-mailbox' });
  t.same((await fetchAs(pool, 'bob', { mailbox: 'INBOX', uid })).result, { ok: false, reason: 'no-message' }, "bob's INBOX has no such message");
  await t.rejects(fetchAs(pool, 'nosuchuser', { mailbox: 'INBOX', uid }), SideLoginRefused);
  await pool.close();
});

t.test('pool: reuse per user, cap on open connections, eviction logs out', async (t) => {
  const pool = new SidePool(config, { maxIdle: 2, idleMs: 300, maxOpen: 2 }, log);
  const ref = { mailbox: 'INBOX', uid, section: '1' };
  peakOpen = 0;
  const results = await Promise.all(['alice', 'bob', 'carol', 'alice', 'bob'].map((u) => fetchAs(pool, u, ref)));
  t.equal(results.filter((r) => r.result.ok).length, 2, 'alice (twice) has the message');
  t.equal(peakOpen, 2, 'never more than maxOpen open at once, and both used');
  const metrics = await registry.getSingleMetricAsString('lemonade_imap_side_connections_open');
  t.match(metrics, /state="in_use"\} 0/, 'none left in use');
  await new Promise((r) => setTimeout(r, 600));
  t.equal(pool.idleCount, 0, 'idle ones expire after idleMs');
  t.equal(pool.openCount, 0, 'and are closed');
  await pool.close();
});

t.test('APPENDUID discovery for an upstream without UIDPLUS: UIDNEXT before, the new UID after', async (t) => {
  const { mailboxUids, appendedUid } = await import('../src/lemonade/appenduid.js');
  const { MailboxLocks } = await import('../src/lemonade/mailbox-locks.js');
  const pool = new SidePool(config, { maxIdle: 2, idleMs: 60_000, maxOpen: 2 }, log);
  const locks = new MailboxLocks(60_000);
  const order: string[] = [];
  const appendAs = async (name: string, body: string): Promise<number | undefined> => {
    const lease = (await locks.acquire('alice\0INBOX'))!;
    try {
      order.push(`${name} in`);
      const before = await pool.withConnection('alice', (c) => mailboxUids(c, 'INBOX'));
      const raw = Buffer.from(`Subject: ${name}\r\n\r\n${body}\r\n`);
      await pool.withConnection('alice', (c) => c.command(['APPEND INBOX ', { literal: raw }]));
      order.push(`${name} out`);
      return pool.withConnection('alice', (c) => appendedUid(c, 'INBOX', before!, raw.length));
    } finally {
      lease.release();
    }
  };
  const [a, b] = await Promise.all([appendAs('one', 'first'), appendAs('two', 'second message')]);
  t.same(order, ['one in', 'one out', 'two in', 'two out'], 'the lock serializes appends to one mailbox');
  t.ok(a !== undefined && b !== undefined && a !== b, `distinct UIDs (${a}, ${b})`);
  const check = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: 'alice' }, logger: false,
  });
  await check.connect();
  await check.mailboxOpen('INBOX');
  const one = await check.fetchOne(String(a), { source: true }, { uid: true });
  const two = await check.fetchOne(String(b), { source: true }, { uid: true });
  await check.logout();
  t.match(one && one.source?.toString(), /Subject: one/, 'the first UID is the first message');
  t.match(two && two.source?.toString(), /Subject: two/, 'the second UID is the second message');
  t.equal(await pool.withConnection('alice', (c) => mailboxUids(c, 'NoSuchBox')), undefined, 'STATUS of a missing mailbox');
  await pool.close();
});
