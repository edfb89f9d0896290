/**
 * Session behaviour around the edges: autologout, the session cap, the client going away,
 * pipelined commands, IDLE on the wire, SASL PLAIN with an authorization identity, and
 * native pass-through in front of a Dovecot with its full capability list.
 */
import t, { type Test } from 'tap';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let legacy: LegacyStack;
let gw: RunningGateway;

t.before(async () => {
  legacy = await startLegacyStack({ postfix: false });
  gw = await startGateway(legacy, {
    // warmUpstream off: this file checks that a vanished client's upstream is closed (test/warm-upstream.test.ts covers keeping it).
    config: { imap: { timeouts: { preAuthSeconds: 2 }, limits: { maxSessions: 20 }, warmUpstream: { seconds: 0 } } },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await legacy?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('autologout before login (RFC 3501 §5.4)', async (t) => {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const lines = await c.closedAfter(10_000);
  t.match(lines.join('\n'), /^\* BYE Autologout; no login in time/m);
});

t.test('the session cap answers BYE as the greeting', async (t) => {
  const open: RawImap[] = [];
  for (let i = 0; i < 20; i++) {
    const c = await RawImap.connect(gw.imapsPort, { tls: true });
    await c.line();
    open.push(c);
  }
  const extra = await RawImap.connect(gw.imapsPort, { tls: true });
  t.match(await extra.line(), /^\* BYE /, 'the 21st connection is refused with BYE');
  for (const c of open) c.close();
  extra.close();
  await sleep(300);
  const after = await RawImap.connect(gw.imapsPort, { tls: true });
  t.match(await after.line(), /^\* OK /, 'room again once sessions closed');
  after.close();
});

t.test('client gone: its upstream connection is closed', async (t) => {
  const base = metricValue(await gw.metrics(), 'lemonade_upstream_connections_open', { protocol: 'imap' });
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('a', 'LOGIN alice password');
  t.equal(metricValue(await gw.metrics(), 'lemonade_upstream_connections_open', { protocol: 'imap' }), base + 1);
  c.close();
  let now = base + 1;
  for (let i = 0; i < 50 && now !== base; i++) {
    await sleep(100);
    now = metricValue(await gw.metrics(), 'lemonade_upstream_connections_open', { protocol: 'imap' });
  }
  t.equal(now, base, 'upstream connection closed');
});

t.test('pipelined commands get their responses, tags intact', async (t) => {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('a', 'LOGIN bob password');
  c.write('p1 SELECT INBOX\r\np2 NOOP\r\np3 CAPABILITY\r\np4 STATUS INBOX (MESSAGES)\r\np5 LIST "" "*"\r\n');
  // Dovecot may answer NOOP last (it waits for pending syncs): read until all five completed.
  const lines: string[] = [];
  for (const tag of ['p1', 'p2', 'p3', 'p4', 'p5']) {
    if (!lines.some((l) => l.startsWith(`${tag} `))) lines.push(...(await c.until(tag)));
  }
  const tags = lines.filter((l) => /^p\d /.test(l)).map((l) => l.slice(0, 2));
  t.same(tags.sort(), ['p1', 'p2', 'p3', 'p4', 'p5'], 'every command completed once');
  t.ok(lines.filter((l) => /^p\d /.test(l)).every((l) => / OK /.test(l)), 'all OK');
  t.notMatch(lines.join('\n'), /\bC\d+ /, 'no upstream tag leaks to the client');
  c.close();
});

t.test('a command the gateway answers waits for the relayed ones before it (RFC 3501 §5.5)', async (t) => {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('a', 'LOGIN bob password');
  c.write('q1 SELECT INBOX\r\nq2 CAPABILITY\r\nq3 STATUS INBOX (MESSAGES)\r\nq4 CAPABILITY\r\n');
  const lines = await c.until('q4');
  const order = lines.filter((l) => /^q\d /.test(l)).map((l) => l.slice(0, 2));
  t.same(order, ['q1', 'q2', 'q3', 'q4'], 'completions in command order');
  const q2 = lines.findIndex((l) => l.startsWith('q2 '));
  t.match(lines[q2 - 1], /^\* CAPABILITY /, "CAPABILITY's data right before its completion, not inside SELECT's");
  c.close();
});

t.test('IDLE on the wire: + idling, DONE, tagged OK', async (t) => {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('a', 'LOGIN bob password');
  await c.command('b', 'SELECT INBOX');
  c.write('i IDLE\r\n');
  t.match(await c.line(), /^\+ /, 'continuation relayed');
  c.write('DONE\r\n');
  t.match((await c.until('i')).at(-1), /^i OK/);
  t.match((await c.command('n', 'NOOP')).at(-1), /^n OK/, 'session continues after IDLE');
  c.close();
});

t.test('AUTHENTICATE PLAIN with an authorization identity (master login) passes through', async (t) => {
  const client = new ImapFlow({
    host: '127.0.0.1', port: gw.imapsPort, secure: true,
    auth: { user: legacy.master.user, pass: legacy.master.password, authzid: 'carol' },
    tls: { rejectUnauthorized: false }, logger: false, disableAutoIdle: true,
  });
  await client.connect();
  const box = await client.mailboxOpen('INBOX');
  t.ok(box.path === 'INBOX');
  await client.logout();
  const raw = await RawImap.connect(gw.imapsPort, { tls: true });
  await raw.line();
  raw.write('s AUTHENTICATE PLAIN\r\n');
  t.match(await raw.line(), /^\+/);
  raw.write(`${Buffer.from('\0alice\0password').toString('base64')}\r\n`);
  t.match((await raw.until('s')).at(-1), /^s OK \[CAPABILITY /, 'AUTHENTICATE with a continuation');
  raw.close();
});

/** A tagged answer without Dovecot's timing suffix ("(0.001 + 0.000 secs)."), for comparing two runs. */
const normalized = (line: string | undefined) => (line ?? 'closed').replace(/ \([0-9.]+(?: \+ [0-9.]+)* secs\)\.?$/, '');

/**
 * RFC 3501 §9 atom characters in the commands the gateway parses itself (over the legacy
 * Dovecot: SELECT, EXAMINE, STATUS, COPY, ...) or relays: the same answer through the
 * gateway as from the same Dovecot directly.
 */
async function sameAnswersForAtomChars(t: Test, stack: LegacyStack, gateway: RunningGateway): Promise<void> {
  const direct = await RawImap.connect(stack.imapPort);
  await direct.line();
  const via = await RawImap.connect(gateway.imapsPort, { tls: true });
  await via.line();
  await direct.command('l', 'LOGIN alice password');
  await via.command('l', 'LOGIN alice password');
  await direct.command('c', 'CREATE a[b');
  // Every ATOM-CHAR that is not a letter or digit, "[" among them, then "]" (ASTRING-CHAR)
  // and the list-wildcards "%" and "*" (not ATOM-CHARs; Dovecot takes them leniently).
  const chars = "!#$&'+,-./:;<=>?@^_`|[}~]%*";
  const commands = [
    "SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}",
    "EXAMINE !#$&'+,-.0123456789:;<=>?@^_`|[}",
    'STATUS a[b (MESSAGES)',
    'STATUS [a (MESSAGES)',
    'SELECT [Gmail]/Sent',
    'COPY 1 a[b',
    'SELECT a[b',
    'STATUS a[b (MESSAGES UIDNEXT)',
    'FETCH 1 (FLAGS X[Y)',
    'FETCH 1 BODY[HEADER.FIELDS (FROM)',
    'EXAMINE a[b',
  ];
  for (const c of chars) commands.push(`SELECT x${c}y`, `STATUS x${c}y (MESSAGES)`, `EXAMINE ${c}`, `COPY 1 x${c}y`);
  let same = 0;
  for (const command of commands) {
    let a = normalized((await direct.command('t1', command)).at(-1));
    let b = normalized((await via.command('t1', command)).at(-1));
    // Over the legacy Dovecot COPY is the UIDPLUS emulation's: its own words for the same BAD.
    if (command.startsWith('COPY ')) [a, b] = [a.split(' ').slice(0, 2).join(' '), b.split(' ').slice(0, 2).join(' ')];
    if (a === b) same++;
    else t.fail(`${command}: through the gateway "${b}", directly "${a}"`);
  }
  t.equal(same, commands.length, `all ${commands.length} commands got Dovecot's own answer through the gateway`);
  t.match(normalized((await via.command('t2', "SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}")).at(-1)), /^t2 NO /, "issue 16's mailbox: NO from the upstream, not the gateway's BAD");
  // "[" opens no section outside FETCH, so a space ends the mailbox name: "c]" is a stray
  // argument. Dovecot ignores it and selects "a[b"; the gateway's SELECT (legacy: its own)
  // may refuse it as select-params that are not a list (RFC 7162 §3.2.5 / RFC 4466 §2.1).
  t.match(normalized((await via.command('t3', 'SELECT a[b c]')).at(-1)), /^t3 (OK \[READ-WRITE\]|BAD Parameters must be a parenthesized list)/, 'SELECT a[b c]: the mailbox is "a[b", no "unterminated"');
  // Tags (RFC 3501 §9 tag = 1*<any ASTRING-CHAR except "+">): Dovecot refuses "]" there too; status and tag compared.
  for (const c of chars) {
    direct.write(`t${c}g NOOP\r\n`);
    via.write(`t${c}g NOOP\r\n`);
    const a = (await direct.line())?.split(' ').slice(0, 2).join(' ');
    const b = (await via.line())?.split(' ').slice(0, 2).join(' ');
    t.equal(b, a, `tag t${c}g: ${a}`);
  }
  await direct.command('d', 'DELETE a[b');
  direct.close();
  via.close();
}

/** RFC 7162 §3.2.11: a QRESYNC session's SELECT of another mailbox gets exactly one [CLOSED], before the new mailbox's data. */
async function oneClosed(t: Test, gateway: RunningGateway): Promise<void> {
  const c = await RawImap.connect(gateway.imapsPort, { tls: true });
  await c.line();
  await c.command('l', 'LOGIN alice password');
  await c.command('cr', 'CREATE Other');
  t.match((await c.command('e', 'ENABLE QRESYNC')).join('\n'), /\* ENABLED QRESYNC/);
  const first = await c.command('s1', 'SELECT INBOX');
  t.equal(first.filter((l) => /\[CLOSED\]/.test(l)).length, 0, 'no [CLOSED] when nothing was selected');
  for (const [tag, command] of [['s2', 'SELECT Other'], ['s3', 'EXAMINE INBOX'], ['s4', 'SELECT NoSuchBox']] as const) {
    const lines = await c.command(tag, command);
    t.equal(lines.filter((l) => /\[CLOSED\]/.test(l)).length, 1, `${command}: exactly one [CLOSED]`);
    if (tag !== 's4') t.match(lines[0], /^\* OK \[CLOSED\]/, `${command}: [CLOSED] comes first`);
  }
  await c.command('d', 'DELETE Other');
  c.close();
}

t.test('atom characters: the gateway answers as the legacy Dovecot does directly (RFC 3501 §9)', (t) => sameAnswersForAtomChars(t, legacy, gw));

t.test('QRESYNC emulated: one [CLOSED] per SELECT that closes a mailbox (RFC 7162 §3.2.11)', (t) => oneClosed(t, gw));

t.test('native pass-through in front of a full-capability Dovecot', async (t) => {
  const full = await startLegacyStack({ mode: 'full', postfix: false });
  const fgw = await startGateway(full);
  try {
    await t.test('atom characters: the same answers as Dovecot directly', (t) => sameAnswersForAtomChars(t, full, fgw));
    await t.test('QRESYNC passed through: one [CLOSED]', (t) => oneClosed(t, fgw));
    await t.test("Dovecot's own CATENATE into a missing mailbox with a bad URL: NO [TRYCREATE], as the emulation answers", async (t) => {
      for (const [port, tls] of [[full.imapPort, false], [gw.imapsPort, true]] as const) {
        const c = await RawImap.connect(port, { tls });
        await c.line();
        await c.command('l', 'LOGIN alice password');
        c.write('m APPEND NoSuchBox CATENATE (TEXT {12+}\r\nSubject: x\r\n URL "/INBOX;UIDVALIDITY=1/;UID=1/;SECTION=HEADER")\r\n');
        t.match((await c.until('m')).at(-1), /^m NO \[TRYCREATE\] /, tls ? 'the gateway over the legacy Dovecot' : 'Dovecot with CATENATE');
        c.close();
      }
    });
    const c = await RawImap.connect(fgw.imapsPort, { tls: true });
    await c.line();
    const login = (await c.command('a', 'LOGIN alice password')).at(-1)!;
    // (Dovecot offers URLAUTH only with imap_urlauth_host configured, so it is not in this list.)
    for (const cap of ['UIDPLUS', 'ENABLE', 'CONDSTORE', 'QRESYNC', 'CATENATE', 'MULTIAPPEND', 'BINARY', 'MOVE']) {
      t.match(login, new RegExp(`\\b${cap}\\b`), `${cap} passed through`);
    }
    t.notMatch(login, /COMPRESS=|STARTTLS|LOGINDISABLED/, 'what cannot cross the gateway is not offered');
    t.match((await c.command('b', 'ENABLE CONDSTORE')).join('\n'), /\* ENABLED CONDSTORE[\s\S]*b OK/);
    t.match((await c.command('c', 'SELECT INBOX (CONDSTORE)')).join('\n'), /HIGHESTMODSEQ[\s\S]*c OK/);
    c.write('d APPEND INBOX {12}\r\n');
    t.match(await c.line(), /^\+/);
    c.write('Subject: x\r\n\r\n');
    t.match((await c.until('d')).at(-1), /^d OK \[APPENDUID \d+ \d+\]/, 'UIDPLUS APPENDUID from the upstream');
    t.match((await c.command('e', 'UID EXPUNGE 1')).at(-1), /^e OK/, 'UID EXPUNGE passed through');
    c.write('f APPEND INBOX CATENATE (TEXT {14+}\r\nSubject: y\r\n\r\n)\r\n');
    t.match((await c.until('f')).at(-1), /^f OK \[APPENDUID /, 'CATENATE executed by the upstream itself');
    const m = await fgw.metrics();
    t.equal(metricValue(m, 'lemonade_catenate_appends_total'), 0, 'not by the emulation');
    t.equal(metricValue(m, 'lemonade_imap_side_connections_open'), 0, 'no side connection was needed');
    c.close();
  } finally {
    await fgw.stop();
    await full.stop();
  }
});
