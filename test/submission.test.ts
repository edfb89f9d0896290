/**
 * Issue 3 acceptance: the submission front in front of the real Postfix and Dovecot.
 * nodemailer (STARTTLS and implicit TLS), swaks --pipeline, Python smtplib, a raw client
 * pipelining BDAT; per-recipient DSN parameters; every error reply; upstream down.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import nodemailer from 'nodemailer';
import MailComposer from 'nodemailer/lib/mail-composer';
import { startLegacyStack, withoutTrace, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-raw.js';

const run = promisify(execFile);
let stack: LegacyStack;
let gw: RunningGateway;

const policy = { senderPolicy: { mode: 'own', domains: ['example.org'] } };

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
  gw = await startGateway(stack, {
    config: { submission: { ...policy, limits: { maxRecipients: 5, maxMessageSize: 2 * 1024 * 1024 }, timeouts: { dataSeconds: 3 } } },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

const b64 = (s: string) => Buffer.from(s).toString('base64');




/** Asserts two messages are byte-identical, showing where they first differ when not. */
function sameBytes(t: Test, actual: Buffer, expected: Buffer, message: string): void {
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++;
  const around = (b: Buffer) => JSON.stringify(b.subarray(Math.max(0, i - 60), i + 60).toString('latin1'));
  t.ok(actual.equals(expected), message, actual.equals(expected) ? {} : {
    diagnostic: true, firstDifference: i, lengths: [actual.length, expected.length], actual: around(actual), expected: around(expected),
  });
}

function composed(subject: string, attachment: Buffer): Promise<Buffer> {
  return new MailComposer({
    from: 'alice@example.org',
    to: 'bob@example.org',
    subject,
    text: 'Please find attached.\r\n.leading dot line\r\n',
    attachments: [{ filename: 'data.bin', content: attachment }],
  })
    .compile()
    .build();
}

t.test('nodemailer over STARTTLS and implicit TLS: delivered byte-identical', async (t) => {
  for (const [name, port, secure] of [
    ['starttls', gw.submissionPort, false],
    ['implicit', gw.submissionsPort, true],
  ] as const) {
    const raw = await composed(`attachment via ${name}`, randomBytes(100_000));
    const before = await stack.messageCount('bob');
    const transport = nodemailer.createTransport({
      host: '127.0.0.1', port, secure, requireTLS: !secure,
      auth: { user: 'alice', pass: 'password' }, tls: { rejectUnauthorized: false },
    });
    const info = await transport.sendMail({ envelope: { from: 'alice@example.org', to: ['bob@example.org'] }, raw });
    transport.close();
    t.match(info.response, /^250 /, `${name}: accepted`);
    const delivered = await stack.newestMessage('bob', before + 1);
    sameBytes(t, withoutTrace(delivered), raw, `${name}: body byte-identical`);
    t.match(delivered.toString('latin1'), /Received: from [^\r\n]*\r\n\tby localhost \(lemonade-gateway\) with ESMTPSA/, `${name}: our trace header`);
  }
});

t.test('swaks --pipeline with AUTH PLAIN', async (t) => {
  const before = await stack.messageCount('bob');
  const { stdout } = await run('swaks', [
    '--server', `127.0.0.1:${gw.submissionPort}`, '--tls', '--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', 'password',
    '--from', 'alice@example.org', '--to', 'bob@example.org', '--pipeline', '--header', 'Subject: swaks pipelined',
  ], { timeout: 30_000 });
  // swaks prints what it read in order: the pipelined MAIL, RCPT and DATA replies come back together.
  const replies = [...stdout.matchAll(/^<~ {1,2}(\d{3})[ -](\S+)?/gm)].filter((m) => !m[0].includes('250-')).map((m) => m[1]);
  t.same(replies.slice(-6), ['235', '250', '250', '354', '250', '221'], 'AUTH, MAIL, RCPT, DATA, end of data, QUIT in order');
  t.match(stdout, /~> MAIL FROM:[^\n]*\n\s*~> RCPT TO:[^\n]*\n\s*~> DATA/, 'swaks pipelined MAIL, RCPT and DATA');
  // The MTA's own final reply, relayed (DATA upstream for a DATA client: "Ok: queued as ID").
  t.match(stdout, /<~\s+250 2\.0\.0 Ok: queued as [0-9A-F]+/);
  await stack.newestMessage('bob', before + 1);
});

