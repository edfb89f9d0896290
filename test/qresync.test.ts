/**
 * CONDSTORE and QRESYNC (issue 7) through the gateway, over the legacy Dovecot (emulated:
 * it has neither) and over the full-capability Dovecot (passed through): the same
 * scenarios, the same answers. imapflow with `qresync: true` as the client nobody here
 * wrote, a raw client for the exact wire and the byte count.
 */
import t, { type Test } from 'tap';
import { ImapFlow } from 'imapflow';
import { bulkMaildir, masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import path from 'node:path';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

const MESSAGES = 5000;

function message(i: number): Buffer {
  return Buffer.from(
    `From: sender${i % 17}@example.org\r\nTo: alice@example.org\r\nSubject: message ${i}\r\n` +
      `Message-ID: <m${i}@example.org>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nBody of message ${i}.\r\n`,
  );
}

interface Setup {
  stack: LegacyStack;
  /** Replaced by the restart test. */
  gw: RunningGateway;
}

async function setup(mode: 'legacy' | 'full'): Promise<Setup> {
  const stack = await startLegacyStack({ mode });
  bulkMaildir(stack, 'alice', '', MESSAGES, message);
  const gw = await startGateway(stack, { config: { submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } } } });
  return { stack, gw };
}

async function login(gw: RunningGateway, user = 'alice'): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  return c;
}

/** HIGHESTMODSEQ and UIDVALIDITY out of SELECT/EXAMINE responses. */
function selectInfo(lines: string[]): { highestModseq: bigint; uidValidity: number; exists: number } {
  const hm = lines.map((l) => /\[HIGHESTMODSEQ ([0-9]+)\]/.exec(l)?.[1]).find((v) => v !== undefined);
  const uv = lines.map((l) => /\[UIDVALIDITY ([0-9]+)\]/.exec(l)?.[1]).find((v) => v !== undefined);
  const ex = lines.map((l) => /^\* ([0-9]+) EXISTS/.exec(l)?.[1]).find((v) => v !== undefined);
  if (hm === undefined || uv === undefined || ex === undefined) throw new Error(`no HIGHESTMODSEQ/UIDVALIDITY/EXISTS in: ${lines.join(' | ')}`);
  return { highestModseq: BigInt(hm), uidValidity: Number(uv), exists: Number(ex) };
}

/** `* n FETCH (... UID u ... MODSEQ (m) ...)` lines: their UIDs and mod-sequences. */
function fetched(lines: string[]): Array<{ uid: number; modseq: bigint; flags: string }> {
  const out: Array<{ uid: number; modseq: bigint; flags: string }> = [];
  for (const l of lines) {
    if (!/^\* [0-9]+ FETCH /.test(l)) continue;
    const uid = /UID ([0-9]+)/.exec(l)?.[1];
    const modseq = /MODSEQ \(([0-9]+)\)/.exec(l)?.[1];
    out.push({ uid: Number(uid ?? 0), modseq: BigInt(modseq ?? -1), flags: /FLAGS \(([^)]*)\)/.exec(l)?.[1] ?? '' });
  }
  return out;
}

function vanishedEarlier(lines: string[]): string[] {
  return lines.filter((l) => l.startsWith('* VANISHED (EARLIER) ')).map((l) => l.slice('* VANISHED (EARLIER) '.length));
}

