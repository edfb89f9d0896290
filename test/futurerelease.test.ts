/**
 * FUTURERELEASE (RFC 4865) through the gateway process, over the legacy Postfix and
 * Dovecot: holds by HOLDFOR and HOLDUNTIL with DATA, BDAT and BURL; refusals with the RFC's
 * codes; a release while the MTA is down; the operator's queue commands and the sender's
 * XCANCEL; the DSN parameters kept for the release.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { metricValue, repoRoot, startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
  gw = await startGateway(stack, {
    plaintext: true,
    config: { submission: { senderPolicy: { mode: 'own', domains: ['example.org'] }, futureRelease: { retryInitialSeconds: 1, retryMaxSeconds: 2 } } },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function authed(): Promise<RawSmtp> {
  return RawSmtp.authenticated(gw.submissionPort, { ehlo: 'phone.example.org' });
}

/** Subjects of the messages in user's INBOX (read through the master user, directly upstream). */
async function subjects(user: string): Promise<string[]> {
  const c = await masterClient(stack, user);
  const lock = await c.getMailboxLock('INBOX');
  const out: string[] = [];
  try {
    if ((c.mailbox as { exists: number }).exists > 0) {
      for await (const m of c.fetch('1:*', { envelope: true })) out.push(m.envelope?.subject ?? '');
    }
  } finally {
    lock.release();
    await c.logout();
  }
  return out;
}

async function waitForSubject(user: string, subject: string, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  do {
    if ((await subjects(user)).includes(subject)) return true;
    await sleep(250);
  } while (Date.now() < until);
  return false;
}

/** Submits one message by DATA; returns the final reply. */
async function submit(c: RawSmtp, mailArgs: string, subject: string, to = 'bob@example.org'): Promise<{ code: number; text: string }> {
  const mail = await c.command(`MAIL FROM:<alice@example.org>${mailArgs}`);
  if (mail.code !== 250) return mail;
  const rcpt = await c.command(`RCPT TO:<${to}>`);
  if (rcpt.code !== 250) return rcpt;
  const data = await c.command('DATA');
  if (data.code !== 354) return data;
  return c.command(`From: alice@example.org\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\nheld body\r\n.`, 20_000);
}

const heldId = (text: string) => /held as ([0-9a-f]+)/.exec(text)?.[1];

function queueCli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(path.join(repoRoot, 'dist', 'main.js'), ['queue', ...args, '--config', gw.configFile], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

t.test('EHLO advertises FUTURERELEASE with the configured interval and a date-time', async (t) => {
  const c = await authed();
  const ehlo = await c.command('EHLO phone.example.org');
  const m = /250[ -]FUTURERELEASE (\d+) (\S+)/.exec(ehlo.text);
  t.ok(m, ehlo.text);
  t.equal(Number(m![1]), 604800, 'max-future-release-interval: 7 days by default');
  const limit = Date.parse(m![2]!);
  t.ok(Math.abs(limit - (Date.now() + 604800_000)) < 60_000, `max-future-release-date-time ${m![2]} is now + 7 days`);
  c.close();
});

t.test('HOLDFOR=5: not delivered at 3 s, delivered by 7 s, the trace shows the hold', async (t) => {
  const c = await authed();
  const subject = `holdfor-${Date.now()}`;
  const started = Date.now();
  const r = await submit(c, ' HOLDFOR=5', subject);
  t.match(r.text, /^250 2\.0\.0 .*held as [0-9a-f]+ until /, r.text);
  c.close();
  await sleep(3000 - (Date.now() - started));
  t.notOk((await subjects('bob')).includes(subject), 'not in the INBOX at 3 s');
  t.ok(await waitForSubject('bob', subject, 7000 - (Date.now() - started)), 'in the INBOX by 7 s');
  const raw = (await stack.newestMessage('bob', await stack.messageCount('bob'))).toString('latin1');
  t.match(raw, /Received: from phone\.example\.org [^]*\(held until \d{4}-\d\d-\d\dT[\d:.]+Z +RFC 4865 *\)/, 'our Received: shows the hold');
});

t.test('BDAT and BURL messages are held alike', async (t) => {
  const c = await authed();
  const subject = `bdat-held-${Date.now()}`;
  const body = `From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ${subject}\r\n\r\nvia BDAT\r\n`;
  t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=1')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  c.write(`BDAT ${body.length} LAST\r\n${body}`);
  t.match((await c.reply())?.text, /^250 .*held as/, 'BDAT LAST: held');
  // BURL: a message of alice's, by a submit+alice URL from the gateway's own GENURLAUTH.
  const burlSubject = `burl-held-${Date.now()}`;
  const src = await stack.append('alice', 'INBOX', Buffer.from(`From: alice@example.org\r\nTo: bob@example.org\r\nSubject: ${burlSubject}\r\n\r\nvia BURL\r\n`));
  const imap = await RawImap.connect(gw.imapsPort, { tls: true });
  await imap.line();
  await imap.command('l', 'LOGIN alice password');
  const g = await imap.command('g', `GENURLAUTH "imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid};URLAUTH=submit+alice" INTERNAL`);
  const url = /^\* GENURLAUTH "([^"]+)"/.exec(g[0]!)![1]!;
  imap.close();
  t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=1')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  t.match((await c.command(`BURL ${url} LAST`)).text, /^250 .*held as/, 'BURL LAST: held');
  c.close();
  t.ok(await waitForSubject('bob', subject, 8000), 'the BDAT message released');
  t.ok(await waitForSubject('bob', burlSubject, 8000), 'the BURL message released');
});