t.test('Python smtplib with STARTTLS and LOGIN', async (t) => {
  const before = await stack.messageCount('carol');
  const script = `
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', ${gw.submissionPort})
s.starttls(context=ctx)
s.login('alice', 'password')
r = s.sendmail('alice@example.org', ['carol@example.org'], b'Subject: from smtplib\\r\\n\\r\\nhello\\r\\n')
print('refused', r)
print('quit', s.quit()[0])
`;
  const { stdout } = await run('python3', ['-c', script], { timeout: 30_000 });
  t.match(stdout, /refused \{\}/);
  t.match(stdout, /quit 221/);
  await stack.newestMessage('carol', before + 1);
});

async function authed(port = gw.submissionsPort): Promise<RawSmtp> {
  return RawSmtp.authenticated(port, { tls: true });
}

t.test('pipelined BDAT chunks (one binary) in one write: delivered byte-identical', async (t) => {
  const before = await stack.messageCount('bob');
  // 8BITMIME content (RFC 6152): every octet 0x20-0xFF in CRLF lines; no NUL or bare CR/LF,
  // which Postfix and Dovecot would normalise (neither offers BINARYMIME). The chunks end
  // mid-line and between CR and LF, so the gateway must not treat chunk ends as line ends.
  const octets = Buffer.from(Array.from({ length: 224 }, (_, i) => i + 0x20));
  const binary = Buffer.concat([octets.subarray(0, 100), Buffer.from('\r\n'), octets.subarray(100), Buffer.from('\r')]);
  const head = Buffer.from('From: alice@example.org\r\nTo: bob@example.org\r\nSubject: chunked\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nfirst line ');
  const tail = Buffer.from('\n.\r\n..two dots\r\nafter a dot line\r\n');
  const c = await authed();
  c.write(
    Buffer.concat([
      Buffer.from('MAIL FROM:<alice@example.org> BODY=8BITMIME\r\nRCPT TO:<bob@example.org>\r\n'),
      Buffer.from(`BDAT ${head.length}\r\n`), head,
      Buffer.from(`BDAT ${binary.length}\r\n`), binary,
      Buffer.from(`BDAT ${tail.length} LAST\r\n`), tail,
    ]),
  );
  const replies = [];
  for (let i = 0; i < 5; i++) replies.push(await c.reply());
  t.same(replies.map((r) => r?.code), [250, 250, 250, 250, 250], replies.map((r) => r?.text).join(' | '));
  t.match(replies[4]?.text, /queued/);
  const delivered = await stack.newestMessage('bob', before + 1);
  sameBytes(t, withoutTrace(delivered), Buffer.concat([head, binary, tail]), 'byte-identical');
  c.close();
});

