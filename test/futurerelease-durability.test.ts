/**
 * FUTURERELEASE durability through the gateway process over the legacy Postfix and
 * Dovecot: SIGKILL at random moments around the 250s for held messages, twenty times, and
 * every acknowledged message is delivered exactly once; 5,000 messages due at the same
 * second are all delivered while the gateway's memory does not follow the count.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { metricValue, startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { prng } from './helpers/prng.js';

let stack: LegacyStack;
t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
});
t.teardown(async () => {
  await stack?.stop();
});

const OWN_SENDER = { senderPolicy: { mode: 'own', domains: ['example.org'] } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function authed(gw: RunningGateway): Promise<RawSmtp> {
  return RawSmtp.authenticated(gw.submissionPort, { ehlo: 'phone.example.org' });
}

/** One held message by DATA; the final reply, or undefined when the connection died first. */
async function submitHeld(c: RawSmtp, hold: string, subject: string, body = 'held\r\n'): Promise<number | undefined> {
  try {
    // Pipelined (RFC 2920): MAIL, RCPT and DATA in one write.
    c.write(`MAIL FROM:<alice@example.org> ${hold}\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n`);
    for (let i = 0; i < 3; i++) {
      const r = await c.reply(20_000);
      if (r === undefined || (i < 2 && r.code !== 250) || (i === 2 && r.code !== 354)) return r?.code;
    }
    c.write(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ${subject}\r\n\r\n${body}.\r\n`);
    return (await c.reply(20_000))?.code;
  } catch {
    return undefined;
  }
}

/** How many times each subject with the prefix is in bob's INBOX. */
async function subjectCounts(prefix: string): Promise<Map<string, number>> {
  const c = await masterClient(stack, 'bob');
  const counts = new Map<string, number>();
  const lock = await c.getMailboxLock('INBOX');
  try {
    const uids = await c.search({ subject: prefix }, { uid: true });
    if (uids && uids.length > 0) {
      for await (const m of c.fetch(uids, { envelope: true }, { uid: true })) {
        const s = m.envelope?.subject ?? '';
        if (s.startsWith(prefix)) counts.set(s, (counts.get(s) ?? 0) + 1);
      }
    }
  } finally {
    lock.release();
    await c.logout();
  }
  return counts;
}

async function waitForEmptySpool(gw: RunningGateway, timeoutMs: number): Promise<number> {
  const until = Date.now() + timeoutMs;
  let held = NaN;
  while (Date.now() < until) {
    held = metricValue(await gw.metrics(), 'lemonade_futurerelease_held_messages');
    if (held === 0) return 0;
    await sleep(250);
  }
  return held;
}

t.test('SIGKILL right after 250s, 20 times: every acknowledged message delivered exactly once', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-crash-'));
  const random = prng(4865);
  const prefix = `crash-${Date.now()}-`;
  const acked = new Set<string>();
  const sent = new Set<string>();
  let n = 0;
  for (let round = 0; round < 20; round++) {
    const gw = await startGateway(stack, { plaintext: true, config: { dataDir, submission: OWN_SENDER } });
    const c = await authed(gw);
    const before = 1 + Math.floor(random() * 4);
    for (let i = 0; i < before; i++) {
      const subject = `${prefix}${n++}`;
      sent.add(subject);
      if ((await submitHeld(c, `HOLDFOR=${1 + Math.floor(random() * 2)}`, subject)) === 250) acked.add(subject);
    }
    // One more under way while the kill lands, a random few milliseconds later.
    const subject = `${prefix}${n++}`;
    sent.add(subject);
    const last = submitHeld(c, 'HOLDFOR=1', subject).then((code) => {
      if (code === 250) acked.add(subject);
    });
    await sleep(Math.floor(random() * 15));
    await gw.stop('SIGKILL');
    await last;
    c.close();
  }
  const gw = await startGateway(stack, { plaintext: true, config: { dataDir, submission: OWN_SENDER } });
  t.equal(await waitForEmptySpool(gw, 60_000), 0, 'the spool empties after the last restart');
  await gw.stop();
  t.ok(acked.size >= 20, `${acked.size} of ${sent.size} messages acknowledged`);
  // Postfix hands them to Dovecot within a moment.
  let counts = new Map<string, number>();
  for (let i = 0; i < 40; i++) {
    counts = await subjectCounts(prefix);
    if ([...acked].every((s) => counts.has(s))) break;
    await sleep(500);
  }
  const missing = [...acked].filter((s) => !counts.has(s));
  const twice = [...counts].filter(([, k]) => k > 1).map(([s]) => s);
  t.same(missing, [], 'no acknowledged message lost');
  t.same(twice, [], 'no message delivered twice');
});

t.test('5,000 messages due at the same second: all delivered, memory independent of the count', async (t) => {
  const gw = await startGateway(stack, { plaintext: true, config: { submission: { ...OWN_SENDER, futureRelease: { concurrency: 8 } } } });
  const prefix = `bulk-${Date.now()}-`;
  const body = `${'x'.repeat(998)}\r\n`.repeat(10); // 10 KB
  const count = 5000;
  const connections = 8;
  // 45 s: 5,000 submissions took over 20 s in a full parallel test run on 2 cores.
  const dueAt = new Date(Date.now() + 45_000);
  const holdUntil = `HOLDUNTIL=${dueAt.toISOString().replace(/\.\d{3}Z$/, 'Z')}`;
  const bobBefore = await stack.messageCount('bob');
  let next = 0;
  let acceptedCount = 0;
  let rssAtTenth = 0;
  const refusals = new Map<string, number>();
  const started = Date.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      const c = await authed(gw);
      while (next < count) {
        const i = next++;
        const code = await submitHeld(c, holdUntil, `${prefix}${i}`, body);
        if (code === 250) acceptedCount++;
        else refusals.set(String(code), (refusals.get(String(code)) ?? 0) + 1);
        if (acceptedCount === count / 10 && rssAtTenth === 0) rssAtTenth = gw.rssKiB();
      }
      c.close();
    }),
  );
  const submitSeconds = (Date.now() - started) / 1000;
  t.equal(acceptedCount, count, `all held (${submitSeconds.toFixed(1)} s, ${(count / submitSeconds).toFixed(0)} messages/s); refused: ${JSON.stringify([...refusals])}`);
  t.ok(Date.now() < dueAt.getTime(), 'all submitted before they fall due');
  const rssAllHeld = gw.rssKiB();
  t.equal(metricValue(await gw.metrics(), 'lemonade_futurerelease_held_messages'), count, 'the spool holds them');
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, gw.rssKiB());
  }, 100);
  const emptied = await waitForEmptySpool(gw, 240_000);
  clearInterval(sampler);
  t.equal(emptied, 0, 'every message released');
  const delivered = await stack.waitForMessageCount('bob', 'INBOX', bobBefore + count, 240_000);
  t.equal(delivered - bobBefore, count, 'all 5,000 in the INBOX');
  const metrics = await gw.metrics();
  t.equal(metricValue(metrics, 'lemonade_futurerelease_release_lag_seconds_count'), count, 'a lag observed for each');
  // 4,500 more held messages of 10 KB would be 45 MB if they were kept in memory.
  const grew = (rssAllHeld - rssAtTenth) / 1024;
  const peakOver = (peak - rssAtTenth) / 1024;
  t.ok(grew < 25, `RSS from 500 to 5,000 held: +${grew.toFixed(1)} MB (${(rssAtTenth / 1024).toFixed(0)} -> ${(rssAllHeld / 1024).toFixed(0)} MB)`);
  t.ok(peakOver < 40, `RSS peak while releasing: +${peakOver.toFixed(1)} MB over the 500-held level`);
  await gw.stop();
});