/** The quick reconnect of issue 7, against one stack: returns what the client got, for comparing the two stacks. */
async function quickReconnect(t: Test, s: Setup): Promise<{ vanished: string[]; changed: number[]; bytes: number }> {
  // 1. imapflow opens the 5,000-message INBOX with QRESYNC enabled and notes its state.
  const first = new ImapFlow({
    host: '127.0.0.1', port: s.gw.imapsPort, secure: true, tls: { rejectUnauthorized: false },
    auth: { user: 'alice', pass: 'password' }, logger: false, qresync: true, disableAutoIdle: true,
  });
  first.on('error', () => {});
  await first.connect();
  t.ok(first.enabled.has('QRESYNC'), 'imapflow enabled QRESYNC');
  const opened = await first.mailboxOpen('INBOX');
  t.equal(opened.exists, MESSAGES);
  t.type(opened.highestModseq, 'bigint', 'SELECT reported HIGHESTMODSEQ');
  const saved = { highestModseq: opened.highestModseq!, uidValidity: opened.uidValidity };
  await first.logout();

  // 2. Meanwhile, straight at Dovecot: flags on 3 messages, 2 expunged, 1 delivered by Postfix.
  const direct = await masterClient(s.stack, 'alice');
  await direct.mailboxOpen('INBOX');
  await direct.messageFlagsAdd('10', ['\\Flagged'], { uid: true });
  await direct.messageFlagsRemove('21', ['\\Seen'], { uid: true });
  await direct.messageFlagsAdd('4000', ['$Work'], { uid: true });
  await direct.messageDelete('100,2500', { uid: true });
  await direct.logout();
  await s.stack.deliver({ from: 'bob@example.org', to: 'alice@example.org', raw: message(99999) });
  t.equal(await s.stack.waitForMessageCount('alice', 'INBOX', MESSAGES - 1, 30_000), MESSAGES - 1, 'delivered');

  // 3. imapflow reconnects with SELECT (QRESYNC ...): exactly the 2 vanished UIDs and the 4 changed or new messages.
  const second = new ImapFlow({
    host: '127.0.0.1', port: s.gw.imapsPort, secure: true, tls: { rejectUnauthorized: false },
    auth: { user: 'alice', pass: 'password' }, logger: false, qresync: true, disableAutoIdle: true,
  });
  second.on('error', () => {});
  const expunged: number[] = [];
  const flagged: Array<{ uid: number; modseq: bigint | undefined; flags: Set<string> }> = [];
  second.on('expunge', (e: { uid?: number }) => expunged.push(e.uid ?? -1));
  second.on('flags', (e: { uid?: number; modseq?: bigint; flags: Set<string> }) => flagged.push({ uid: e.uid ?? -1, modseq: e.modseq, flags: e.flags }));
  await second.connect();
  const reopened = await second.mailboxOpen('INBOX', { changedSince: saved.highestModseq, uidValidity: saved.uidValidity });
  t.equal((reopened as { qresync?: boolean }).qresync, true, 'imapflow accepted the QRESYNC resync');
  t.same(expunged.sort((a, b) => a - b), [100, 2500], 'imapflow: exactly the 2 expunged UIDs');
  const newUid = MESSAGES + 1;
  t.same(flagged.map((f) => f.uid).sort((a, b) => a - b), [10, 21, 4000, newUid], 'imapflow: flags for exactly the 4 changed or new messages');
  t.ok(flagged.every((f) => f.modseq !== undefined && f.modseq > saved.highestModseq), 'each with a MODSEQ above the saved HIGHESTMODSEQ');
  t.ok(flagged.find((f) => f.uid === 10)?.flags.has('\\Flagged'), 'UID 10 flagged');
  t.notOk(flagged.find((f) => f.uid === 21)?.flags.has('\\Seen'), 'UID 21 no longer seen');
  t.ok(flagged.find((f) => f.uid === 4000)?.flags.has('$Work'), 'UID 4000 has $Work');
  await second.logout();

  // 4. The same on the wire, bytes counted from the SELECT to its tagged OK.
  const c = await login(s.gw);
  await c.command('e', 'ENABLE QRESYNC');
  const lines = await c.command('s', `SELECT INBOX (QRESYNC (${saved.uidValidity} ${saved.highestModseq}))`);
  const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l) + 2, 0);
  t.match(lines.at(-1)!, /^s OK /);
  const vanished = vanishedEarlier(lines);
  t.same(vanished, ['100,2500'], 'one VANISHED (EARLIER) 100,2500');
  const changes = fetched(lines);
  t.same(changes.map((f) => f.uid).sort((a, b) => a - b), [10, 21, 4000, newUid], 'FETCH for exactly the 4 changed or new');
  t.ok(changes.every((f) => f.modseq > saved.highestModseq), 'MODSEQ values above the saved one');
  t.equal(new Set(changes.map((f) => f.modseq)).size, 4, 'four distinct mod-sequences');
  const firstFetch = lines.findIndex((l) => / FETCH /.test(l));
  const vanishedAt = lines.findIndex((l) => l.startsWith('* VANISHED'));
  t.ok(vanishedAt >= 0 && vanishedAt < firstFetch, 'VANISHED (EARLIER) before the FETCH responses (RFC 7162 §3.2.5)');
  t.ok(bytes < 3 * 1024, `the client received ${bytes} bytes for the resync (< 3 KB)`);
  const hm = selectInfo(lines).highestModseq;
  t.ok(changes.every((f) => f.modseq <= hm), 'HIGHESTMODSEQ is at least every reported MODSEQ');
  await c.command('z', 'LOGOUT');
  return { vanished, changed: changes.map((f) => f.uid).sort((a, b) => a - b), bytes };
}

