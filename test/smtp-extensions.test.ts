/**
 * The submission front's policy tables in isolation: which EHLO keywords appear when,
 * which MAIL/RCPT parameters are accepted and relayed, the sender policy with its mapping
 * hook, and the Received: trace header.
 */
import t from 'tap';
import { checkParams, effectiveMaxSize, ehloKeywords, mailParams, rcptParams, type ExtensionContext } from '../src/smtp/extensions.js';
import { senderAllowed } from '../src/smtp/sender-policy.js';
import { receivedHeader, rfc5322Date } from '../src/smtp/trace.js';

const postfixLike = new Map([
  ['PIPELINING', ''],
  ['SIZE', '10240000'],
  ['8BITMIME', ''],
  ['DSN', ''],
  ['SMTPUTF8', ''],
  ['CHUNKING', ''],
]);
const bare = new Map([['PIPELINING', '']]);

function ctx(over: Partial<ExtensionContext> = {}): ExtensionContext {
  return { tlsActive: false, starttlsOffered: true, authAllowed: false, upstream: postfixLike, maxMessageSize: 50 * 1024 * 1024, burl: false, authenticated: false, ...over };
}

t.test('EHLO keywords follow TLS, AUTH and what the upstream MTA can carry on', async (t) => {
  const beforeTls = ehloKeywords(ctx());
  t.same(beforeTls, ['PIPELINING', '8BITMIME', 'SIZE 10240000', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'DSN', 'SMTPUTF8', 'STARTTLS']);
  const afterTls = ehloKeywords(ctx({ tlsActive: true, authAllowed: true }));
  t.notOk(afterTls.includes('STARTTLS'), 'no STARTTLS once TLS is on (RFC 3207 §4.2)');
  t.ok(afterTls.includes('AUTH PLAIN LOGIN'), 'AUTH after TLS');
  t.notOk(ehloKeywords(ctx({ tlsActive: true, authAllowed: false })).some((k) => k.startsWith('AUTH')), 'no AUTH once authenticated');
  t.notOk(ehloKeywords(ctx({ starttlsOffered: false })).includes('STARTTLS'), 'implicit-TLS listeners never offer STARTTLS');
  const overBare = ehloKeywords(ctx({ upstream: bare }));
  t.notOk(overBare.includes('DSN'), 'no DSN over an MTA without it');
  t.notOk(overBare.includes('SMTPUTF8'), 'no SMTPUTF8 over an MTA without it');
  t.ok(overBare.includes('SIZE 52428800'), 'our SIZE when the MTA names none');
  t.ok(ehloKeywords(ctx({ upstream: undefined })).includes('CHUNKING'), 'CHUNKING is ours, whatever the MTA');
  t.ok(ehloKeywords(ctx({ burl: true })).includes('BURL'), 'bare BURL before AUTH (RFC 4468 §3)');
  t.ok(ehloKeywords(ctx({ burl: true, tlsActive: true, authenticated: true })).includes('BURL imap'), 'BURL imap once authenticated');
  t.notOk(ehloKeywords(ctx()).some((k) => k.startsWith('BURL')), 'no BURL without side connections');
});

t.test('SIZE is the smaller of ours and the MTA\'s', async (t) => {
  t.equal(effectiveMaxSize(ctx()), 10240000);
  t.equal(effectiveMaxSize(ctx({ maxMessageSize: 1000 })), 1000);
  t.equal(effectiveMaxSize(ctx({ upstream: new Map([['SIZE', '0']]) })), 50 * 1024 * 1024, 'SIZE 0 means no limit (RFC 1870 §4)');
});

