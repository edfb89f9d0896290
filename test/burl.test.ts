/**
 * BURL resolved by the gateway (issue 5): the forward of the profile draft §2.4 end to end
 * over the legacy Dovecot and Postfix (CATENATE into Sent, GENURLAUTH submit+alice, BURL),
 * the split BDAT + BURL + BDAT form, a 5 MB attachment with a few KB on the client's
 * links, and every refusal with the session going on.
 */
import t from 'tap';
import net from 'node:net';
import path from 'node:path';
import { masterClient, startLegacyStack, withoutTrace, type LegacyStack } from './helpers/stack.js';
import { freePort, metricValue, startGateway, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { RawSmtp } from './helpers/smtp-raw.js';
import { withAttachment } from './helpers/messages.js';

let stack: LegacyStack;
let gw: RunningGateway;
/** Another gateway, named partner.test, standing in for a trusted remote IMAP server with URLAUTH. */
let partner: RunningGateway;
let closedPort: number;

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
  partner = await startGateway(stack, { config: { hostname: 'partner.test', imap: { urlauth: { submitUsers: ['submit'] } } } });
  closedPort = await freePort();
  const trusted = (host: string, port: number, password: string, tls = 'implicit') => ({
    host,
    address: '127.0.0.1',
    port,
    tls,
    tlsOptions: { ca: path.join(partner.dir, 'data', 'tls', 'selfsigned-cert.pem'), servername: 'partner.test' },
    user: 'submit',
    password,
    connectTimeoutMs: 3000,
  });
  gw = await startGateway(stack, {
    config: {
      submission: {
        senderPolicy: { mode: 'own', domains: ['example.org'] },
        burl: {
          allowedHosts: [
            trusted('partner.test', partner.imapsPort, 'password'),
            trusted('wrong-password.test', partner.imapsPort, 'not-the-password'),
            trusted('down.test', closedPort, 'password'),
            trusted('starttls.test', partner.imapPort, 'password', 'starttls'),
          ],
        },
      },
    },
  });
});
t.teardown(async () => {
  await gw?.stop();
  await partner?.stop();
  await stack?.stop();
});

const original = (bytes: number) => withAttachment(bytes, 'carol@example.org');
const seed = (raw: Buffer) => stack.append('alice', 'INBOX', raw);

const HEAD = 'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Fwd: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="f"\r\n\r\n--f\r\nContent-Type: text/plain\r\n\r\nFor you.\r\n--f\r\n';
const TAIL = '\r\n--f--\r\n';

async function imapLogin(): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  await c.command('l', 'LOGIN alice password');
  await c.command('cs', 'CREATE Sent');
  return c;
}

/** Composes the forward in Sent by CATENATE; returns the Sent copy's UID and UIDVALIDITY. */
async function composeInSent(c: RawImap, src: { uid: number; uidValidity: number }): Promise<{ uid: number; uidValidity: number }> {
  await c.command('s', 'SELECT INBOX');
  await c.command('b', `UID FETCH ${src.uid} (BODYSTRUCTURE)`);
  const url = `/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}/;SECTION=2`;
  c.write(`a APPEND Sent (\\Seen) CATENATE (TEXT {${HEAD.length}+}\r\n${HEAD} URL "${url}.MIME" URL "${url}" TEXT {${TAIL.length}+}\r\n${TAIL})\r\n`);
  const r = await c.until('a', 60_000);
  const m = /^a OK \[APPENDUID (\d+) (\d+)\]/.exec(r.at(-1)!);
  if (!m) throw new Error(r.at(-1));
  await c.command('st', `UID STORE ${src.uid} +FLAGS ($Forwarded)`);
  return { uidValidity: Number(m[1]), uid: Number(m[2]) };
}

async function genurlauth(c: RawImap, rump: string): Promise<string> {
  const r = await c.command('g', `GENURLAUTH "${rump}" INTERNAL`);
  const m = /^\* GENURLAUTH "([^"]+)"/.exec(r[0]!);
  if (!m) throw new Error(r.join('\n'));
  return m[1]!;
}

async function smtpSession(): Promise<RawSmtp> {
  const s = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await s.reply();
  await s.command('EHLO phone.example.org');
  const a = await s.command(`AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`);
  if (a.code !== 235) throw new Error(a.text);
  return s;
}