/** CONDSTORE: conditional STORE against a message changed in between; CHANGEDSINCE; SEARCH MODSEQ. */
async function conditionalStore(t: Test, s: Setup): Promise<Record<string, unknown>> {
  const c = await login(s.gw);
  t.match((await c.command('e', 'ENABLE CONDSTORE')).join('\n'), /\* ENABLED CONDSTORE/);
  const sel = selectInfo(await c.command('s', 'SELECT INBOX'));
  const h = sel.highestModseq;
  const m50 = fetched(await c.command('f', 'UID FETCH 50 (MODSEQ)'))[0]!;
  t.ok(m50.modseq > 0n && m50.modseq <= h, 'FETCH (MODSEQ) gives the message mod-sequence');

  const direct = await masterClient(s.stack, 'alice');
  await direct.mailboxOpen('INBOX');
  await direct.messageFlagsAdd('50', ['$Other'], { uid: true });

  const conflict = await c.command('c1', `UID STORE 50 (UNCHANGEDSINCE ${m50.modseq}) +FLAGS (\\Answered)`);
  t.match(conflict.at(-1)!, /^c1 OK \[MODIFIED 50\]/, 'UNCHANGEDSINCE against a changed message: [MODIFIED 50]');
  const after50 = await direct.fetchOne('50', { flags: true }, { uid: true });
  t.notOk(after50 && after50.flags?.has('\\Answered'), 'and the message was not changed');

  const ok = await c.command('c2', `UID STORE 60 (UNCHANGEDSINCE ${h}) +FLAGS (\\Answered)`);
  t.match(ok.at(-1)!, /^c2 OK (?!\[MODIFIED)/, 'an unchanged message is stored');
  const okFetch = fetched(ok);
  t.equal(okFetch.length, 1, 'one FETCH for it');
  t.ok(okFetch[0]!.modseq > h && /\\Answered/.test(okFetch[0]!.flags), 'with its new MODSEQ and flags');

  const seqStore = await c.command('c3', `STORE 50,70 (UNCHANGEDSINCE ${h}) -FLAGS (\\Seen)`);
  t.match(seqStore.at(-1)!, /^c3 OK \[MODIFIED 50\]/, 'STORE by message number reports message numbers');

  const changed = fetched(await c.command('f2', `UID FETCH 1:* (FLAGS) (CHANGEDSINCE ${h})`));
  t.same(changed.map((f) => f.uid).sort((a, b) => a - b), [50, 60, 70], 'CHANGEDSINCE: exactly the messages changed since');

  const search = await c.command('q', `UID SEARCH MODSEQ ${h + 1n}`);
  const hit = search.find((l) => l.startsWith('* SEARCH'))!;
  t.match(hit, /^\* SEARCH 50 60 70 \(MODSEQ [0-9]+\)$/, 'SEARCH MODSEQ finds them, with the highest MODSEQ');
  await direct.logout();
  await c.command('z', 'LOGOUT');
  return { modified: '50', changed: changed.map((f) => f.uid).sort((a, b) => a - b), searched: hit.replace(/\(MODSEQ [0-9]+\)/, '') };
}

/** Changes made by another client while a QRESYNC session idles, and the session's own EXPUNGE. */
async function liveChanges(t: Test, s: Setup): Promise<void> {
  const c = await login(s.gw);
  await c.command('e', 'ENABLE QRESYNC');
  const sel = selectInfo(await c.command('s', 'SELECT INBOX'));
  c.write('i IDLE\r\n');
  t.match(await c.line(), /^\+ /, 'idling');
  const direct = await masterClient(s.stack, 'alice');
  await direct.mailboxOpen('INBOX');
  await direct.messageFlagsAdd('40', ['\\Answered'], { uid: true });
  await direct.messageDelete('41', { uid: true });
  const seen: string[] = [];
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && !(seen.some((l) => / FETCH /.test(l)) && seen.some((l) => l.startsWith('* VANISHED')))) {
    const l = await c.line(Math.max(1, deadline - Date.now())).catch(() => undefined);
    if (l === undefined) break;
    seen.push(l);
  }
  c.write('DONE\r\n');
  seen.push(...(await c.until('i')));
  const update = fetched(seen).find((f) => f.uid === 40 || f.uid === 0);
  t.ok(update, `an unsolicited FETCH for message 40 arrived: ${seen.join(' | ')}`);
  t.ok(update !== undefined && update.modseq > sel.highestModseq, 'with a new MODSEQ (RFC 7162 §3.1.4.2)');
  t.ok(seen.includes('* VANISHED 41'), 'VANISHED 41 instead of EXPUNGE (§3.2.10.2)');
  t.notOk(seen.some((l) => / EXPUNGE$/.test(l)), 'no EXPUNGE in a QRESYNC session');

  await c.command('d', 'UID STORE 42 +FLAGS.SILENT (\\Deleted)');
  const ex = await c.command('x', 'EXPUNGE');
  t.ok(ex.includes('* VANISHED 42'), 'own EXPUNGE reported as VANISHED');
  const hm = /^x OK \[HIGHESTMODSEQ ([0-9]+)\]/.exec(ex.at(-1)!);
  t.ok(hm !== null && BigInt(hm[1]!) > sel.highestModseq, `EXPUNGE's tagged OK carries HIGHESTMODSEQ (§3.2.7): ${ex.at(-1)}`);

  await c.command('d2', 'UID STORE 43 +FLAGS.SILENT (\\Deleted)');
  const uidEx = await c.command('ux', 'UID EXPUNGE 43');
  t.ok(uidEx.includes('* VANISHED 43'), 'UID EXPUNGE (emulated UIDPLUS) reported as VANISHED');
  t.match(uidEx.at(-1)!, /^ux OK \[HIGHESTMODSEQ [0-9]+\]/, "UID EXPUNGE's tagged OK carries HIGHESTMODSEQ (§3.2.9)");

  const other = await c.command('o', 'SELECT Trash');
  t.equal(other[0], '* OK [CLOSED] Previous mailbox closed', 'SELECT of another mailbox starts with [CLOSED] (§3.2.11)');
  t.equal(other.filter((l) => l.includes('[CLOSED]')).length, 1, 'and has only the one (§3.2.11)');
  t.match(other.at(-1)!, /^o OK /);
  await direct.logout();
  await c.command('z', 'LOGOUT');
}

