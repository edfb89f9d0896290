/**
 * Bad input on the submission port: every malformed command gets a 5xx reply with an
 * enhanced status code, the session stays usable afterwards, too many errors in a row end
 * it with 421, and a healthy session on the side is never disturbed. Every way a
 * transaction can end hands its MTA connection back: the relay pool's gauge returns to
 * no connection in use and never counts more than the kernel has open (issue 15 §4).
 */
import t from 'tap';
import nodemailer from 'nodemailer';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { establishedTo, metricValue, startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;
const MAX_ERRORS = 5;
/** Small, so a BDAT beyond it is cheap to send (RFC 1870). */
const MAX_SIZE = 64 * 1024;

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
  gw = await startGateway(stack, {
    config: { submission: { senderPolicy: { mode: 'own', domains: ['example.org'] }, limits: { maxErrors: MAX_ERRORS, maxMessageSize: MAX_SIZE } } },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

const auth = `AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`;

/** Inputs that are each one bad command line (the CRLF is added). */
const badLines: string[] = [
  '', ' ', '\t', 'X', '1234', 'EHLO', 'HELO', 'EHLO two words', 'MAIL', 'MAIL FROM', 'MAIL FROM:', 'MAIL FROM:<',
  'MAIL FROM:<alice@example.org', 'MAIL FROM:alice@example.org>', 'MAIL FROM:<<alice@example.org>>', 'MAIL FROM:<a b@example.org>',
  'MAIL FROM:<@route,@x:alice@example.org> SIZE=', 'MAIL FROM:<alice@example.org> SIZE=-1', 'MAIL FROM:<alice@example.org> SIZE=1e3',
  'MAIL FROM:<alice@example.org> BODY=7BITS', 'MAIL FROM:<alice@example.org> RET=ALL', 'MAIL FROM:<alice@example.org> ENVID=a b',
  'MAIL FROM:<alice@example.org> =x', 'MAIL FROM:<alice@example.org> SIZE=1 SIZE=2', 'MAIL TO:<alice@example.org>',
  'MAIL FROM:<alice@[300.1.1.1]>', 'MAIL FROM:<alice@example..org>', 'MAIL FROM:<\u00e9@example.org>', 'MAIL FROM:<"unterminated@example.org>',
  'RCPT', 'RCPT TO:', 'RCPT TO:<>', 'RCPT FROM:<bob@example.org>', 'DATA now', 'RSET x', 'QUIT now', 'STARTTLS x', 'AUTH',
  'AUTH PLAIN a b c', 'BDAT', 'BDAT x', 'BDAT -1', 'BDAT 1 FIRST', 'BDAT 99999999999999999999', 'VRFY', 'EXPN list', 'TURN', 'ETRN x',
  'XCLIENT ADDR=1.2.3.4', 'XFORWARD NAME=x', '\u0000\u0001\u0002', '\u00ff\u00fe', 'MAIL\u0000FROM:<alice@example.org>', 'GET / HTTP/1.1',
  'x'.repeat(600), 'MAIL FROM:<' + 'a'.repeat(300) + '@example.org>', 'RCPT TO:<bob@' + 'b'.repeat(300) + '.org>',
];

t.test('each malformed command: a 5xx with an enhanced code, and the session goes on', async (t) => {
  const healthy = (async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1', port: gw.submissionsPort, secure: true, pool: false,
      auth: { user: 'alice', pass: 'password' }, tls: { rejectUnauthorized: false },
    });
    let accepted = 0;
    for (let i = 0; i < 4; i++) {
      const info = await transport.sendMail({ from: 'alice@example.org', to: 'carol@example.org', subject: `beside ${i}`, text: 'x' });
      if (/^250 /.test(info.response)) accepted++;
    }
    transport.close();
    return accepted;
  })();
  const carolBefore = await stack.messageCount('carol');
  const open = async () => {
    const conn = await RawSmtp.connect(gw.submissionsPort, { tls: true });
    await conn.reply();
    await conn.command('EHLO fuzz.example.org');
    t.equal((await conn.command(auth)).code, 235);
    return conn;
  };
  let c = await open();
  for (const line of badLines) {
    const r = await c.command(line);
    // BDAT with a bad size closes: the chunk's end cannot be found (RFC 3030 §2).
    if (/^BDAT/.test(line) && r.code === 501) {
      t.match(r.text, /^501 5\.5\.4 /, `${JSON.stringify(line.slice(0, 40))} → ${r.text}`);
      t.equal(await c.reply(5000), undefined, 'and the connection is closed');
      c.close();
      c = await open();
      continue;
    }
    t.ok(r.code >= 500 && r.code < 600, `${JSON.stringify(line.slice(0, 40))} → ${r.text.slice(0, 80)}`);
    if (r.code >= 500) t.match(r.text, /^5\d\d 5\.\d{1,3}\.\d{1,3} /, 'with an enhanced status code');
    // A success resets the error count, so the fuzz never trips maxErrors.
    t.equal((await c.command('NOOP')).code, 250, 'still usable');
    await c.command('RSET');
  }
  t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250, 'a real transaction afterwards');
  t.equal((await c.command('RCPT TO:<carol@example.org>')).code, 250);
  t.equal((await c.command('DATA')).code, 354);
  t.equal((await c.command('Subject: after fuzz\r\n\r\nok\r\n.')).code, 250);
  c.close();
  t.equal(await healthy, 4, 'the session beside it submitted all its messages');
  // Postfix's 250 is queueing, not delivery: wait for the LMTP deliveries (an extra message would still show).
  t.equal(await stack.waitForMessageCount('carol', 'INBOX', carolBefore + 5), carolBefore + 5, 'and exactly the accepted messages arrived');
});