t.test('MAIL and RCPT parameters: checked, relayed only where the MTA understands them', async (t) => {
  const ok = checkParams(new Map<string, string | true>([['SIZE', '100'], ['BODY', '8BITMIME'], ['RET', 'HDRS'], ['ENVID', 'x+2Dy']]), mailParams, ctx());
  t.same(ok, { relay: [['SIZE', '100'], ['BODY', '8BITMIME'], ['RET', 'HDRS'], ['ENVID', 'x+2Dy']] });
  t.same(checkParams(new Map([['AUTH', '<>']]), mailParams, ctx()), { relay: [] }, 'AUTH= accepted, not relayed');
  t.match(checkParams(new Map([['RET', 'HDRS']]), mailParams, ctx({ upstream: bare })), { code: 555, enhanced: '5.5.4' }, 'DSN parameters refused when DSN is not offered');
  t.match(checkParams(new Map([['FROB', '1']]), mailParams, ctx()), { code: 555 }, 'unknown parameter: 555');
  t.match(checkParams(new Map([['BODY', 'BINARYMIME']]), mailParams, ctx()), { code: 501 }, 'no BINARYMIME');
  t.match(checkParams(new Map([['SIZE', 'big']]), mailParams, ctx()), { code: 501 });
  t.match(checkParams(new Map<string, string | true>([['SIZE', true]]), mailParams, ctx()), { code: 501 }, 'SIZE needs a value');
  t.same(
    checkParams(new Map([['NOTIFY', 'SUCCESS,FAILURE'], ['ORCPT', 'rfc822;a+2Bb@example.org']]), rcptParams, ctx()),
    { relay: [['NOTIFY', 'SUCCESS,FAILURE'], ['ORCPT', 'rfc822;a+2Bb@example.org']] },
  );
  t.match(checkParams(new Map([['NOTIFY', 'NEVER,SUCCESS']]), rcptParams, ctx()), { code: 501 }, 'NEVER stands alone (RFC 3461 §4.1)');
  t.match(checkParams(new Map([['ORCPT', 'no-type']]), rcptParams, ctx()), { code: 501 });
  t.same(checkParams(new Map([['SIZE', '5']]), mailParams, ctx({ upstream: bare })), { relay: [] }, 'SIZE kept back from an MTA without SIZE');
});

t.test('sender policy: any, own by domain and login, and the mapping hook', async (t) => {
  const own = { mode: 'own' as const, domains: ['example.org', 'Example.NET'], addresses: { alice: ['Sales@example.org'] } };
  t.ok(senderAllowed({ mode: 'any', domains: [], addresses: {} }, 'alice', 'anyone@anywhere.example'));
  t.ok(senderAllowed(own, 'alice', 'alice@example.org'));
  t.ok(senderAllowed(own, 'alice', 'ALICE@example.net'), 'case-insensitive, every listed domain');
  t.ok(senderAllowed(own, 'alice', 'sales@example.org'), 'mapped address');
  t.notOk(senderAllowed(own, 'bob', 'sales@example.org'), "another login's mapped address");
  t.notOk(senderAllowed(own, 'alice', 'bob@example.org'));
  t.notOk(senderAllowed(own, 'alice', 'alice@evil.example'));
  t.notOk(senderAllowed(own, 'alice', ''), 'no null sender for users');
  t.ok(senderAllowed({ mode: 'own', domains: [], addresses: {} }, 'carol@example.org', 'carol@example.org'), 'a login that is an address');
});

t.test('Received: header (RFC 5321 §4.4, RFC 3848)', async (t) => {
  const date = new Date(Date.UTC(2026, 10, 29, 3, 4, 5));
  t.equal(rfc5322Date(date), 'Sun, 29 Nov 2026 03:04:05 +0000');
  const one = receivedHeader({
    heloName: 'phone.example', clientAddress: '::ffff:192.0.2.7', hostname: 'gw.example.org', tls: true, authenticated: true,
    id: 'abc', recipients: ['bob@example.org'], date,
  }).toString();
  t.equal(one, 'Received: from phone.example ([192.0.2.7])\r\n\tby gw.example.org (lemonade-gateway) with ESMTPSA id abc\r\n\tfor <bob@example.org>;\r\n\tSun, 29 Nov 2026 03:04:05 +0000\r\n');
  const many = receivedHeader({
    heloName: 'bad\r\nInjected: yes', clientAddress: '2001:db8::1', hostname: 'gw', tls: false, authenticated: true,
    id: 'x', recipients: ['a@x', 'b@x'], date,
  }).toString();
  t.match(many, /^Received: from bad\?\?Injected:\?yes \(\[IPv6:2001:db8::1\]\)\r\n\tby gw \(lemonade-gateway\) with ESMTPA id x;\r\n/, 'HELO name cannot inject lines; IPv6 literal');
  t.notMatch(many, /for </, 'several recipients are not named (Bcc)');
});
