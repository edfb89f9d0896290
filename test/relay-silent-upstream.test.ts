/**
 * Issue 15 §1-§2: an upstream that neither says "+" to a literal's announcement nor
 * answers the command (Dovecot did so after some malformed APPENDs, which the gateway now
 * refuses itself, see protocol/append-grammar.ts) must not hold the session, nor the
 * mailbox lock of its APPEND, for good: after imap.timeouts.upstreamContinuationSeconds
 * the session ends with BYE and the lock is free for the next APPEND at once. A scripted
 * upstream (helpers/scripted-upstream.ts) plays the silent server: a fault no real one
 * shows on demand any more.
 */
import t from 'tap';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { ScriptedUpstream, scriptedUpstreamInfo } from './helpers/scripted-upstream.js';
import { RawImap } from './helpers/imap-raw.js';

const CONTINUATION_SECONDS = 3;
/** Far longer than the test waits: the next APPEND gets the lock because it was freed, not because it lapsed. */
const LOCK_SECONDS = 60;

let upstream: ScriptedUpstream;
let gw: RunningGateway;

t.before(async () => {
  upstream = await ScriptedUpstream.start();
  // UIDPLUS emulated (the legacy list has none), so an APPEND takes the mailbox's lock.
  gw = await startGateway(scriptedUpstreamInfo(upstream), {
    config: {
      imap: {
        warmUpstream: { seconds: 0 },
        timeouts: { upstreamContinuationSeconds: CONTINUATION_SECONDS },
        limits: { mailboxLockSeconds: LOCK_SECONDS },
      },
    },
  });
});

t.teardown(async () => {
  await gw?.stop();
  await upstream?.close();
});

/** The lines the scripted session got so far that match pattern. */
async function seen(session: { unread: readonly string[] }, pattern: RegExp, timeoutMs: number): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = session.unread.find((l) => pattern.test(l));
    if (line !== undefined || Date.now() > deadline) return line;
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('an upstream silent after a literal announcement: BYE after the bound, and the lock is free at once', async (t) => {
  const stuck = await RawImap.loggedIn(gw.imapsPort);
  const first = await upstream.nextSession();
  const started = Date.now();
  stuck.write('A APPEND lbsil {5}\r\n');
  t.ok(await seen(first, /^\S+ APPEND lbsil \{5\}$/, 5000), 'the announcement reached the upstream, which says nothing');
  const lines = await stuck.closedAfter((CONTINUATION_SECONDS + 5) * 1000);
  const elapsed = (Date.now() - started) / 1000;
  t.match(lines.join('\n'), /^\* BYE Upstream server did not answer/m, 'BYE');
  t.notMatch(lines.join('\n'), /^\+/m, 'no "+" the upstream did not give');
  t.ok(elapsed >= CONTINUATION_SECONDS - 0.5 && elapsed < CONTINUATION_SECONDS + 3, `after the bound (${elapsed.toFixed(1)} s)`);
  for (let i = 0; i < 20 && !gw.logs.some((l) => l.includes('upstream neither continued')); i++) await new Promise((r) => setTimeout(r, 100));
  t.match(gw.logs.join('\n'), /upstream neither continued nor answered a literal/, 'logged');
  await first.closedPromise;
  t.pass('its upstream connection is closed');

  const next = await RawImap.loggedIn(gw.imapsPort);
  const second = await upstream.nextSession();
  const asked = Date.now();
  next.write('N APPEND lbsil {5}\r\n');
  t.ok(await seen(second, /^\S+ APPEND lbsil \{5\}$/, 5000), `the next APPEND into the mailbox goes upstream at once (${Date.now() - asked} ms): its lock was freed`);
  next.close();
  await second.closedPromise;
  const m = await gw.metrics();
  t.equal(metricValue(m, 'lemonade_imap_mailbox_lock_events_total', { event: 'acquired' }), 2, 'each APPEND took the lock');
  t.equal(metricValue(m, 'lemonade_imap_mailbox_lock_events_total', { event: 'expired' }), 0, 'neither held it to its bound');
});