t.test('errors in a row end the session with 421', async (t) => {
  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await c.reply();
  await c.command('EHLO fuzz.example.org');
  for (let i = 1; i < MAX_ERRORS; i++) t.equal((await c.command('FROB')).code, 500);
  const last = await c.command('FROB');
  t.match(last.text, /^500 5\.5\.1[^\n]*\n421 4\.7\.0 |^500 /, 'the last error');
  const closing = last.text.includes('421') ? last : await c.reply(5000);
  t.match(closing?.text, /^421 4\.7\.0 /, 'then 421 and the connection closes');
  t.equal(await c.reply(5000), undefined);
});

t.test('binary garbage and a flood without line ends', async (t) => {
  const c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await c.reply();
  // Dropped as it comes (memory stays bounded) and answered once the line ends, so the
  // reply keeps its place among pipelined ones (RFC 2920 §3.1).
  c.write(Buffer.alloc(200_000, 0x41));
  c.write('\r\n');
  const r = await c.reply(5000);
  t.match(r?.text, /^500 5\.5\.2 /, 'line too long');
  c.write(Buffer.from([0x00, 0xff, 0x80, 0x0d, 0x0a]));
  t.match((await c.reply(5000))?.text, /^500 5\.5\.[12] /, 'binary line');
  t.equal((await c.command('NOOP')).code, 250, 'in step again after the overlong line ends');
  c.close();
});

/** The relay pool as the gateway reports it, and the connections to Postfix the kernel has for the gateway. */
async function relayPool(): Promise<{ idle: number; inUse: number; real: number }> {
  const text = await gw.metrics();
  return {
    idle: metricValue(text, 'lemonade_smtp_relay_connections_open', { state: 'idle' }),
    inUse: metricValue(text, 'lemonade_smtp_relay_connections_open', { state: 'in_use' }),
    real: establishedTo(gw.pid, stack.smtpPort),
  };
}