async function badInput(t: Test, s: Setup): Promise<void> {
  const c = await login(s.gw);
  const uv = selectInfo(await c.command('s0', 'EXAMINE INBOX')).uidValidity;
  await c.command('c0', 'CLOSE');
  const noEnable = await c.command('b1', `SELECT INBOX (QRESYNC (${uv} 1))`);
  t.match(noEnable.at(-1)!, /^b1 BAD /, 'QRESYNC parameter before ENABLE QRESYNC: BAD (§3.2.5)');
  t.match((await c.command('e', 'ENABLE QRESYNC')).join('\n'), /\* ENABLED QRESYNC/);
  const bad: string[] = [
    `SELECT INBOX (QRESYNC (0 1))`, // uidvalidity is nz-number
    `SELECT INBOX (QRESYNC (${uv} 0))`, // mod-sequence-value is >= 1
    `SELECT INBOX (QRESYNC (${uv} 9223372036854775808))`, // above 2^63-1
    `SELECT INBOX (QRESYNC (${uv} abc))`,
    `SELECT INBOX (QRESYNC (${uv} 5 1:*))`, // no "*" in known-uids
    `SELECT INBOX (QRESYNC (${uv} 5 1:4294967296))`, // out of range
    `SELECT INBOX (QRESYNC (${uv} 5 1:10 (1:3 1:2)))`, // seq-match sets of different sizes
    `SELECT INBOX (QRESYNC (${uv} 5 1:10 (3,1 1,3)))`, // not ascending
    `SELECT INBOX (QRESYNC)`,
    `SELECT INBOX (FOO)`,
    `SELECT INBOX ()`,
  ];
  let n = 0;
  for (const cmd of bad) {
    const r = await c.command(`b${++n + 1}`, cmd);
    t.match(r.at(-1)!, new RegExp(`^b${n + 1} BAD `), `${cmd}: BAD`);
  }
  const good = await c.command('g', `SELECT INBOX (QRESYNC (${uv} 1 1:10))`);
  t.match(good.at(-1)!, /^g OK /, 'a mod-sequence older than anything kept still resynchronizes');
  const selected: string[] = [
    'FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)', // VANISHED only with UID FETCH
    'UID FETCH 1 (FLAGS) (VANISHED)', // VANISHED needs CHANGEDSINCE
    'UID FETCH 1 (FLAGS) (CHANGEDSINCE 0)', // 0 is not a mod-sequence-value
    'UID FETCH 1 (FLAGS) (CHANGEDSINCE x)',
    'UID FETCH 1 (FLAGS) (FOO 1)',
    'UID STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)',
    'UID STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) +FLAGS (\\Seen)',
    'UID SEARCH MODSEQ x',
    'ENABLE CONDSTORE', // only in the authenticated state (RFC 5161 §3.1)
  ];
  for (const cmd of selected) {
    const r = await c.command(`s${++n}`, cmd);
    t.match(r.at(-1)!, new RegExp(`^s${n} BAD `), `${cmd}: BAD`);
  }
  const nested = await c.command('nn', 'UID SEARCH OR MODSEQ 5 SEEN');
  t.match(nested.at(-1)!, /^nn NO \[CANNOT\] /, 'MODSEQ under OR: NO [CANNOT]');
  t.match((await c.command('ok', 'NOOP')).at(-1)!, /^ok OK /, 'the session goes on');
  await c.command('z', 'LOGOUT');

  const plain = await login(s.gw);
  await plain.command('s', 'SELECT INBOX');
  const noQresync = await plain.command('v', 'UID FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)');
  t.match(noQresync.at(-1)!, /^v BAD /, 'VANISHED without ENABLE QRESYNC: BAD (§3.2.6)');
  await plain.command('z', 'LOGOUT');
}

