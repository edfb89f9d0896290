/**
 * Issue 2 acceptance: malformed input gets BAD / NO / BYE as RFC 3501 says while a
 * healthy session keeps working; a 50 MB message streams through byte-identical without
 * the gateway holding it; losing Dovecot gives BYE and NO [UNAVAILABLE] until it is back.
 */
import t from 'tap';
import { randomBytes, createHash } from 'node:crypto';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;

t.before(async () => {
  stack = await startLegacyStack({ mode: 'legacy', postfix: false });
  gw = await startGateway(stack, { config: { imap: { limits: { maxLiteralSize: 64 * 1024 * 1024, maxBadCommands: 1000 } } } });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

const loggedIn = (user = 'alice'): Promise<RawImap> => RawImap.loggedIn(gw.imapsPort, user);

/** A healthy session that keeps doing real work while the malformed inputs run. */
function healthyLoop(signal: { stop: boolean }): Promise<number> {
  return (async () => {
    const client = new ImapFlow({
      host: '127.0.0.1', port: gw.imapsPort, secure: true,
      auth: { user: 'bob', pass: 'password' }, tls: { rejectUnauthorized: false }, logger: false, disableAutoIdle: true,
    });
    await client.connect();
    let rounds = 0;
    while (!signal.stop) {
      await client.noop();
      const st = await client.status('INBOX', { messages: true });
      if (!st || typeof st.messages !== 'number') throw new Error('bad status');
      rounds++;
    }
    await client.logout();
    return rounds;
  })();
}

/** Inputs that must each get a tagged or untagged BAD (or NO), never silence or a crash. */
function malformedCorpus(): Array<{ name: string; data: Buffer; expect: RegExp }> {
  const cases: Array<{ name: string; data: Buffer; expect: RegExp }> = [];
  const add = (name: string, data: string | Buffer, expect: RegExp) =>
    cases.push({ name, data: typeof data === 'string' ? Buffer.from(data) : data, expect });
  add('no command', 'x1\r\n', /^(x1|\*) BAD/);
  add('unknown command', 'x2 FROBNICATE\r\n', /^x2 BAD/);
  add('empty line', '\r\n', /^\* BAD/);
  add('only spaces', '   \r\n', /^\* BAD/);
  add('unbalanced paren', 'x3 FETCH 1 (FLAGS\r\n', /^x3 BAD/);
  add('extra close paren', 'x4 FETCH 1 FLAGS)\r\n', /^x4 BAD/);
  add('unbalanced quote', 'x5 SELECT "INBOX\r\n', /^x5 (BAD|NO)/);
  add('bad sequence set', 'x6 FETCH 1:*:3 FLAGS\r\n', /^x6 BAD/);
  add('wrong state: STARTTLS after login', 'x7 STARTTLS\r\n', /^x7 BAD/);
  add('wrong state: LOGIN after login', 'x8 LOGIN a b\r\n', /^x8 BAD/);
  add('wrong state: AUTHENTICATE after login', 'x9 AUTHENTICATE PLAIN\r\n', /^x9 BAD/);
  add('huge literal', 'x10 APPEND INBOX {99999999999}\r\n', /^x10 BAD/);
  add('huge literal digits', 'x11 APPEND INBOX {999999999999999999999999}\r\n', /^x11 BAD/);
  add('over-long line', `x12 NOOP ${'a'.repeat(70_000)}\r\n`, /^(x12|\*) BAD/);
  add('NUL bytes', Buffer.from('x13 NO\0OP\r\n'), /^(x13|\*) BAD/);
  add('tag with plus', '+x SELECT INBOX\r\n', /^\* BAD/);
  add('COMPRESS not offered', 'x14 COMPRESS DEFLATE\r\n', /^x14 BAD/);
  add('ENABLE without capabilities', 'x15 ENABLE\r\n', /^x15 BAD/);
  add('UID without subcommand', 'x16 UID\r\n', /^x16 BAD/);
  add('UID unknown', 'x17 UID FROB 1\r\n', /^x17 BAD/);
  add('bad literal announcement', 'x18 LOGIN {abc}\r\n', /^x18 BAD/);
  add('CAPABILITY with args', 'x19 CAPABILITY foo\r\n', /^x19 BAD/);
  add('fetch without args', 'x20 FETCH\r\n', /^x20 BAD/);
  add('store bad flags', 'x21 STORE 1 +FLAGS (\\Seen\r\n', /^x21 BAD/);
  add('select with no mailbox', 'x22 SELECT\r\n', /^x22 BAD/);
  add('8-bit garbage command', Buffer.concat([Buffer.from('x23 '), Buffer.from([0xff, 0xfe, 0x80]), Buffer.from('\r\n')]), /^x23 BAD/);
  add('search unknown key', 'x24 SEARCH FROBKEY\r\n', /^x24 BAD/);
  // Random printable junk lines: each must be answered.
  for (let i = 0; i < 120; i++) {
    const junk = randomBytes(8 + (i % 60))
      .toString('base64')
      .replace(/[+/=]/g, (ch) => ({ '+': '(', '/': '"', '=': ')' })[ch]!);
    add(`random junk ${i}`, `r${i} ${junk}\r\n`, new RegExp(`^(r${i}|\\*) (BAD|NO|OK)`));
  }
  // Random bytes without CR/LF, then CRLF.
  for (let i = 0; i < 60; i++) {
    const bytes = randomBytes(1 + (i % 200)).map((b) => (b === 10 || b === 13 ? 32 : b));
    add(`random bytes ${i}`, Buffer.concat([Buffer.from(`b${i} `), bytes, Buffer.from('\r\n')]), new RegExp(`^(b${i}|\\*) (BAD|NO|OK)`));
  }
  return cases;
}

t.test('200+ malformed inputs each get BAD/NO while a parallel session keeps working', async (t) => {
  const signal = { stop: false };
  const healthy = healthyLoop(signal);
  const corpus = malformedCorpus();
  t.ok(corpus.length >= 200, `${corpus.length} cases`);
  const c = await loggedIn();
  let answered = 0;
  for (const kase of corpus) {
    c.write(kase.data);
    const line = await c.line(10_000);
    if (line === undefined) {
      t.fail(`${kase.name}: connection closed`);
      return;
    }
    if (kase.expect.test(line)) answered++;
    else t.fail(`${kase.name}: unexpected answer ${JSON.stringify(line.slice(0, 120))}`);
    // Drain anything else a command produced (e.g. untagged data before a tagged OK).
    const tagMatch = /^(\S+) /.exec(kase.data.toString('latin1'));
    if (tagMatch && line.startsWith('* ') && !/^\* (BAD|BYE)/.test(line)) await c.until(tagMatch[1]!);
  }
  t.equal(answered, corpus.length, 'every malformed input answered as expected');
  const still = await c.command('ok1', 'NOOP');
  t.match(still.at(-1), /^ok1 OK/, 'the session survived');
  c.close();

  // Inputs that end the session: the gateway must say BYE or answer first, and survive.
  const pre = await RawImap.connect(gw.imapsPort, { tls: true });
  await pre.line();
  t.match((await pre.command('p1', 'SELECT INBOX')).at(-1), /^p1 BAD/, 'command in the wrong state before login');
  t.match((await pre.command('p2', 'FETCH 1 FLAGS')).at(-1), /^p2 BAD/);
  t.match((await pre.command('p3', 'LOGIN alice wrong')).at(-1), /^p3 NO \[AUTHENTICATIONFAILED\]/);
  t.match((await pre.command('p4', 'AUTHENTICATE PLAIN !!!')).at(-1), /^p4 BAD/);
  t.match((await pre.command('p5', 'AUTHENTICATE CRAM-MD5')).at(-1), /^p5 NO/);
  // Literals bigger than the gateway buffers for commands it answers itself (64 KiB).
  pre.write('p7 LOGIN {70000}\r\n');
  t.match(await pre.line(), /^p7 BAD \[TOOBIG\]/, 'oversized synchronizing literal refused without "+"');
  t.match((await pre.command('p8', 'NOOP')).at(-1), /^p8 OK/, 'next command read normally');
  pre.write(`p9 LOGIN {70000+}\r\n${'x'.repeat(70000)} {3+}\r\npwd\r\n`);
  t.match(await pre.line(), /^p9 BAD \[TOOBIG\]/, 'oversized non-synchronizing literal refused');
  t.match((await pre.command('p10', 'NOOP')).at(-1), /^p10 OK/, 'its data was skipped, not read as commands');
  pre.write('p6 AUTHENTICATE PLAIN\r\n');
  t.match(await pre.line(), /^\+/);
  pre.write('*\r\n');
  t.match((await pre.until('p6')).at(-1), /^p6 BAD/, 'cancelled AUTHENTICATE');
  pre.close();

  const lit = await loggedIn();
  lit.write('n1 APPEND INBOX {999999999+}\r\nabc');
  const litLines = await lit.closedAfter();
  t.match(litLines.join('\n'), /n1 BAD \[TOOBIG\]/, 'oversized non-synchronizing literal refused');
  t.match(litLines.join('\n'), /\* BYE/, 'and the session closed with BYE');

  const half = await loggedIn();
  half.write('h1 APPEND INBOX {100}\r\n');
  t.match(await half.line(), /^\+ /, 'literal accepted');
  half.write('only part of it');
  half.close();

  const partial = await RawImap.connect(gw.imapsPort, { tls: true });
  await partial.line();
  partial.write(randomBytes(5000));
  partial.close();

  signal.stop = true;
  const rounds = await healthy;
  t.ok(rounds > 5, `healthy session kept working (${rounds} rounds)`);
  const metrics = await gw.metrics();
  t.ok(metricValue(metrics, 'lemonade_imap_malformed_commands_total') >= 20, 'malformed commands counted');
});

t.test('a 50 MB message appended and fetched back is byte-identical; gateway RSS grows far less', async (t) => {
  const size = 50 * 1024 * 1024;
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n';
  const header = 'From: big@example.org\r\nTo: alice@example.org\r\nSubject: 50 MB\r\n\r\n';
  const body = Buffer.from(header + line.repeat(Math.ceil((size - header.length) / line.length))).subarray(0, size - 2);
  const msg = Buffer.concat([body, Buffer.from('\r\n')]);
  const digest = createHash('sha256').update(msg).digest('hex');
  const rssBefore = gw.rssKiB();
  let peak = rssBefore;
  const sampler = setInterval(() => {
    peak = Math.max(peak, gw.rssKiB());
  }, 50);
  const client = new ImapFlow({
    host: '127.0.0.1', port: gw.imapsPort, secure: true,
    auth: { user: 'carol', pass: 'password' }, tls: { rejectUnauthorized: false }, logger: false, disableAutoIdle: true,
  });
  await client.connect();
  await client.mailboxCreate('Big');
  await client.append('Big', msg);
  await client.mailboxOpen('Big');
  const fetched = await client.fetchOne('1', { source: true });
  await client.logout();
  clearInterval(sampler);
  t.equal(fetched && fetched.source ? createHash('sha256').update(fetched.source).digest('hex') : 'none', digest, 'byte-identical');
  const growthMiB = (peak - rssBefore) / 1024;
  // Holding the message would cost at least its 50 MiB; streaming costs buffers, the code
  // paths first used here (side connections for APPENDUID, the store) and GC slack:
  // 13-20 MiB measured, so the bound leaves room without letting buffering pass.
  t.ok(growthMiB < 30, `gateway RSS grew by ${growthMiB.toFixed(1)} MiB for a 50 MiB message`);
});

t.test('Dovecot killed mid-session: BYE; NO [UNAVAILABLE] while down; works again after', async (t) => {
  const c = await loggedIn();
  await c.command('s', 'SELECT INBOX');
  await stack.stopDovecot();
  const lines = await c.closedAfter(10_000);
  t.match(lines.join('\n'), /^\* BYE/m, 'client told BYE');
  const again = await RawImap.connect(gw.imapsPort, { tls: true });
  t.match(await again.line(), /^\* OK/, 'gateway still accepts connections');
  t.match((await again.command('l', 'LOGIN alice password')).at(-1), /^l NO \[UNAVAILABLE\]/);
  again.close();
  await stack.startDovecot();
  const back = await loggedIn();
  t.match((await back.command('n', 'NOOP')).at(-1), /^n OK/, 'logins work once Dovecot is back');
  back.close();
});