async function sentCopy(uid: number): Promise<Buffer> {
  const c = await masterClient(stack, 'alice');
  await c.mailboxOpen('Sent');
  const msg = await c.fetchOne(String(uid), { source: true }, { uid: true });
  await c.logout();
  if (!msg || !msg.source) throw new Error('no Sent copy');
  return msg.source;
}

t.test('draft §2.4 end to end: CATENATE into Sent, GENURLAUTH submit+alice, BURL LAST', async (t) => {
  const src = await seed(original(4000).raw);
  const imap = await imapLogin();
  const sent = await composeInSent(imap, src);
  const url = await genurlauth(imap, `imap://alice@localhost/Sent;UIDVALIDITY=${sent.uidValidity}/;UID=${sent.uid};URLAUTH=submit+alice`);
  const s = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await s.reply();
  t.match((await s.command('EHLO phone.example.org')).text, /250[ -]BURL(\n|$)/, 'bare BURL before AUTH');
  t.equal((await s.command(`AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`)).code, 235);
  t.match((await s.command('EHLO phone.example.org')).text, /250[ -]BURL imap/, 'BURL imap once authenticated');
  const bobBefore = await stack.messageCount('bob');
  t.equal((await s.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await s.command('RCPT TO:<bob@example.org>')).code, 250);
  const r = await s.command(`BURL ${url} LAST`, 30_000);
  t.match(r.text, /^250 /, `BURL LAST: ${r.text}`);
  const delivered = await stack.newestMessage('bob', bobBefore + 1);
  t.ok(withoutTrace(delivered).equals(await sentCopy(sent.uid)), "bob's copy equals the Sent copy byte for byte (only trace headers added)");
  s.close();
  imap.close();
});

t.test('split: BDAT new text, BURL of a section, BDAT 0 LAST', async (t) => {
  const o = original(2000);
  const src = await seed(o.raw);
  const imap = await imapLogin();
  const url = await genurlauth(imap, `imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}/;SECTION=2;URLAUTH=submit+alice`);
  const s = await smtpSession();
  const head = 'From: alice@example.org\r\nTo: carol@example.org\r\nSubject: just the data\r\n\r\n';
  const before = await stack.messageCount('carol');
  t.equal((await s.command('MAIL FROM:<alice@example.org>')).code, 250);
  t.equal((await s.command('RCPT TO:<carol@example.org>')).code, 250);
  s.write(`BDAT ${head.length}\r\n${head}`);
  t.equal((await s.reply())?.code, 250);
  t.equal((await s.command(`BURL ${url}`)).code, 250, 'BURL without LAST adds a piece');
  t.match((await s.command('BDAT 0 LAST')).text, /^250 /);
  const delivered = await stack.newestMessage('carol', before + 1);
  // The section ends without CRLF; Postfix ends every message with one (RFC 5321 §4.1.1.4).
  t.equal(withoutTrace(delivered).toString(), `${head}${o.body}\r\n`, 'new text then the section, in order');
  s.close();
  imap.close();
});

t.test('a 5 MB attachment: under 16 KB on the client links for the whole flow', async (t) => {
  const o = original(5 * 1024 * 1024);
  const src = await seed(o.raw);
  const imap = await imapLogin();
  const sent = await composeInSent(imap, src);
  const url = await genurlauth(imap, `imap://alice@localhost/Sent;UIDVALIDITY=${sent.uidValidity}/;UID=${sent.uid};URLAUTH=submit+alice`);
  const s = await smtpSession();
  const before = await stack.messageCount('bob');
  await s.command('MAIL FROM:<alice@example.org>');
  await s.command('RCPT TO:<bob@example.org>');
  t.match((await s.command(`BURL ${url} LAST`, 60_000)).text, /^250 /);
  s.close();
  imap.close();
  const total = imap.bytesSent + imap.bytesReceived + s.bytesSent + s.bytesReceived;
  t.ok(total < 16 * 1024, `client bytes on both links: ${total}`);
  const delivered = await stack.newestMessage('bob', before + 1, 60_000);
  t.equal(withoutTrace(delivered).length, HEAD.length + o.mime.length + o.body.length + TAIL.length, 'the whole forward arrived');
});