/** A HIGHESTMODSEQ saved before a restart still resynchronizes exactly after it. */
async function restart(t: Test, s: Setup): Promise<void> {
  const c = await login(s.gw);
  await c.command('e', 'ENABLE QRESYNC');
  const before = selectInfo(await c.command('s', 'SELECT INBOX'));
  await c.command('z', 'LOGOUT');
  const dataDir = path.join(s.gw.dir, 'data');
  t.equal(await s.gw.stop(), 0, 'gateway stopped');
  s.gw = await startGateway(s.stack, { config: { dataDir, submission: { senderPolicy: { mode: 'own', domains: ['example.org'] } } } });

  const direct = await masterClient(s.stack, 'alice');
  await direct.mailboxOpen('INBOX');
  await direct.messageFlagsAdd('30', ['$AfterRestart'], { uid: true });
  await direct.messageDelete('31', { uid: true });
  await direct.logout();

  const c2 = await login(s.gw);
  await c2.command('e', 'ENABLE QRESYNC');
  const lines = await c2.command('s', `SELECT INBOX (QRESYNC (${before.uidValidity} ${before.highestModseq}))`);
  t.same(vanishedEarlier(lines), ['31'], 'VANISHED (EARLIER) 31 only');
  t.same(fetched(lines).map((f) => f.uid), [30], 'FETCH for UID 30 only');
  t.ok(selectInfo(lines).highestModseq > before.highestModseq, 'HIGHESTMODSEQ moved on from the saved value');
  await c2.command('z', 'LOGOUT');
}

