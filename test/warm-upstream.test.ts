/**
 * Warm upstream connections (issue 7): a client that vanishes without LOGOUT leaves its
 * logged-in upstream connection parked; a reconnect with the same credentials reuses it
 * (no new upstream login, checked in Dovecot's own log), in the authenticated state.
 * Different credentials, LOGOUT, and expiry each get a fresh login.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;

t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  gw = await startGateway(stack, { config: { imap: { warmUpstream: { seconds: 4, max: 10 } } } });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

/** Upstream logins Dovecot recorded for user so far. */
function loginLines(user: string): number {
  const log = readFileSync(path.join(stack.dir, 'dovecot', 'dovecot.log'), 'utf8');
  return log.split('\n').filter((l) => /imap-login: (Info: )?Login: user=</.test(l) && l.includes(`user=<${user}>`)).length;
}

/**
 * The login count once Dovecot's log has caught up (its log process writes a moment after
 * the login): waits until it reaches `expect`, or 1.5 s when expecting no change.
 */
async function upstreamLogins(user: string, expect?: number): Promise<number> {
  const end = Date.now() + (expect === undefined ? 1500 : 10_000);
  let n = loginLines(user);
  while (Date.now() < end && (expect === undefined || n < expect)) {
    await new Promise((r) => setTimeout(r, 100));
    n = loginLines(user);
  }
  return n;
}

async function metric(outcome: string): Promise<number> {
  return metricValue(await gw.metrics(), 'lemonade_imap_warm_upstream_total', { outcome });
}

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function login(password = 'password'): Promise<{ c: RawImap; answer: string }> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN alice ${password}`);
  return { c, answer: r.at(-1)! };
}

/** Logs in, optionally selects and idles, then drops the connection like a phone losing its network. */
async function vanish(opts: { select?: boolean; idle?: boolean } = {}): Promise<void> {
  const kept = await metric('kept');
  const { c, answer } = await login();
  if (!answer.startsWith('l OK')) throw new Error(answer);
  if (opts.select) await c.command('s', 'SELECT INBOX');
  if (opts.idle) {
    c.write('i IDLE\r\n');
    await c.line();
  }
  c.close();
  await until(async () => (await metric('kept')) > kept, 'the upstream connection to be parked');
}

t.test('a reconnect with the same credentials reuses the parked upstream connection', async (t) => {
  await vanish({ select: true });
  const logins = await upstreamLogins('alice');
  t.ok(logins > 0, 'Dovecot logged the first login (the count below means something)');
  const reused = await metric('reused');
  const { c, answer } = await login();
  t.match(answer, /^l OK \[CAPABILITY /, 'logged in');
  t.equal(await metric('reused'), reused + 1, 'the parked connection was reused');
  t.equal(await upstreamLogins('alice'), logins, 'no new login at the upstream');
  const fetch = await c.command('f', 'FETCH 1 (FLAGS)');
  t.match(fetch.at(-1)!, /^f (BAD|NO) /, 'no mailbox selected: the session starts authenticated');
  t.match((await c.command('s', 'SELECT INBOX')).at(-1)!, /^s OK /, 'and works');
  t.match((await c.command('z', 'LOGOUT')).at(-1)!, /^z OK /);
});

t.test('dropped while idling: the IDLE is ended and the connection reused', async (t) => {
  await vanish({ select: true, idle: true });
  const logins = await upstreamLogins('alice');
  const { c, answer } = await login();
  t.match(answer, /^l OK /);
  t.equal(await upstreamLogins('alice'), logins, 'no new login at the upstream');
  t.match((await c.command('n', 'NOOP')).at(-1)!, /^n OK /);
  t.match((await c.command('s', 'SELECT INBOX')).at(-1)!, /^s OK /);
  c.close();
  await until(async () => (await metric('kept')) >= 3, 'parked again');
});

t.test('other credentials never get a parked connection', async (t) => {
  await until(async () => (await metric('kept')) - (await metric('reused')) - (await metric('expired')) >= 1, 'one parked');
  const reused = await metric('reused');
  const { c, answer } = await login('wrong-password');
  t.match(answer, /^l NO /, 'a wrong password is refused');
  t.equal(await metric('reused'), reused, 'and took nothing');
  c.close();
});

t.test('LOGOUT closes the upstream; a parked connection expires', async (t) => {
  const { c } = await login();
  const kept = await metric('kept');
  await c.command('z', 'LOGOUT');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(await metric('kept'), kept, 'nothing parked after LOGOUT');
  const expired = await metric('expired');
  await vanish();
  await until(async () => (await metric('expired')) > expired, 'expiry', 15_000);
  const logins = await upstreamLogins('alice');
  const again = await login();
  t.match(again.answer, /^l OK /);
  t.equal(await upstreamLogins('alice', logins + 1), logins + 1, 'an expired connection is not reused: a fresh upstream login');
  again.c.close();
});
