/**
 * The fuzz suite (issue 15 §5; generator, mutator and checks in test/helpers/fuzz.ts) at
 * any size, on demand. Its CI form is test/fuzz.test.ts (20,000 inputs).
 *
 *   BENCH_FUZZ_INPUTS=1000000 BENCH_FUZZ_SEED=12345 bash bench/run.sh fuzz
 *
 * BENCH_FUZZ_INPUTS inputs in all (default 100,000), 60 % IMAP and 40 % SMTP, through one
 * gateway in front of a fresh legacy stack; BENCH_FUZZ_SEED (default random, printed)
 * makes the inputs repeatable; BENCH_FUZZ_WORKERS concurrent IMAP connections (default 4,
 * half as many SMTP ones). Prints progress, the checks of helpers/fuzz.ts (afterChecks)
 * and the throughput; exits 1 if any check failed. BENCH_FUZZ_LOG=debug runs the gateway
 * at that log level and keeps its log (path printed); FUZZ_TRACE_FILE=path records every
 * IMAP input sent (helpers/fuzz.ts), to find what a failing session was sent;
 * FUZZ_IMAP_TIMEOUT_MS (default 10,000) is how long an IMAP command may go unanswered;
 * BENCH_FUZZ_IMAP_SHARE (default 0.6) is the IMAP share of the inputs. SMTP inputs keep
 * pace with the IMAP ones (runFuzz's paceSmtp) unless BENCH_FUZZ_PACE=0, and Dovecot's
 * mailboxes are kept small (runFuzz's housekeeping) unless BENCH_FUZZ_HOUSEKEEPING=0.
 */
import { randomInt } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startLegacyStack } from '../test/helpers/stack.js';
import { startGateway } from '../test/helpers/gateway.js';
import { afterChecks, describeFailures, fuzzGatewayConfig, runFuzz } from '../test/helpers/fuzz.js';

const INPUTS = Number(process.env.BENCH_FUZZ_INPUTS ?? 100_000);
const SEED = process.env.BENCH_FUZZ_SEED ? Number(process.env.BENCH_FUZZ_SEED) : randomInt(1, 2 ** 31);
/** Where a BENCH_FUZZ_LOG run's gateway log is kept (the gateway's own directory goes with it). */
const KEPT_LOG = path.join(os.tmpdir(), `lemonade-fuzz-${SEED}.log`);
const WORKERS = Number(process.env.BENCH_FUZZ_WORKERS ?? 4);
/** The IMAP share of the inputs (default 0.6; 1 for IMAP alone, e.g. to time its inputs with FUZZ_TRACE_FILE). */
const IMAP_SHARE = Number(process.env.BENCH_FUZZ_IMAP_SHARE ?? 0.6);

async function main(): Promise<number> {
  const stack = await startLegacyStack({ mode: 'legacy', postfix: true });
  const config = fuzzGatewayConfig();
  // BENCH_FUZZ_LOG=debug logs every command (to find the session behind a failure; costs CPU and disk).
  if (process.env.BENCH_FUZZ_LOG) config.log = { level: process.env.BENCH_FUZZ_LOG };
  const gw = await startGateway(stack, { config });
  const log = (l: string) => console.log(`[${new Date().toISOString()}] ${l}`);
  try {
    const imapInputs = Math.round(INPUTS * IMAP_SHARE);
    const run = await runFuzz(stack, gw, {
      seed: SEED,
      imapInputs,
      smtpInputs: INPUTS - imapInputs,
      imapWorkers: WORKERS,
      smtpWorkers: imapInputs < INPUTS ? Math.max(1, Math.round(WORKERS / 2)) : 0,
      log,
      // Off only to see the unpaced mix (BENCH_FUZZ_PACE=0): on 2 cores its Postfix backlog starves IMAP for hours.
      paceSmtp: process.env.BENCH_FUZZ_PACE !== '0',
      // Off only to see the run slow down as the fuzzer's own mailboxes grow (BENCH_FUZZ_HOUSEKEEPING=0).
      housekeeping: process.env.BENCH_FUZZ_HOUSEKEEPING !== '0',
    });
    const after = await afterChecks(stack, gw, run, log);
    const failures = [...run.failures, ...after.failures];
    console.log(
      `fuzz: ${INPUTS} inputs, seed ${SEED}, ${(run.ms / 1000).toFixed(1)} s (${Math.round(INPUTS / (run.ms / 1000))} inputs/s), ` +
        `RSS ${run.rssStartKiB} -> max ${run.rssMaxKiB} KiB, ${run.failureCount + after.failures.length} failures`,
    );
    if (failures.length > 0) console.log(describeFailures(failures));
    return failures.length > 0 ? 1 : 0;
  } finally {
    if (process.env.BENCH_FUZZ_LOG) copyFileSync(gw.logFile, KEPT_LOG);
    await gw.stop();
    if (process.env.BENCH_FUZZ_LOG) console.log(`gateway log kept in ${KEPT_LOG}`);
    await stack.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
