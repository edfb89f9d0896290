/**
 * Submission AUTH against the upstream IMAP server (issue 3): successes are cached briefly
 * (and only successes: a wrong password is never let through by the cache), failures are
 * slowed down per client address, and an unreachable IMAP server is a temporary failure.
 */
import t from 'tap';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;
// Dovecot itself takes about half a second to refuse a password; ours comes on top.
const FAILURE_DELAY_MS = 700;
const MAX_FAILURE_DELAY_MS = 1400;
const CACHE_SECONDS = 3;

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
  gw = await startGateway(stack, {
    config: {
      submission: {
        senderPolicy: { mode: 'own', domains: ['example.org'] },
        auth: { cacheSeconds: CACHE_SECONDS, failureDelayMs: FAILURE_DELAY_MS, maxFailureDelayMs: MAX_FAILURE_DELAY_MS },
      },
    },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

const plain = (user: string, password: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`;

async function session(localAddress?: string): Promise<RawSmtp> {
  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true, localAddress });
  await c.reply();
  await c.command('EHLO client.example.org');
  return c;
}

/** One AUTH in a fresh session: its reply and how long it took. */
async function attempt(user: string, password: string, localAddress?: string): Promise<{ text: string; ms: number }> {
  const c = await session(localAddress);
  const started = Date.now();
  const r = await c.command(plain(user, password), 20_000);
  const ms = Date.now() - started;
  c.close();
  return { text: r.text, ms };
}

t.test('repeated failures from one address are slowed down, up to the bound; other addresses are not', async (t) => {
  const times: number[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await attempt('alice', `wrong${i}`);
    t.match(r.text, /^535 5\.7\.8 /, `failure ${i + 1}: 535 5.7.8`);
    times.push(r.ms);
  }
  const [f1, f2, f3, f4] = times as [number, number, number, number];
  t.ok(f1 >= FAILURE_DELAY_MS - 50, `first failure delayed (${f1} ms)`);
  t.ok(f2 - f1 >= FAILURE_DELAY_MS - 250, `second failure delayed one step more (${f2} ms)`);
  t.ok(Math.abs(f4 - f3) < 400 && f4 < f1 + MAX_FAILURE_DELAY_MS, `bounded by maxFailureDelayMs (${f3}, ${f4} ms)`);

  const elsewhere = await attempt('alice', 'wrong', '127.0.0.2');
  t.match(elsewhere.text, /^535 5\.7\.8 /);
  t.ok(elsewhere.ms < f2 - 350, `another address starts afresh (${elsewhere.ms} ms)`);

  const ok = await attempt('alice', 'password');
  t.match(ok.text, /^235 2\.7\.0 /, 'the right password still works');
  const after = await attempt('alice', 'wrong-again');
  t.ok(after.ms < f2 - 350, `a success resets the count (${after.ms} ms)`);

  const m = await gw.metrics();
  t.ok(metricValue(m, 'lemonade_submission_auth_total', { result: 'failed' }) >= 6, 'failures counted');
});

t.test('a success is cached for cacheSeconds; the cache never admits a wrong password', async (t) => {
  t.match((await attempt('bob', 'password', '127.0.0.3')).text, /^235 /, 'bob logs in (checked upstream, then cached)');
  await stack.stopDovecot();
  try {
    t.match((await attempt('bob', 'password', '127.0.0.3')).text, /^235 2\.7\.0 /, 'cached: accepted while the IMAP server is down');
    t.match((await attempt('bob', 'wrong', '127.0.0.3')).text, /^454 4\.7\.0 /, 'wrong password while down: temporary failure, not success');
    t.match((await attempt('carol', 'password', '127.0.0.3')).text, /^454 4\.7\.0 /, 'an uncached user while down: temporary failure');
    await new Promise((r) => setTimeout(r, CACHE_SECONDS * 1000 + 500));
    t.match((await attempt('bob', 'password', '127.0.0.3')).text, /^454 4\.7\.0 /, 'expired after cacheSeconds: checked again');
  } finally {
    await stack.startDovecot();
  }
  t.match((await attempt('bob', 'password', '127.0.0.3')).text, /^235 /, 'back: checked upstream again');
});

t.test('AUTH LOGIN, cancellation, bad base64 and unknown mechanisms', async (t) => {
  const c = await session('127.0.0.4');
  t.match((await c.command('AUTH CRAM-MD5')).text, /^504 5\.5\.4 /, 'unknown mechanism');
  t.match((await c.command('AUTH PLAIN !!!notbase64')).text, /^501 5\.5\.[24] /, 'bad base64');
  t.match((await c.command('AUTH LOGIN')).text, /^334 VXNlcm5hbWU6/, 'LOGIN asks for the user name');
  t.match((await c.command('*')).text, /^501 5\.0\.0 /, 'cancelled with *');
  t.match((await c.command('AUTH LOGIN')).text, /^334 /);
  t.match((await c.command(Buffer.from('alice').toString('base64'))).text, /^334 UGFzc3dvcmQ6/, 'then for the password');
  t.match((await c.command(Buffer.from('password').toString('base64'))).text, /^235 2\.7\.0 /, 'LOGIN succeeds');
  t.match((await c.command(plain('alice', 'password'))).text, /^503 5\.5\.1 /, 'AUTH twice');
  t.equal((await c.command('MAIL FROM:<alice@example.org> AUTH=<>')).code, 250, 'MAIL with AUTH=<> (RFC 4954 §5)');
  c.close();
});