t.test('every way a transaction ends gives its MTA connection back (relay pool gauge)', async (t) => {
  const HEAD = 'From: alice@example.org\r\nTo: carol@example.org\r\nSubject: pool\r\n\r\n';
  const open = () => RawSmtp.authenticated(gw.submissionsPort, { tls: true });
  /** MAIL and RCPT relayed: the transaction holds one MTA connection now. */
  const begin = async (c: RawSmtp, name: string) => {
    t.equal((await c.command('MAIL FROM:<alice@example.org>')).code, 250, `${name}: MAIL`);
    t.equal((await c.command('RCPT TO:<carol@example.org>')).code, 250, `${name}: RCPT`);
    const during = await relayPool();
    t.equal(during.inUse, 1, `${name}: one connection in use during the transaction`);
    t.ok(during.idle + during.inUse <= during.real, `${name}: idle ${during.idle} + in use ${during.inUse} <= ${during.real} open`);
  };
  const endings: Array<{ name: string; run(c: RawSmtp): Promise<void> }> = [
    {
      name: 'refused BURL',
      async run(c) {
        await begin(c, this.name);
        // RFC 4468 §3.2: a BURL that cannot be resolved fails the transaction, after its content began upstream.
        const r = await c.command(`BURL imap://alice@localhost/INBOX/;UID=1;URLAUTH=submit+alice:INTERNAL:${'0'.repeat(64)} LAST`);
        t.match(r.text, /^554 /, `${this.name}: ${r.text}`);
      },
    },
    {
      name: 'BDAT beyond SIZE',
      async run(c) {
        await begin(c, this.name);
        // RFC 1870 §6: refused (552) once the chunk ends; the gateway stops relaying it as soon as it is too big.
        c.write(`BDAT ${MAX_SIZE + 1000} LAST\r\n`);
        c.write(Buffer.alloc(MAX_SIZE + 1000, 0x61));
        t.match((await c.reply())?.text, /^552 5\.3\.4 /, `${this.name}: 552`);
      },
    },
    {
      name: 'overlong line in DATA',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('DATA')).code, 354);
        // RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
        t.match((await c.command(`${HEAD}${'x'.repeat(2000)}\r\n.`)).text, /^500 5\.5\.2 /, `${this.name}: 500`);
      },
    },
    {
      name: 'RSET after RCPT',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('RSET')).code, 250, `${this.name}: 250`);
      },
    },
    {
      name: 'RSET after a BDAT chunk',
      async run(c) {
        await begin(c, this.name);
        c.write(`BDAT ${HEAD.length}\r\n${HEAD}`);
        t.equal((await c.reply())?.code, 250, `${this.name}: chunk taken`);
        t.equal((await c.command('RSET')).code, 250, `${this.name}: RSET`);
      },
    },
    {
      name: 'QUIT after RCPT',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('QUIT')).code, 221, `${this.name}: 221`);
      },
    },
    {
      name: 'client gone mid-DATA',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('DATA')).code, 354);
        c.write(`${HEAD}half a message\r\n`);
        await new Promise((r) => setTimeout(r, 200));
        c.close();
      },
    },
    {
      name: 'MTA gone mid-DATA',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('DATA')).code, 354);
        c.write(`${HEAD}the MTA stops under this message\r\n`);
        await stack.stopPostfix();
        try {
          // RFC 3463 X.4.1: no answer from the MTA; the client keeps the message.
          t.match((await c.command('.', 20_000)).text, /^451 4\.4\.1 /, `${this.name}: 451`);
        } finally {
          await stack.startPostfix();
        }
      },
    },
    {
      name: 'delivered',
      async run(c) {
        await begin(c, this.name);
        t.equal((await c.command('DATA')).code, 354);
        t.match((await c.command(`${HEAD}relayed after all the others\r\n.`)).text, /^250 /, `${this.name}: 250`);
      },
    },
  ];
  for (const ending of endings) {
    const c = await open();
    await ending.run(c);
    // An RSET's reply from the MTA, or a socket's close, may still be on its way: settle, then look.
    let after = await relayPool();
    for (let i = 0; i < 50 && (after.inUse !== 0 || after.idle + after.inUse > after.real); i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await relayPool();
    }
    t.equal(after.inUse, 0, `${ending.name}: no connection in use afterwards`);
    t.ok(after.idle + after.inUse <= after.real, `${ending.name}: idle ${after.idle} + in use ${after.inUse} <= ${after.real} open to Postfix`);
    c.close();
  }
});
