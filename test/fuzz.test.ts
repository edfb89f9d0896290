/**
 * Issue 15 §5: fuzzing the IMAP relay and the submission front through a real gateway in
 * front of the real Dovecot and Postfix (generator, mutator and checks: helpers/fuzz.ts).
 *
 * About 20,000 inputs in CI (FUZZ_IMAP_INPUTS / FUZZ_SMTP_INPUTS / FUZZ_IMAP_WORKERS change that; any count on
 * demand: `BENCH_FUZZ_INPUTS=n BENCH_FUZZ_SEED=s bash bench/run.sh fuzz`, bench/fuzz.ts). The seed is random unless
 * FUZZ_SEED is set, and printed first: FUZZ_SEED=<seed> repeats the inputs of a failed run.
 *
 * Asserted:
 *   - the gateway process stays up, and its RSS (VmRSS) stays under RSS_BOUND_KIB;
 *   - every complete IMAP command gets a tagged answer with its own tag, or an untagged
 *     BYE and the end of the connection; no tagged line carries a tag the client did not send;
 *   - no command inside a literal runs upstream: commands the upstream rejects before their
 *     literal, each followed by a literal holding `Xk CREATE <prefix>k`, create no mailbox
 *     (LIST at Dovecot directly, the Maildir on disk, Dovecot's log), and the gateway never
 *     logs "upstream answered an unknown tag";
 *   - every SMTP command line and message end gets exactly one reply with a valid code;
 *   - a well-behaved imapflow session (bob) and nodemailer client work throughout;
 *     only messages the fuzzer completed with 250 are delivered (end-of-data look-alikes
 *     hiding a second transaction included), each plain acknowledged one exactly once;
 *   - within 10 s of the last client leaving, lemonade_sessions_open (imap, submission)
 *     and the in-use relay and side connections are 0, and the upstream connections
 *     (lemonade_upstream_connections_open, imap and submission) are only the idle pooled
 *     side and relay connections;
 *   - imapflow and nodemailer still work through the gateway afterwards.
 */
import t from 'tap';
import { randomInt } from 'node:crypto';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, type RunningGateway } from './helpers/gateway.js';
import { afterChecks, describeFailures, fuzzGatewayConfig, runFuzz, type AfterResult, type FuzzRun } from './helpers/fuzz.js';

// Starting the stack and 20,000 inputs on a shared 2-core machine: minutes, not the default.
t.setTimeout(15 * 60_000);

/**
 * The gateway idles at 60-90 MB here. Its inputs are bounded: at most 6 sessions at once,
 * each holding at most a 64 KiB line plus a 64 KiB buffered literal or a 1 MiB literal
 * streaming through; with V8's heap limits from the shebang, the working set of a healthy
 * run stays well under 200 MB. 300 MB leaves room for GC timing and catches a leak that
 * grows with the number of inputs or connections (20,000 of them).
 */
const RSS_BOUND_KIB = 300 * 1024;

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(1, 2 ** 31);
const imapInputs = Number(process.env.FUZZ_IMAP_INPUTS ?? 12_000);
const smtpInputs = Number(process.env.FUZZ_SMTP_INPUTS ?? 8_000);

let stack: LegacyStack;
let gw: RunningGateway;
let run: FuzzRun;
let after: AfterResult;

t.before(async () => {
  stack = await startLegacyStack({ mode: 'legacy', postfix: true });
  gw = await startGateway(stack, { config: fuzzGatewayConfig() });
  t.comment(`fuzz seed ${seed}: FUZZ_SEED=${seed} npx tap test/fuzz.test.ts repeats these inputs`);
  run = await runFuzz(stack, gw, { seed, imapInputs, smtpInputs, imapWorkers: Number(process.env.FUZZ_IMAP_WORKERS ?? 4), log: (l) => t.comment(l) });
  after = await afterChecks(stack, gw, run, (l) => t.comment(l));
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

t.test('every input got its answer', async (t) => {
  t.equal(run.imap.inputs, imapInputs, 'all IMAP inputs sent');
  t.equal(run.smtp.inputs, smtpInputs, 'all SMTP inputs sent');
  t.ok(run.imap.smuggleAttempts > imapInputs / 10, `literals holding a command sent (${run.imap.smuggleAttempts})`);
  t.ok(run.smtp.acked.size > 0 && run.smtp.smuggleAttempts > 0, `messages acknowledged (${run.smtp.acked.size}), smuggling attempts (${run.smtp.smuggleAttempts})`);
  t.ok(run.wellBehaved.imapRounds > 0 && run.wellBehaved.messages > 0, `well-behaved sessions worked alongside (${JSON.stringify(run.wellBehaved)})`);
  t.equal(run.failureCount, 0, `no protocol failures (seed ${seed})`, { diagnostic: true, failures: describeFailures(run.failures) });
});

t.test('the gateway stayed up with bounded memory', async (t) => {
  t.equal(gw.proc.exitCode, null, 'still running');
  t.ok(run.rssMaxKiB > 0 && run.rssMaxKiB < RSS_BOUND_KIB, `RSS ${run.rssStartKiB} KiB at the start, ${run.rssMaxKiB} KiB at most (bound ${RSS_BOUND_KIB})`);
});

t.test('no command from inside a literal ran upstream', async (t) => {
  t.same(after.smuggledMailboxes, [], `no mailbox ${run.smugglePrefix}<k> (seed ${seed})`);
  t.same(
    after.failures.filter((f) => /log/.test(f.what)).map((f) => f.what),
    [],
    'neither Dovecot nor the gateway logged a sign of one',
  );
});

t.test('only acknowledged messages were delivered, once', async (t) => {
  t.same(after.unackedDeliveries, [], 'nothing delivered that got no 250');
  t.same(after.lostMessages, [], 'every plain acknowledged message delivered');
  t.same(after.duplicates, [], 'none twice');
});

t.test('gauges at rest and well-behaved clients work afterwards', async (t) => {
  t.same(
    after.failures.filter((f) => /gauges|imapflow|nodemailer|exited/.test(f.what)).map((f) => f.what),
    [],
    `gauges ${JSON.stringify(after.gauges)}`,
  );
  t.equal(after.gauges.imapSessions, 0, 'imap sessions 0');
  t.equal(after.gauges.imapUpstream, after.gauges.sideIdle, 'imap upstream connections: only the idle pooled side connections');
  t.equal(after.gauges.submissionSessions, 0, 'submission sessions 0');
  t.equal(after.gauges.relayInUse, 0, 'relay connections in use 0');
});