t.test('per-recipient DSN: NOTIFY=SUCCESS,FAILURE with ORCPT gets a DSN, NOTIFY=NEVER does not', async (t) => {
  const aliceBefore = await stack.messageCount('alice');
  const c = await authed();
  t.equal((await c.command('MAIL FROM:<alice@example.org> RET=HDRS ENVID=env+2Did42')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Balias@example.org')).code, 250);
  t.equal((await c.command('RCPT TO:<carol@example.org> NOTIFY=NEVER')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  const r = await c.command('Subject: dsn test\r\n\r\nhello\r\n.');
  t.equal(r.code, 250);
  c.close();
  const dsn = (await stack.newestMessage('alice', aliceBefore + 1)).toString('latin1');
  t.match(dsn, /Original-Envelope-Id: env-id42/i, 'ENVID carried');
  t.match(dsn, /Original-Recipient: rfc822;\s*bob\+alias@example\.org/i, 'ORCPT carried for bob');
  t.match(dsn, /Action: (delivered|relayed)/i, 'a success DSN (relayed: Dovecot LMTP has no DSN)');
  t.match(dsn, /Content-Type: text\/rfc822-headers/i, 'RET=HDRS: headers only returned');
  t.notMatch(dsn, /carol@example\.org/, 'nothing about the NEVER recipient');
  await new Promise((r) => setTimeout(r, 2000));
  t.equal(await stack.messageCount('alice'), aliceBefore + 1, 'exactly one DSN');
});

t.test('every error gets its code, and the session carries on', async (t) => {
  // Meanwhile another client submits normally: errors in one session touch no other.
  const bobBefore = await stack.messageCount('bob');
  const healthy = (async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1', port: gw.submissionsPort, secure: true,
      auth: { user: 'alice', pass: 'password' }, tls: { rejectUnauthorized: false },
    });
    const responses: string[] = [];
    for (let i = 0; i < 5; i++) {
      const info = await transport.sendMail({ from: 'alice@example.org', to: 'bob@example.org', subject: `meanwhile ${i}`, text: 'still here' });
      responses.push(info.response);
      await new Promise((r) => setTimeout(r, 200));
    }
    transport.close();
    return responses;
  })();
  const plain = await RawSmtp.connect(gw.submissionPort);
  t.equal((await plain.reply())?.code, 220);
  const ehlo = await plain.command('EHLO client.example.org');
  for (const kw of ['PIPELINING', '8BITMIME', 'SIZE 2097152', 'DSN', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'STARTTLS']) t.match(ehlo.text, new RegExp(`250[ -]${kw}\\b`), kw);
  t.notMatch(ehlo.text, /AUTH/, 'no AUTH before TLS');
  t.match((await plain.command(`AUTH PLAIN ${b64('\0alice\0password')}`)).text, /^530 5\.7\.0/, 'TLS required');
  t.match((await plain.command('MAIL FROM:<alice@example.org>')).text, /^530 5\.7\.0/, 'auth required');
  plain.close();

  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await c.reply();
  t.match((await c.command('MAIL FROM:<alice@example.org>')).text, /^503 5\.5\.1/, 'MAIL before EHLO');
  await c.command('EHLO client.example.org');
  t.match((await c.command(`AUTH PLAIN ${b64('\0alice\0wrong')}`)).text, /^535 5\.7\.8/, 'bad password');
  t.match((await c.command('FROB')).text, /^500 5\.5\.1/, 'unknown command');
  t.match((await c.command(`NOOP ${'x'.repeat(5000)}`)).text, /^500 5\.5\.2/, 'line too long');
  t.equal((await c.command(`AUTH PLAIN ${b64('\0alice\0password')}`)).code, 235);
  t.match((await c.command('RCPT TO:<bob@example.org>')).text, /^503 5\.5\.1/, 'RCPT before MAIL');
  t.match((await c.command('MAIL FROM:alice@example.org')).text, /^501 5\.5\.4/, 'syntax');
  t.match((await c.command('MAIL FROM:<mallory@example.org>')).text, /^553 5\.7\.1/, 'sender not owned');
  t.match((await c.command('MAIL FROM:<alice@example.org> SIZE=99999999')).text, /^552 5\.3\.4/, 'declared size');
  t.match((await c.command('MAIL FROM:<alice@example.org> FROB=1')).text, /^555 5\.5\.4/, 'unknown parameter');
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.match((await c.command('MAIL FROM:<alice@example.org>')).text, /^503 5\.5\.1/, 'nested MAIL');
  t.match((await c.command('RCPT TO:<bob@example.org> NOTIFY=SOMETIMES')).text, /^501 5\.5\.4/, 'bad NOTIFY');
  for (let i = 0; i < 5; i++) t.equal((await c.command(`RCPT TO:<bob@example.org>`)).code, 250);
  t.match((await c.command('RCPT TO:<bob@example.org>')).text, /^452 4\.5\.3/, 'too many recipients');
  t.match((await c.command('RCPT TO:<someone@elsewhere.invalid>')).text, /^452 4\.5\.3/);
  t.equal((await c.command('RSET')).code, 250);
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.match((await c.command('RCPT TO:<x@not-ours.invalid>')).text, /^5\d\d 5\.\d\.\d/, "the MTA's own refusal, relayed");
  t.match((await c.command('DATA')).text, /^554 5\.5\.1/, 'DATA without valid recipients');
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write(`Subject: big\r\n\r\n${'0123456789'.repeat(100).concat('\r\n').repeat(2200)}`);
  t.match((await c.command('.')).text, /^552 5\.3\.4/, 'actual size over the limit');
  t.equal((await c.command('NOOP')).code, 250, 'session continues');
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  c.write(`Subject: long line\r\n\r\n${'x'.repeat(1500)}\r\n`);
  t.match((await c.command('.')).text, /^500 5\.5\.2/, 'message text line over 1000 octets (RFC 5321 §4.5.3.1.6)');
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  const big = 2 * 1024 * 1024 + 10;
  c.write(`BDAT ${big} LAST\r\n`);
  c.write(Buffer.alloc(big, 0x61));
  t.match((await c.reply(20_000))?.text, /^552 5\.3\.4/, 'BDAT content over the limit');
  t.equal((await c.command('NOOP')).code, 250, 'session continues after the oversized chunk');
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await c.command('RCPT TO:<bob@example.org>')).code, 250);
  c.write('BDAT 100\r\nonly twenty bytes...');
  const timeout = await c.reply(10_000);
  t.match(timeout?.text, /^421 4\.4\.2/, 'BDAT chunk shorter than announced: timeout');
  c.close();

  const meanwhile = await healthy;
  t.equal(meanwhile.filter((r) => /^250 /.test(r)).length, 5, 'the other session submitted all five meanwhile');
  t.equal(await stack.messageCount('bob'), bobBefore + 5, 'and only those five were delivered');

  const m = await gw.metrics();
  t.ok(metricValue(m, 'lemonade_submission_messages_total', { result: 'rejected', reason: 'size' }) >= 2, 'size rejections counted');
  t.ok(metricValue(m, 'lemonade_submission_messages_total', { result: 'accepted' }) >= 5, 'accepted messages counted');
  t.ok(metricValue(m, 'lemonade_submission_messages_total', { result: 'rejected', reason: 'sender' }) >= 1, 'sender policy rejections counted');
  t.ok(metricValue(m, 'lemonade_submission_auth_total', { result: 'failed' }) >= 1, 'auth failure counted');
  t.ok(metricValue(m, 'lemonade_smtp_relay_duration_seconds_count') >= 5, 'relay latency observed');
  t.ok(metricValue(m, 'lemonade_bytes_total', { protocol: 'submission', direction: 'upstream_out' }) > 5 * 10, 'bytes relayed counted');
  t.ok(metricValue(m, 'lemonade_sessions_total', { protocol: 'submission' }) >= 3, 'sessions counted');
});