const results: Record<string, { reconnect: unknown; condstore: unknown }> = {};

for (const mode of ['legacy', 'full'] as const) {
  t.test(`${mode} Dovecot (${mode === 'legacy' ? 'emulated' : 'passed through'})`, async (t) => {
    const s = await setup(mode);
    t.teardown(async () => {
      await s.gw.stop();
      await s.stack.stop();
    });
    const probe = await login(s.gw);
    const caps = (await probe.command('c', 'CAPABILITY')).join(' ');
    await probe.command('z', 'LOGOUT');
    t.match(caps, /CONDSTORE/, 'CONDSTORE advertised');
    t.match(caps, /QRESYNC/, 'QRESYNC advertised');
    t.match(caps, / ENABLE/, 'ENABLE advertised');
    const reconnect = await t.test('quick reconnect', async (t) => {
      results[mode] = { reconnect: await quickReconnect(t, s), condstore: undefined };
    });
    void reconnect;
    await t.test('conditional store', async (t) => {
      results[mode]!.condstore = await conditionalStore(t, s);
    });
    if (mode === 'legacy') {
      await t.test('live changes: unsolicited FETCH with MODSEQ, VANISHED, EXPUNGE with HIGHESTMODSEQ, CLOSED', (t) => liveChanges(t, s));
      await t.test('bad input gets the RFC 7162 answers; the session goes on', (t) => badInput(t, s));
      const metrics = await s.gw.metrics();
      t.ok(metricValue(metrics, 'lemonade_qresync_reconciliations_total', { result: 'ok' }) >= 3, 'reconciliations counted');
      t.ok(metricValue(metrics, 'lemonade_qresync_changes_total', { kind: 'expunged' }) >= 2, 'expunges counted');
      const sent = metricValue(metrics, 'lemonade_qresync_select_bytes_total', { kind: 'sent' });
      const full = metricValue(metrics, 'lemonade_qresync_select_bytes_total', { kind: 'full_equivalent' });
      t.ok(sent > 0 && full > 50 * sent, `QRESYNC select bytes ${sent} against a full flag fetch's ${full}`);
      // Last: the metrics above are the first gateway's.
      await t.test('mod-sequences survive a gateway restart', (t) => restart(t, s));
    }
  });
}

t.test('both paths give the client the same answers', async (t) => {
  const legacy = results.legacy;
  const full = results.full;
  t.ok(legacy && full, 'both ran');
  const strip = (r: unknown) => ({ ...(r as Record<string, unknown>), bytes: undefined });
  t.same(strip(legacy?.reconnect), strip(full?.reconnect), 'quick reconnect: same VANISHED and FETCH sets');
  t.same(legacy?.condstore, full?.condstore, 'conditional store: same MODIFIED, CHANGEDSINCE and SEARCH answers');
});