t.test('refusals: wrong submit user, tampered, expired, RESETKEY, other host (not contacted), deleted message', async (t) => {
  const src = await seed(original(1000).raw);
  const imap = await imapLogin();
  const base = `imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}/;SECTION=1`;
  const forBob = await genurlauth(imap, `${base};URLAUTH=submit+bob`);
  const good = await genurlauth(imap, `${base};URLAUTH=submit+alice`);
  const tampered = good.slice(0, -1) + (good.endsWith('0') ? '1' : '0');
  const expired = await genurlauth(imap, `${base};EXPIRE=2020-01-01T00:00:00Z;URLAUTH=submit+alice`);
  // Something listening on another loopback address must never be contacted.
  let contacted = false;
  const trap = net.createServer((sock) => {
    contacted = true;
    sock.destroy();
  });
  await new Promise<void>((resolve) => trap.listen(0, '127.0.0.2', resolve));
  const trapPort = (trap.address() as net.AddressInfo).port;
  const elsewhere = `imap://alice@127.0.0.2:${trapPort}/INBOX/;UID=${src.uid};URLAUTH=submit+alice:INTERNAL:${'a'.repeat(64)}`;
  const s = await smtpSession();
  const attempt = async (url: string) => {
    await s.command('RSET');
    await s.command('MAIL FROM:<alice@example.org>');
    await s.command('RCPT TO:<bob@example.org>');
    return (await s.command(`BURL ${url} LAST`)).text;
  };
  t.match(await attempt(forBob), /^554 5\.7\.0 /, 'submit+bob used by alice');
  t.match(await attempt(tampered), /^554 5\.7\.0 /, 'tampered token');
  t.match(await attempt(expired), /^554 5\.7\.0 /, 'expired');
  t.match(await attempt(elsewhere), /^554 5\.7\.8 /, 'another host: no trust relationship (RFC 4468 §6)');
  t.match(await attempt('not-a-url'), /^554 5\.5\.4 /, 'bad URL syntax');
  await imap.command('r', 'RESETKEY INBOX');
  t.match(await attempt(good), /^554 5\.7\.0 /, 'after RESETKEY');
  const again = await genurlauth(imap, `${base};URLAUTH=submit+alice`);
  await imap.command('s', 'SELECT INBOX');
  await imap.command('d', `UID STORE ${src.uid} +FLAGS.SILENT (\\Deleted)`);
  await imap.command('x', 'EXPUNGE');
  t.match(await attempt(again), /^554 5\.6\.6 /, 'deleted message: permanent failure');
  await s.command('RSET');
  t.match((await s.command(`BURL ${again} LAST`)).text, /^503 5\.5\.1 /, 'BURL before MAIL');
  t.equal((await s.command('NOOP')).code, 250, 'the session goes on');
  s.close();
  imap.close();
  await new Promise((r) => setTimeout(r, 200));
  trap.close();
  t.notOk(contacted, 'nothing connected to the other host');
  const plain = await RawSmtp.connect(gw.submissionsPort, { tls: true });
  await plain.reply();
  await plain.command('EHLO x');
  t.match((await plain.command(`BURL ${again} LAST`)).text, /^530 5\.7\.0 /, 'BURL without AUTH');
  plain.close();
});

t.test('access identifiers (RFC 4468 §3.3, RFC 4467 §3): submit+self and authuser resolve; submit+other, user+self, user+other, anonymous do not', async (t) => {
  const src = await seed(original(500).raw);
  const imap = await imapLogin();
  const base = `imap://alice@localhost/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid}/;SECTION=1`;
  const s = await smtpSession();
  const burl = async (access: string) => {
    const url = await genurlauth(imap, `${base};URLAUTH=${access}`);
    await s.command('RSET');
    await s.command('MAIL FROM:<alice@example.org>');
    await s.command('RCPT TO:<bob@example.org>');
    return (await s.command(`BURL ${url} LAST`)).text;
  };
  const before = await stack.messageCount('bob');
  t.match(await burl('submit+alice'), /^250 /, 'submit+alice, alice submitting: resolved and relayed');
  t.match(await burl('authuser'), /^250 /, 'authuser: a submit server is an authenticated user');
  t.match(await burl('submit+bob'), /^554 5\.7\.0 .*access identifier/, 'submit+bob: refused (RFC 4468 §3.3 MUST)');
  t.match(await burl('user+alice'), /^554 5\.7\.0 .*access identifier/, 'user+alice: refused, the submit server is not logged in as alice');
  t.match(await burl('user+bob'), /^554 5\.7\.0 .*access identifier/, 'user+bob: refused');
  t.match(await burl('anonymous'), /^554 5\.7\.0 .*access identifier/, 'anonymous: refused while imap.urlauth.allowAnonymousFetch is off');
  t.equal(await stack.waitForMessageCount('bob', 'INBOX', before + 2), before + 2, 'the two resolved submissions were delivered');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(await stack.messageCount('bob'), before + 2, 'and only those');
  s.close();
  imap.close();
});

