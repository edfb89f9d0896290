/**
 * Per-command latency of one submission session, for comparing gateway builds (issue 3):
 * MAIL, RCPT, DATA (to the 354) and the end of a 1 KB message (to the final 250), one
 * client, one command at a time, through two gateways in front of the same Postfix, the
 * two taking turns message by message so drift on the machine falls on both alike.
 *
 *   BENCH_LATENCY_A=dist-bench/ref-x/dist/main.js BENCH_LATENCY_B=dist/main.js node dist-bench/bench/smtp-latency.js
 *
 * The builds must lie inside the repository (node_modules are resolved from there).
 * BENCH_MESSAGES messages per build (default 600); medians in ms are printed.
 */
import path from 'node:path';
import { startLegacyStack } from '../test/helpers/stack.js';
import { startGateway, type RunningGateway } from '../test/helpers/gateway.js';
import { RawSmtp } from '../test/helpers/smtp-raw.js';
import { benchSubmissionConfig } from './relay.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 600);
const builds = { A: process.env.BENCH_LATENCY_A, B: process.env.BENCH_LATENCY_B ?? 'dist/main.js' };
const STEPS = ['mail', 'rcpt', 'data', 'end', 'total'] as const;

async function main(): Promise<void> {
  if (!builds.A) throw new Error('set BENCH_LATENCY_A (and BENCH_LATENCY_B, default dist/main.js) to the builds to compare');
  const stack = await startLegacyStack({ postfix: true });
  const gateways: RunningGateway[] = [];
  try {
    const config = benchSubmissionConfig();
    const sessions = new Map<string, { c: RawSmtp; times: Record<(typeof STEPS)[number], number[]> }>();
    for (const [name, main] of Object.entries(builds)) {
      const gw = await startGateway(stack, { config, main: path.resolve(main!) });
      gateways.push(gw);
      const c = await RawSmtp.connect(gw.submissionPort);
      await c.reply();
      await c.command('EHLO latency.example.org');
      await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`);
      sessions.set(name, { c, times: { mail: [], rcpt: [], data: [], end: [], total: [] } });
    }
    const body = `Subject: latency\r\n\r\n${'x'.repeat(900)}\r\n.`;
    for (let i = 0; i < MESSAGES; i++) {
      // Alternate which build goes first.
      for (const name of i % 2 === 0 ? ['A', 'B'] : ['B', 'A']) {
        const { c, times } = sessions.get(name)!;
        const t0 = performance.now();
        await c.command('MAIL FROM:<bench@example.org>');
        const t1 = performance.now();
        const rcpt = await c.command('RCPT TO:<bob@example.org>');
        const t2 = performance.now();
        await c.command('DATA');
        const t3 = performance.now();
        const end = await c.command(body);
        const t4 = performance.now();
        if (rcpt.code !== 250 || end.code !== 250) throw new Error(`${name}: ${rcpt.text} / ${end.text}`);
        times.mail.push(t1 - t0);
        times.rcpt.push(t2 - t1);
        times.data.push(t3 - t2);
        times.end.push(t4 - t3);
        times.total.push(t4 - t0);
      }
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!.toFixed(2);
    console.log(`| build | ${STEPS.join(' ms | ')} ms |`);
    console.log(`|---|${STEPS.map(() => '---:').join('|')}|`);
    for (const [name, { c, times }] of sessions) {
      console.log(`| ${name}: ${builds[name as 'A' | 'B']} | ${STEPS.map((s) => median(times[s])).join(' | ')} |`);
      c.close();
    }
  } finally {
    for (const gw of gateways) await gw.stop();
    await stack.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