t.test('HOLDUNTIL: past, beyond the limit, garbage, both parameters', async (t) => {
  const c = await authed();
  const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const past = `holduntil-past-${Date.now()}`;
  const r = await submit(c, ` HOLDUNTIL=${iso(Date.now() - 3600_000)}`, past);
  t.equal(r.code, 250, `a time in the past is accepted and released at once: ${r.text}`);
  t.ok(await waitForSubject('bob', past, 5000), 'delivered at once');
  t.match((await c.command(`MAIL FROM:<alice@example.org> HOLDUNTIL=${iso(Date.now() + 8 * 86400_000)}`)).text, /^501 5\.5\.4 /, "beyond max-future-release-date-time (RFC 4865 §4.2)");
  t.match((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=604801')).text, /^501 5\.5\.4 /, "beyond max-future-release-interval");
  t.match((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=soon')).text, /^501 5\.5\.4 /, 'garbage HOLDFOR');
  t.match((await c.command('MAIL FROM:<alice@example.org> HOLDUNTIL=tomorrow')).text, /^501 5\.5\.4 /, 'garbage HOLDUNTIL');
  t.match((await c.command(`MAIL FROM:<alice@example.org> HOLDFOR=10 HOLDUNTIL=${iso(Date.now() + 60_000)}`)).text, /^501 5\.5\.4 /, "both parameters");
  t.equal((await c.command('NOOP')).code, 250, 'the session goes on');
  c.close();
});

t.test('the MTA down at release: retried, delivered once it is back', async (t) => {
  const c = await authed();
  const subject = `mta-down-${Date.now()}`;
  t.match((await submit(c, ' HOLDFOR=1', subject)).text, /^250 .*held as/);
  c.close();
  await stack.stopPostfix();
  const retriedBefore = metricValue(await gw.metrics(), 'lemonade_futurerelease_messages_total', { event: 'retried' });
  await sleep(3500);
  t.ok(metricValue(await gw.metrics(), 'lemonade_futurerelease_messages_total', { event: 'retried' }) > retriedBefore, 'the failed release was counted as retried');
  t.equal(metricValue(await gw.metrics(), 'lemonade_futurerelease_held_messages'), 1, 'still in the spool');
  await stack.startPostfix();
  t.ok(await waitForSubject('bob', subject, 10_000), 'delivered after the MTA came back');
  const copies = (await subjects('bob')).filter((s) => s === subject).length;
  t.equal(copies, 1, 'exactly once');
});

t.test('DSN parameters are kept for the release (RET, ENVID, NOTIFY, ORCPT)', async (t) => {
  const aliceBefore = await stack.messageCount('alice');
  const c = await authed();
  t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=1 RET=HDRS ENVID=held+2Denv')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob+2Bheld@example.org')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  t.match((await c.command('Subject: held dsn\r\n\r\nhello\r\n.')).text, /^250 .*held as/);
  c.close();
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1, 15_000)).toString('latin1');
  t.match(dsn, /Original-Envelope-Id: held-env/i, 'ENVID carried to the release');
  t.match(dsn, /Original-Recipient: rfc822;\s*bob\+held@example\.org/i, 'ORCPT carried');
  t.match(dsn, /Content-Type: text\/rfc822-headers/i, 'RET=HDRS carried');
});

t.test('a recipient the MTA refuses at release: the sender gets a DSN (RFC 3464), the other recipient the message', async (t) => {
  const aliceBefore = await stack.messageCount('alice');
  const c = await authed();
  const subject = `refused-later-${Date.now()}`;
  t.equal((await c.command('MAIL FROM:<alice@example.org> HOLDFOR=1')).code, 250);
  t.equal((await c.command('RCPT TO:<nobody@example.org>')).code, 250, 'a held transaction does not ask the MTA now');
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  t.match((await c.command(`From: alice@example.org\r\nTo: nobody@example.org, bob@example.org\r\nSubject: ${subject}\r\n\r\nhi\r\n.`)).text, /^250 .*held as/);
  c.close();
  t.ok(await waitForSubject('bob', subject, 8000), 'bob gets it');
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1, 10_000)).toString('latin1');
  t.match(dsn, /^From: .*MAILER-DAEMON@localhost/im, 'from the gateway');
  t.match(dsn, /report-type="?delivery-status/i);
  t.match(dsn, /Final-Recipient: rfc822;\s*nobody@example\.org/i);
  t.match(dsn, /Action: failed/i);
  t.match(dsn, /Status: 5\.1\.1/);
  t.match(dsn, /Future-Release-Request: for;1/i, 'RFC 4865 §5.1.2: the hold request is in the DSN');
  t.notMatch(dsn, /Final-Recipient: rfc822;\s*bob@/i);
});

