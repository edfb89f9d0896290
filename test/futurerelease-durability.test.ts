/**
 * FUTURERELEASE durability through the gateway process over the legacy Postfix and
 * Dovecot: SIGKILL at random moments among submissions and releases of held messages,
 * over a hundred times: no acknowledged message is lost, and a message is delivered twice
 * only when the kill found it "committing" (the end of its content being handed to the
 * MTA, the window README states); 5,000 messages due at the same second are all
 * delivered while the gateway's memory does not follow the count.
 */
import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import os from 'node:os';
import path from 'node:path';
import { startLegacyStack, subjectCounts, type LegacyStack } from './helpers/stack.js';
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

/**
 * Subjects of the messages a killed gateway left "committing": the end of their content
 * may have reached the MTA (release.ts writes the state before the end), the one window
 * where a second copy is allowed (README, FUTURERELEASE crash safety). Read from the store
 * and the spool directly, before the next gateway recovers them.
 */
function leftCommitting(dataDir: string): { committing: string[]; sending: number } {
  const db = new Database(path.join(dataDir, 'gateway.sqlite'));
  try {
    const rows = db.prepare("SELECT id, state FROM held_messages WHERE state IN ('sending', 'committing')").all() as Array<{ id: string; state: string }>;
    const committing = rows
      .filter((r) => r.state === 'committing')
      .map((r) => /^Subject: (.*)$/m.exec(readFileSync(path.join(dataDir, 'spool', 'msg', `${r.id}.eml`), 'latin1'))?.[1]?.trim() ?? r.id);
    return { committing, sending: rows.length - committing.length };
  } finally {
    db.close();
  }
}

const CYCLES = 100;

t.test(`SIGKILL ${CYCLES} times during acceptances and releases: nothing acknowledged lost, a second copy only from the content-end window`, async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'lemonade-crash-'));
  const random = prng(4865);
  const prefix = `crash-${Date.now()}-`;
  const acked = new Set<string>();
  const sent = new Set<string>();
  const window = new Set<string>();
  let killedAccepting = 0;
  let killedReleasing = 0;
  let killedHandingOver = 0;
  let n = 0;
  for (let round = 0; round < CYCLES; round++) {
    const gw = await startGateway(stack, { plaintext: true, config: { dataDir, submission: OWN_SENDER } });
    const c = await authed(gw);
    // Half the messages are due at once (HOLDUNTIL in the past: RFC 4865 §4.2 only
    // forbids releasing early), the others a second later, in the same round or at the
    // start of a later one (recovery releases what is due at once): the kill lands among
    // acceptances and releases alike.
    let inFlight = false;
    let dueAcked = (): void => undefined;
    const firstDueAcked = new Promise<void>((resolve) => (dueAcked = resolve));
    const submitting = (async () => {
      for (;;) {
        const subject = `${prefix}${n++}`;
        sent.add(subject);
        const dueNow = random() < 0.5;
        inFlight = true;
        const code = await submitHeld(c, dueNow ? 'HOLDUNTIL=2020-01-01T00:00:00Z' : 'HOLDFOR=1', subject);
        inFlight = false;
        if (code === undefined) return;
        if (code === 250) acked.add(subject);
        if (code === 250 && dueNow) dueAcked();
        await sleep(Math.floor(random() * 80));
      }
    })();
    // Half the kills at a random moment of the round; the others a few milliseconds after
    // a message due now was acknowledged, while its release (claim, MAIL, RCPT, content,
    // its end, the reply, the record) is most likely under way.
    if (random() < 0.5) await sleep(Math.floor(random() * 1000));
    else {
      await Promise.race([firstDueAcked, sleep(1500)]);
      await sleep(Math.floor(random() * 25));
    }
    if (inFlight) killedAccepting++;
    await gw.stop('SIGKILL');
    await submitting;
    c.close();
    const left = leftCommitting(dataDir);
    if (left.sending + left.committing.length > 0) killedReleasing++;
    if (left.committing.length > 0) killedHandingOver++;
    for (const s of left.committing) window.add(s);
  }
  const gw = await startGateway(stack, { plaintext: true, config: { dataDir, submission: OWN_SENDER } });
  t.equal(await waitForEmptySpool(gw, 120_000), 0, 'the spool empties after the last restart');
  const resent = metricValue(await gw.metrics(), 'lemonade_futurerelease_messages_total', { event: 'resent_after_crash' });
  await gw.stop();
  t.ok(acked.size >= CYCLES, `${acked.size} of ${sent.size} messages acknowledged`);
  // Not a run that never hit what it is about: kills during submissions and during releases.
  t.ok(killedAccepting >= 5, `${killedAccepting} kills with a submission under way`);
  t.ok(killedReleasing >= 10, `${killedReleasing} kills with a release under way`);
  // Postfix hands them to Dovecot within a moment.
  let counts = new Map<string, number>();
  for (let i = 0; i < 60; i++) {
    counts = await subjectCounts(stack, 'bob', prefix);
    if ([...acked].every((s) => counts.has(s))) break;
    await sleep(500);
  }
  const missing = [...acked].filter((s) => !counts.has(s));
  const twice = [...counts].filter(([, k]) => k > 1).map(([s]) => s);
  const outside = twice.filter((s) => !window.has(s));
  t.comment(
    `${CYCLES} SIGKILLs: ${sent.size} submitted, ${acked.size} acknowledged, ${counts.size} delivered, ` +
      `lost ${missing.length}, duplicated ${twice.length}; ${killedAccepting} kills during a submission, ${killedReleasing} during a release, ` +
      `${killedHandingOver} while a content end was being handed over (${window.size} messages, resent_after_crash ${resent} in the last gateway)`,
  );
  t.same(missing, [], 'no acknowledged message lost');
  t.same(outside, [], `every duplicate (${twice.length}) was killed while its content end was being handed to the MTA`);
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