t.test('a pipelined burst gets its replies in order', async (t) => {
  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await c.reply();
  c.write(
    ['EHLO burst.example.org', `AUTH PLAIN ${b64('\0alice\0password')}`, 'MAIL FROM:<alice@example.org>', 'RCPT TO:<bob@example.org>', 'RCPT TO:<nobody@nowhere.invalid>', 'RCPT TO:<carol@example.org>', 'DATA'].join('\r\n') + '\r\n',
  );
  const codes = [];
  for (let i = 0; i < 7; i++) codes.push((await c.reply())?.code);
  t.equal(codes[0], 250);
  t.same(codes.slice(1, 4), [235, 250, 250]);
  t.ok(codes[4]! >= 500, 'refused recipient in place');
  t.same(codes.slice(5), [250, 354]);
  t.equal((await c.command('Subject: burst\r\n\r\nbody\r\n.')).code, 250);
  c.close();
});

t.test('upstream MTA down: 4xx, nothing reported as sent; served again once it is back', async (t) => {
  const before = await stack.messageCount('bob');
  await stack.stopPostfix();
  try {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1', port: gw.submissionsPort, secure: true,
      auth: { user: 'alice', pass: 'password' }, tls: { rejectUnauthorized: false },
    });
    const err = await transport.sendMail({ from: 'alice@example.org', to: 'bob@example.org', text: 'x' }).then(() => undefined, (e: { responseCode?: number; response?: string }) => e);
    transport.close();
    t.ok(err, 'not reported as sent');
    t.ok((err?.responseCode ?? 0) >= 400 && (err?.responseCode ?? 0) < 500, `temporary failure (${err?.response})`);
    t.match(err?.response, /^451 4\.4\.1 /, 'upstream unavailable: 451 4.4.1');
  } finally {
    await stack.startPostfix();
  }
  const transport = nodemailer.createTransport({
    host: '127.0.0.1', port: gw.submissionsPort, secure: true,
    auth: { user: 'alice', pass: 'password' }, tls: { rejectUnauthorized: false },
  });
  const info = await transport.sendMail({ from: 'alice@example.org', to: 'bob@example.org', subject: 'after restart', text: 'x' });
  transport.close();
  t.match(info.response, /^250 /, 'accepted once Postfix is back');
  await stack.newestMessage('bob', before + 1);
  t.equal(await stack.messageCount('bob'), before + 1, 'only the accepted message was delivered');
});