t.test('queue list shows held messages; queue cancel and XCANCEL prevent delivery', async (t) => {
  const c = await authed();
  const byOperator = `cancel-operator-${Date.now()}`;
  const bySender = `cancel-sender-${Date.now()}`;
  // Long enough for the queue commands (a process each) even on a loaded machine.
  const submitted = Date.now();
  // (12 s was not: five queue commands took longer in a full parallel run.)
  const operatorId = heldId((await submit(c, ' HOLDFOR=30', byOperator)).text)!;
  const senderId = heldId((await submit(c, ' HOLDFOR=30', bySender)).text)!;
  t.ok(operatorId && senderId, 'ids in the 250 replies');
  const list = await queueCli('list');
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, new RegExp(`^${operatorId} +held`, 'm'), 'queue list shows the first');
  t.match(list.stdout, new RegExp(`^${senderId} +held`, 'm'), 'and the second');
  const show = await queueCli('show', operatorId);
  t.match(show.stdout, /recipient: <bob@example\.org> pending/, 'queue show: the envelope');
  const cancelled = await queueCli('cancel', operatorId);
  t.equal(cancelled.code, 0, cancelled.stderr);
  // Another user cannot cancel alice's message; alice can.
  const bob = await RawSmtp.connect(gw.submissionPort);
  await bob.reply();
  await bob.command('EHLO bob.example.org');
  await bob.command(`AUTH PLAIN ${Buffer.from('\0bob\0password').toString('base64')}`);
  t.match((await bob.command(`XCANCEL ${senderId}`)).text, /^550 5\.0\.0 /, "bob cannot cancel alice's message");
  bob.close();
  t.match((await c.command(`XCANCEL ${senderId}`)).text, /^250 2\.0\.0 /, 'alice cancels her own');
  t.match((await c.command(`XCANCEL ${senderId}`)).text, /^550 5\.0\.0 /, 'twice: unknown');
  t.equal((await queueCli('show', operatorId)).code, 67, 'gone from the queue');
  c.close();
  await sleep(Math.max(0, submitted + 33_000 - Date.now()));
  const inbox = await subjects('bob');
  t.notOk(inbox.includes(byOperator), 'cancelled by the operator: never delivered');
  t.notOk(inbox.includes(bySender), 'cancelled by the sender: never delivered');
});

t.test('queue release sends a held message now', async (t) => {
  const c = await authed();
  const subject = `release-now-${Date.now()}`;
  const id = heldId((await submit(c, ' HOLDFOR=3600', subject)).text)!;
  c.close();
  const r = await queueCli('release', id);
  t.equal(r.code, 0, r.stderr);
  t.ok(await waitForSubject('bob', subject, 5000), 'released within seconds instead of an hour');
});
