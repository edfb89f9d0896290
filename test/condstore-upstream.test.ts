/**
 * CONDSTORE words never reach an upstream without CONDSTORE (issue 15 §4). The legacy
 * Dovecot does not advertise CONDSTORE but still executes what it is sent: a STATUS
 * (HIGHESTMODSEQ) passed through is a CONDSTORE enabling command (RFC 7162 §3.1) for
 * Dovecot's session, so every later SELECT on that upstream connection carried Dovecot's
 * own [HIGHESTMODSEQ] next to the gateway's, and every FETCH response its own MODSEQ.
 * Each CONDSTORE enabling command is sent through the gateway here; afterwards, in the
 * same session, a SELECT must show exactly one [HIGHESTMODSEQ] and each FETCH response
 * exactly one MODSEQ. The first test shows, straight at Dovecot, that both checks see a
 * leak.
 */
import t from 'tap';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;
t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  gw = await startGateway(stack);
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

function message(i: number): Buffer {
  return Buffer.from(`From: bob@example.org\r\nTo: alice@example.org\r\nSubject: m${i}\r\n\r\nBody ${i}.\r\n`);
}

async function viaGateway(): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', 'LOGIN alice password');
  if (!/^l OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  return c;
}

/** Straight at Dovecot, as alice, with nothing enabled. */
async function direct(): Promise<RawImap> {
  const c = await RawImap.connect(stack.imapPort);
  await c.line();
  const r = await c.command('l', 'LOGIN alice password');
  if (!/^l OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  return c;
}

/** A mailbox of n messages, made upstream. */
async function mailbox(name: string, n: number): Promise<void> {
  const c = await direct();
  const r = await c.command('c', `CREATE ${name}`);
  if (!/^c OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  await c.command('o', 'LOGOUT');
  for (let i = 1; i <= n; i++) await stack.append('alice', name, message(i));
}

const highestCodes = (lines: string[]): string[] => lines.flatMap((l) => /\[HIGHESTMODSEQ ([0-9]+)\]/.exec(l)?.[1] ?? []);

const modseqCounts = (lines: string[]): number[] => lines.filter((l) => /^\* [0-9]+ FETCH /.test(l)).map((l) => (l.match(/\bMODSEQ \(/g) ?? []).length);

function statusItems(lines: string[]): Map<string, string> | undefined {
  const m = lines.map((l) => /^\* STATUS \S+ \(([^)]*)\)$/.exec(l)).find((x) => x !== null);
  if (!m) return undefined;
  const tokens = m[1]!.split(' ');
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < tokens.length; i += 2) out.set(tokens[i]!.toUpperCase(), tokens[i + 1]!);
  return out;
}

t.test('the checks see a leak: straight at Dovecot, STATUS (HIGHESTMODSEQ) enables its CONDSTORE', async (t) => {
  // Without this, the "exactly one" checks below could pass whatever reached the upstream.
  await mailbox('probe', 2);
  const plain = await direct();
  const p = await plain.command('s', 'SELECT probe');
  t.same(highestCodes(p), [], 'a plain SELECT at Dovecot: no [HIGHESTMODSEQ]');
  t.same(modseqCounts(await plain.command('f', 'STORE 1:* +FLAGS (\\Seen)')), [0, 0], 'and no MODSEQ in STORE\'s FETCH responses');
  await plain.command('o', 'LOGOUT');
  const c = await direct();
  t.match((await c.command('x', 'STATUS probe (HIGHESTMODSEQ)')).at(-1), /^x OK/);
  t.equal(highestCodes(await c.command('s', 'SELECT probe')).length, 1, 'after STATUS (HIGHESTMODSEQ): Dovecot sends its own [HIGHESTMODSEQ]');
  const f = await c.command('f', 'STORE 1:* +FLAGS (\\Flagged)');
  t.same(modseqCounts(f), [1, 1], `and its own MODSEQ in STORE's FETCH responses: ${f.join(' | ')}`);
  await c.command('o', 'LOGOUT');
});

t.test('STATUS (HIGHESTMODSEQ) is answered by the emulation, never upstream', async (t) => {
  await mailbox('st1', 3);
  const c = await viaGateway();
  const r = await c.command('a', 'STATUS st1 (MESSAGES HIGHESTMODSEQ)');
  t.match(r.at(-1), /^a OK/);
  const items = statusItems(r);
  t.equal(items?.get('MESSAGES'), '3', 'the upstream items are there');
  t.match(items?.get('HIGHESTMODSEQ'), /^[1-9][0-9]*$/, 'HIGHESTMODSEQ from the emulation');
  t.notOk(items?.has('UIDVALIDITY'), 'UIDVALIDITY, asked for upstream, is not shown unasked');
  t.equal(r.filter((l) => l.startsWith('* STATUS')).length, 1, 'one STATUS response');
  const status = BigInt(items!.get('HIGHESTMODSEQ')!);

  const s = await c.command('s', 'SELECT st1');
  t.match(s.at(-1), /^s OK/);
  const codes = highestCodes(s);
  t.equal(codes.length, 1, `exactly one [HIGHESTMODSEQ] in the SELECT: ${codes.join(', ')}`);
  t.equal(BigInt(codes[0]!), status, 'the same value STATUS gave (nothing changed)');
  // STATUS (HIGHESTMODSEQ) enabled CONDSTORE (RFC 7162 §3.1): the gateway's MODSEQ, and only that.
  t.same(modseqCounts(await c.command('f', 'FETCH 1:* (FLAGS)')), [1, 1, 1], 'one MODSEQ in each FETCH response');
  t.same(modseqCounts(await c.command('g', 'STORE 1:* +FLAGS ($Check)')), [1, 1, 1], 'and in each of STORE\'s');
  await c.command('o', 'LOGOUT');
});

t.test('STATUS HIGHESTMODSEQ moves when the mailbox changes upstream, also for the selected mailbox', async (t) => {
  await mailbox('st2', 2);
  const c = await viaGateway();
  const before = BigInt(statusItems(await c.command('a', 'STATUS st2 (HIGHESTMODSEQ)'))!.get('HIGHESTMODSEQ')!);
  const again = BigInt(statusItems(await c.command('b', 'STATUS st2 (HIGHESTMODSEQ)'))!.get('HIGHESTMODSEQ')!);
  t.equal(again, before, 'no change, same value');
  // Another client changes a flag straight at Dovecot: the gateway is not told.
  const d = await direct();
  await d.command('s', 'SELECT st2');
  t.match((await d.command('f', 'UID STORE 1 +FLAGS (\\Flagged)')).at(-1), /^f OK/);
  await d.command('o', 'LOGOUT');
  const after = BigInt(statusItems(await c.command('c', 'STATUS st2 (HIGHESTMODSEQ)'))!.get('HIGHESTMODSEQ')!);
  t.ok(after > before, `a flag changed upstream counts (${before} -> ${after})`);

  // The selected mailbox: STATUS of it, with UIDVALIDITY asked for this time.
  const s = await c.command('s', 'SELECT st2');
  const selected = BigInt(highestCodes(s)[0]!);
  const uidValidity = /\[UIDVALIDITY ([0-9]+)\]/.exec(s.join('\n'))?.[1];
  const items = statusItems(await c.command('d', 'STATUS st2 (UIDVALIDITY HIGHESTMODSEQ)'));
  t.equal(items?.get('UIDVALIDITY'), uidValidity, 'UIDVALIDITY when asked for');
  t.ok(BigInt(items!.get('HIGHESTMODSEQ')!) >= selected, 'HIGHESTMODSEQ of the selected mailbox, not below its SELECT');
  await c.command('o', 'LOGOUT');
});

t.test('STATUS that the upstream refuses keeps the upstream answer', async (t) => {
  await mailbox('st3', 1);
  const d = await direct();
  const c = await viaGateway();
  for (const items of ['(BOGUS)', '(MESSAGES BOGUS HIGHESTMODSEQ)', 'MESSAGES', '']) {
    const want = (await d.command('x', `STATUS st3 ${items}`)).at(-1)!;
    const got = (await c.command('x', `STATUS st3 ${items}`)).at(-1)!;
    t.match(got, /^x BAD /, `STATUS st3 ${items}: BAD`);
    // Dovecot's text, under the client's tag (the gateway's parser may refuse a malformed one first).
    if (items.startsWith('(')) t.equal(got, want, `STATUS st3 ${items}: the upstream's own BAD`);
  }
  const missing = await c.command('y', 'STATUS nosuchbox (MESSAGES HIGHESTMODSEQ)');
  t.match(missing.at(-1), /^y NO /, 'a mailbox that does not exist: NO');
  t.notOk(missing.some((l) => l.startsWith('* STATUS')), 'and no STATUS response');
  t.equal(highestCodes(await c.command('s', 'SELECT st3')).length, 1, 'a SELECT afterwards: the gateway\'s [HIGHESTMODSEQ] only');
  t.same(modseqCounts(await c.command('f', 'STORE 1 +FLAGS ($Check)')), [0], 'a refused STATUS enabled nothing: no MODSEQ');
  await c.command('o', 'LOGOUT');
  await d.command('o', 'LOGOUT');
});

t.test('no CONDSTORE enabling command reaches the upstream (RFC 7162 §3.1)', async (t) => {
  const cases: Array<{ box: string; commands: string[] }> = [
    { box: 'en1', commands: ['SELECT en1', 'FETCH 1:* (FLAGS MODSEQ)'] },
    { box: 'en2', commands: ['SELECT en2', 'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)'] },
    { box: 'en3', commands: ['SELECT en3', 'STORE 1 (UNCHANGEDSINCE 99999999999999999) +FLAGS (\\Seen)'] },
    { box: 'en4', commands: ['SELECT en4', 'UID SEARCH MODSEQ 1'] },
    { box: 'en5', commands: ['SELECT en5 (CONDSTORE)'] },
    { box: 'en6', commands: ['EXAMINE en6 (CONDSTORE)'] },
    { box: 'en7', commands: ['ENABLE CONDSTORE', 'SELECT en7', 'FETCH 1:* (FLAGS)'] },
    { box: 'en8', commands: ['ENABLE QRESYNC', 'SELECT en8 (QRESYNC (1 1))', 'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)'] },
  ];
  for (const { box, commands } of cases) {
    await mailbox(box, 2);
    const c = await viaGateway();
    for (const [i, command] of commands.entries()) {
      const r = await c.command(`t${i}`, command);
      t.match(r.at(-1), new RegExp(`^t${i} OK`), `${box}: ${command}`);
    }
    const s = await c.command('s', `SELECT ${box}`);
    t.equal(highestCodes(s).length, 1, `${box}: one [HIGHESTMODSEQ] in a SELECT through the gateway afterwards`);
    t.same(modseqCounts(await c.command('f', 'FETCH 1:* (FLAGS)')), [1, 1], `${box}: one MODSEQ in each FETCH response`);
    t.same(modseqCounts(await c.command('g', 'STORE 1:* +FLAGS ($Check)')), [1, 1], `${box}: and in each of STORE's`);
    await c.command('o', 'LOGOUT');
  }
});