/** GENURLAUTH at the partner server, as the user there. */
async function partnerUrl(user: string, rump: string): Promise<string> {
  const c = await RawImap.connect(partner.imapsPort, { tls: true });
  await c.line();
  await c.command('l', `LOGIN ${user} password`);
  const url = await genurlauth(c, rump);
  c.close();
  return url;
}

t.test('a trusted remote IMAP server (allowedHosts): URLFETCH there over TLS with the submit credentials', async (t) => {
  const o = original(3000);
  const src = await seed(o.raw);
  const rump = (access: string) => `imap://alice@partner.test/INBOX;UIDVALIDITY=${src.uidValidity}/;UID=${src.uid};URLAUTH=${access}`;
  const url = await partnerUrl('alice', rump('submit+alice'));
  const s = await smtpSession();
  const before = await stack.messageCount('bob');
  const remoteFetches = async () => metricValue(await partner.metrics(), 'lemonade_urlauth_fetches_total', { by: 'urlfetch', result: 'allowed', reason: 'none' });
  const fetchedBefore = await remoteFetches();
  await s.command('MAIL FROM:<alice@example.org>');
  await s.command('RCPT TO:<bob@example.org>');
  t.match((await s.command(`BURL ${url} LAST`, 30_000)).text, /^250 /, 'resolved at the trusted server');
  const delivered = await stack.newestMessage('bob', before + 1);
  t.ok(withoutTrace(delivered).equals(o.raw), 'the remote message arrived byte for byte');
  t.equal((await remoteFetches()) - fetchedBefore, 1, 'the partner served it by URLFETCH');
  t.equal(metricValue(await gw.metrics(), 'lemonade_urlauth_fetches_total', { by: 'burl_remote', result: 'allowed', reason: 'none' }), 1);

  const attempt = async (u: string) => {
    await s.command('RSET');
    await s.command('MAIL FROM:<alice@example.org>');
    await s.command('RCPT TO:<bob@example.org>');
    return (await s.command(`BURL ${u} LAST`, 30_000)).text;
  };
  const forBob = await partnerUrl('bob', `imap://bob@partner.test/INBOX/;UID=1;URLAUTH=submit+bob`);
  const fetchesBeforeRefusals = await remoteFetches();
  t.match(await attempt(forBob), /^554 5\.7\.0 /, 'submit+bob used by alice: refused before contacting the partner (RFC 4468 §3.3)');
  t.match(await attempt(rump('submit+alice')), /^554 5\.7\.0 /, 'a rump URL without a token');
  const tampered = url.slice(0, -1) + (url.endsWith('0') ? '1' : '0');
  t.match(await attempt(tampered), /^554 5\.6\.6 /, 'tampered token: the partner answers NIL');
  t.match(await attempt(url.replace('partner.test/', `partner.test:${closedPort}/`)), /^554 5\.7\.8 /, 'the listed host at another port is not trusted');
  t.match(await attempt(url.replace('partner.test', 'wrong-password.test')), /^454 4\.7\.0 /, 'submit credentials refused there: temporary');
  t.match(await attempt(url.replace('partner.test', 'down.test')), /^451 4\.4\.1 /, 'trusted server down: temporary');
  // The same partner over STARTTLS: its certificate names partner.test (tlsOptions.servername).
  const viaStarttls = await partnerUrl('alice', rump('submit+alice'));
  const notOurs = async () => metricValue(await partner.metrics(), 'lemonade_urlauth_fetches_total', { by: 'urlfetch', result: 'refused', reason: 'not_ours' });
  const notOursBefore = await notOurs();
  t.match(await attempt(viaStarttls.replace('partner.test', 'starttls.test')), /^554 5\.6\.6 /, 'STARTTLS works; the partner refuses a URL not naming it');
  t.equal((await notOurs()) - notOursBefore, 1, 'the URLFETCH reached the partner over STARTTLS');
  t.equal(await remoteFetches(), fetchesBeforeRefusals, 'no refused URL was served');
  t.equal((await s.command('NOOP')).code, 250, 'the session goes on');
  s.close();
});
