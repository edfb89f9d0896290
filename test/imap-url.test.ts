/** Unit tests of the IMAP URL parser/formatter (RFC 5092, RFC 4467) and modified UTF-7. */
import t from 'tap';
import {
  ImapUrlError,
  MAX_IMAP_URL_LENGTH,
  appendAuthorization,
  expireTime,
  formatImapUrl,
  parseImapUrl,
  rumpUrl,
  withAuthorization,
  type ImapServer,
  type ImapUrl,
  type UrlAccess,
} from '../src/imap/protocol/url.js';
import { Mutf7Error, decodeMutf7, encodeMutf7, isMutf7 } from '../src/imap/protocol/mutf7.js';
import { prng } from './helpers/prng.js';


function throwsUrlError(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ImapUrlError) return undefined;
    return `threw ${String(err)}`;
  }
  return 'did not throw';
}

t.test('modified UTF-7 (RFC 3501 §5.1.3)', async (t) => {
  t.equal(decodeMutf7('~peter/mail/&ZeVnLIqe-/&U,BTFw-'), '~peter/mail/日本語/台北', 'RFC 3501 example');
  t.equal(encodeMutf7('~peter/mail/日本語/台北'), '~peter/mail/&ZeVnLIqe-/&U,BTFw-');
  t.equal(encodeMutf7('Entwürfe'), 'Entw&APw-rfe');
  t.equal(encodeMutf7('Tom & Jerry'), 'Tom &- Jerry');
  t.equal(decodeMutf7('&-&-'), '&&');
  t.equal(encodeMutf7('😀'), '&2D3eAA-', 'non-BMP as a surrogate pair');
  t.equal(encodeMutf7('äö'), '&AOQA9g-', 'one run for adjacent characters');
  t.equal(encodeMutf7('a\tb'), 'a&AAk-b', 'controls are encoded');
  t.equal(encodeMutf7(''), '');
  t.throws(() => encodeMutf7('\ud800x'), Mutf7Error, 'lone surrogate');

  const bad = [
    '&', // unterminated
    '&ZeVn', // unterminated run
    '&A-', // 6 bits: not a code unit
    '&AO-', // 12 bits
    '&AOR-', // leftover bits not zero
    '&AGE-', // encodes "a"
    '&ACY-', // encodes "&", which must be "&-"
    '&2D0-', // lone high surrogate
    '&3gA-', // lone low surrogate
    '&AOQ-&APY-', // two runs back to back
    '&A*Q-', // not base64
    '&AOQ/-', // "/" is "," in modified BASE64
    'ä', // raw 8-bit
    'a\tb', // raw control
    '\u007f',
  ];
  for (const s of bad) {
    t.throws(() => decodeMutf7(s), Mutf7Error, `rejects ${JSON.stringify(s)}`);
    t.notOk(isMutf7(s));
  }

  const rnd = prng(7);
  const alphabet = ['a', 'Z', ' ', '&', '-', '/', '.', '+', ',', '~', 'ä', 'ü', 'ß', '日', '\u0000', '\u0001', '\u007f', '😀', '𝄞', '\uffff'];
  let failures = 0;
  for (let n = 0; n < 3000; n++) {
    let s = '';
    const len = Math.floor(rnd() * 12);
    for (let k = 0; k < len; k++) s += alphabet[Math.floor(rnd() * alphabet.length)];
    const wire = encodeMutf7(s);
    if (decodeMutf7(wire) !== s || !/^[\x20-\x7e]*$/.test(wire) || encodeMutf7(decodeMutf7(wire)) !== wire) failures++;
  }
  t.equal(failures, 0, 'decode(encode(s)) === s for 3000 random names');

  // Strictness means a bijection: whatever decodes re-encodes to itself.
  let nonCanonical = 0;
  const wireChars = ['&', '-', 'A', 'O', 'Q', 'g', '2', 'D', '3', 'e', ',', '+', 'a', ' '];
  for (let n = 0; n < 5000; n++) {
    let s = '';
    const len = Math.floor(rnd() * 10);
    for (let k = 0; k < len; k++) s += wireChars[Math.floor(rnd() * wireChars.length)];
    try {
      if (encodeMutf7(decodeMutf7(s)) !== s) nonCanonical++;
    } catch (err) {
      if (!(err instanceof Mutf7Error)) nonCanonical++;
    }
  }
  t.equal(nonCanonical, 0, 'every decodable wire string is canonical; only Mutf7Error is thrown');
});

t.test('RFC 5092 and RFC 4467/4468 examples', async (t) => {
  const p1 = parseImapUrl('imap://minbari.example.org/gray-council;UIDVALIDITY=385759045/;UID=20/;PARTIAL=0.1024');
  t.same(p1.url, {
    server: { host: 'minbari.example.org' },
    mailbox: 'gray-council',
    uidValidity: 385759045,
    uid: 20,
    partial: { offset: 0, length: 1024 },
  });
  t.equal(p1.form, 'absolute');
  t.equal(formatImapUrl(p1.url), p1.text, 'already canonical');

  // RFC 5092 §8: the mailbox travels as UTF-8, percent-encoded, not as modified UTF-7.
  const p2 = parseImapUrl('imap://psicorp.example.org/~peter/%E6%97%A5%E6%9C%AC%E8%AA%9E/%E5%8F%B0%E5%8C%97');
  t.equal(p2.url.mailbox, '~peter/日本語/台北');
  t.equal(encodeMutf7(p2.url.mailbox!), '~peter/&ZeVnLIqe-/&U,BTFw-', 'the name to send upstream');
  t.equal(formatImapUrl(p2.url), p2.text);

  const p3 = parseImapUrl('imap://;AUTH=*@minbari.example.org/gray%20council?SUBJECT%20shadows');
  t.same(p3.url, {
    server: { auth: '*', host: 'minbari.example.org' },
    mailbox: 'gray council',
    search: 'SUBJECT shadows',
  });
  t.equal(formatImapUrl(p3.url), p3.text);

  const p4 = parseImapUrl('imap://;AUTH=GSSAPI@minbari.example.org/gray-council/;uid=20/;section=1.2');
  t.same(p4.url, { server: { auth: 'GSSAPI', host: 'minbari.example.org' }, mailbox: 'gray-council', uid: 20, section: '1.2' });
  t.equal(formatImapUrl(p4.url), 'imap://;AUTH=GSSAPI@minbari.example.org/gray-council/;UID=20/;SECTION=1.2');

  const p5 = parseImapUrl(
    'imap://john;AUTH=*@minbari.example.org/babylon5/personel?charset%20UTF-8%20SUBJECT%20%7B14+%7D%0D%0A%D0%98%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2%D0%B0',
  );
  t.equal(p5.url.search, 'charset UTF-8 SUBJECT {14+}\r\nИванова');
  t.equal(p5.url.server?.user, 'john');
  t.equal(formatImapUrl(p5.url), p5.text);

  t.same(parseImapUrl('imap://fred@example.com/INBOX/;uid=20').url, {
    server: { user: 'fred', host: 'example.com' },
    mailbox: 'INBOX',
    uid: 20,
  });

  // RFC 5092 §6.1.2 (and RFC 4467): a GENURLAUTH rump and the authorized URL it returns.
  const rump = 'imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred';
  const full = `${rump}:internal:91354a473744909de610943775f92038`;
  const p6 = parseImapUrl(full);
  t.same(p6.url, {
    server: { user: 'joe', host: 'example.com' },
    mailbox: 'INBOX',
    uid: 20,
    section: '1.2',
    urlauth: { access: { kind: 'submit', user: 'fred' }, mechanism: 'INTERNAL', token: '91354a473744909de610943775f92038' },
  });
  t.equal(p6.rumpText, rump, 'rump as given');
  t.equal(rumpUrl(p6.url), 'imap://joe@example.com/INBOX/;UID=20/;SECTION=1.2;URLAUTH=submit+fred', 'canonical rump');
  t.equal(
    formatImapUrl(p6.url),
    'imap://joe@example.com/INBOX/;UID=20/;SECTION=1.2;URLAUTH=submit+fred:INTERNAL:91354a473744909de610943775f92038',
  );
  const p7 = parseImapUrl(rump);
  t.equal(p7.rumpText, rump);
  t.equal(p7.url.urlauth?.token, undefined, 'a rump has no verifier');
  t.equal(appendAuthorization(rump, 'internal', '91354A473744909DE610943775F92038'), `${rump}:INTERNAL:91354a473744909de610943775f92038`);
  t.same(withAuthorization(p7.url, 'internal', '91354A473744909DE610943775F92038'), p6.url);

  // RFC 4468 §3.4 (BURL) example.
  const p8 = parseImapUrl(
    'imap://harry@gryffindor.example.com/outbox;uidvalidity=1078863300/;uid=25;urlauth=submit+harry:internal:91354a473744909de610943775f92038',
  );
  t.equal(p8.url.uidValidity, 1078863300);
  t.equal(p8.url.uid, 25);
  t.same(p8.url.urlauth?.access, { kind: 'submit', user: 'harry' });
  t.equal(p8.rumpText, 'imap://harry@gryffindor.example.com/outbox;uidvalidity=1078863300/;uid=25;urlauth=submit+harry');

  const p9 = parseImapUrl('imap://example.com/INBOX/;UID=1;EXPIRE=2026-12-31T23:59:59Z;URLAUTH=anonymous');
  t.equal(p9.url.urlauth?.expire, '2026-12-31T23:59:59Z');
  t.equal(expireTime(p9.url.urlauth!.expire!), Date.UTC(2026, 11, 31, 23, 59, 59));
  t.equal(p9.rumpText, p9.text);

  t.same(parseImapUrl('imap://mail.example.com/').url, { server: { host: 'mail.example.com' } }, 'server-only URL');
  t.equal(formatImapUrl(parseImapUrl('imap://Mail.Example.COM').url), 'imap://mail.example.com/', 'canonical adds "/", lower-cases host');
  t.same(parseImapUrl('imap://[2001:DB8::1]:993/INBOX').url, { server: { host: '2001:db8::1', port: 993 }, mailbox: 'INBOX' });
  t.equal(formatImapUrl({ server: { host: '::1', port: 143 } }), 'imap://[::1]:143/');
});

t.test('RFC 4469 CATENATE relative URLs', async (t) => {
  const base: ImapServer = { user: 'michael', host: 'imap.example.net' };
  const cases: Array<[string, ImapUrl]> = [
    ['/Drafts;UIDVALIDITY=385759045/;UID=20/;section=HEADER', { mailbox: 'Drafts', uidValidity: 385759045, uid: 20, section: 'HEADER' }],
    ['/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1.MIME', { mailbox: 'Drafts', uidValidity: 385759045, uid: 20, section: '1.MIME' }],
    ['/Drafts;UIDVALIDITY=385759045/;UID=20/;section=1', { mailbox: 'Drafts', uidValidity: 385759045, uid: 20, section: '1' }],
    ['/Drafts;UIDVALIDITY=385759045/;UID=30', { mailbox: 'Drafts', uidValidity: 385759045, uid: 30 }],
    ['/INBOX;UIDVALIDITY=785799047/;UID=113330/;section=1.5.9', { mailbox: 'INBOX', uidValidity: 785799047, uid: 113330, section: '1.5.9' }],
  ];
  for (const [text, want] of cases) {
    const p = parseImapUrl(text, base);
    t.equal(p.form, 'absolute-path', text);
    t.same(p.url, { server: base, ...want }, text);
    t.not(p.url.server, base, 'the base is copied');
    t.same(parseImapUrl(text).url, want, 'no base: no server');
    t.equal(formatImapUrl(p.url, { form: 'absolute-path' }), text.replace('section=', 'SECTION='));
  }
  t.equal(formatImapUrl(parseImapUrl('/INBOX/;UID=5', base).url), 'imap://michael@imap.example.net/INBOX/;UID=5');
  t.equal(throwsUrlError(() => parseImapUrl('/INBOX/;UID=5;URLAUTH=anonymous', base)), undefined, 'URLAUTH needs imap://');
  t.equal(throwsUrlError(() => parseImapUrl(';SECTION=1.2', base)), undefined, 'relative-path refused');
  t.equal(throwsUrlError(() => parseImapUrl('//host/INBOX', base)), undefined, 'network-path refused');
});

t.test('keywords, scheme and escapes are case-insensitive', async (t) => {
  const canonical = 'imap://u@h/INBOX;UIDVALIDITY=7/;UID=9/;SECTION=1.2.HEADER.FIELDS%20(FROM%20TO)/;PARTIAL=5.10;EXPIRE=2030-01-01T00:00:00Z;URLAUTH=user+bob:INTERNAL:0123456789abcdef0123456789abcdef';
  const want = parseImapUrl(canonical).url;
  t.equal(formatImapUrl(want), canonical);
  for (const s of [
    'IMAP://u@H/INBOX;uidvalidity=7/;uid=9/;section=1.2.header.fields%20(FROM%20TO)/;partial=5.10;expire=2030-01-01t00:00:00z;urlauth=USER+bob:internal:0123456789ABCDEF0123456789abcdef',
    'Imap://u@h/INBOX;UidValidity=7/;Uid=9/;Section=1.2.Header.Fields%20(FROM%20TO)/;Partial=5.10;Expire=2030-01-01T00:00:00Z;UrlAuth=User+bob:Internal:0123456789abcdef0123456789ABCDEF',
    'imap://%75@h/%49NBOX;UIDVALIDITY=7/;UID=9/;SECTION=1.2.HEADER.FIELDS%20%28FROM%20TO%29/;PARTIAL=5.10;EXPIRE=2030-01-01T00:00:00Z;URLAUTH=user+%62ob:INTERNAL:0123456789abcdef0123456789abcdef',
  ]) {
    const p = parseImapUrl(s);
    t.same(p.url, want, s);
    t.equal(formatImapUrl(p.url), canonical);
  }
  t.equal(parseImapUrl('imap://h/a%2fb%2Fc').url.mailbox, 'a/b/c');
  t.equal(throwsUrlError(() => parseImapUrl('imap://h/;AUTH=x')), undefined, '";AUTH=" belongs in the user part');
});

// --- Generated URLs -------------------------------------------------------------------

function pick<T>(rnd: () => number, items: readonly T[]): T {
  return items[Math.floor(rnd() * items.length)]!;
}

function int(rnd: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rnd() * (hi - lo + 1));
}

const NAME_PIECES = ['INBOX', 'Sent Items', 'Entwürfe', 'a/b', '&', '%', '100%', 'x;y', 'q?', '#hash', '.', '..', '日本語', '😀', '~peter', 'a+b', 'c=d', ':@', "it's", '[x]', '\u0001', 'é', '\\', '"q"', ' '];
const USERS = ['fred', 'joe@example.com', 'a;b', 'user:name', 'ü', 'x/y', '%', 'S P', '+plus', 'a&b=c'];
const HOSTS = ['example.com', 'mail.example.org', '10.0.0.1', 'localhost', 'a-b_c~d', '::1', '2001:db8::5', 'fe80::1:2'];
const SECTIONS = ['1', '1.2', '1.2.MIME', '2.HEADER', '3.TEXT', 'HEADER', 'TEXT', 'HEADER.FIELDS (FROM TO)', '1.HEADER.FIELDS.NOT (X-A "Sub ject" "a\\"b")', 'HEADER.FIELDS (A/../B)', '4294967295.1'];
const SEARCHES = ['SUBJECT shadows', 'charset UTF-8 SUBJECT {14+}\r\nИванова', 'FROM "a@b"', 'ALL', 'UID 1:*', '?#;', '100%'];
const MECHS = ['INTERNAL', 'X-MECH.1', 'A'];

function genName(rnd: () => number): string {
  let s = '';
  const n = int(rnd, 1, 4);
  for (let k = 0; k < n; k++) s += (k > 0 && rnd() < 0.5 ? '/' : '') + pick(rnd, NAME_PIECES);
  return s;
}

function genAccess(rnd: () => number): UrlAccess {
  const kind = pick(rnd, ['submit', 'user', 'authuser', 'anonymous'] as const);
  return kind === 'submit' || kind === 'user' ? { kind, user: pick(rnd, USERS) } : { kind };
}

function genExpire(rnd: () => number): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  const frac = rnd() < 0.3 ? `.${int(rnd, 0, 999999)}` : '';
  const zone = rnd() < 0.5 ? 'Z' : `${pick(rnd, ['+', '-'])}${two(int(rnd, 0, 23))}:${two(int(rnd, 0, 59))}`;
  return `${int(rnd, 1970, 2199)}-${two(int(rnd, 1, 12))}-${two(int(rnd, 1, 28))}T${two(int(rnd, 0, 23))}:${two(int(rnd, 0, 59))}:${two(int(rnd, 0, 59))}${frac}${zone}`;
}

function genHex(rnd: () => number): string {
  let s = '';
  const n = int(rnd, 32, 64);
  for (let k = 0; k < n; k++) s += '0123456789abcdef'[int(rnd, 0, 15)];
  return s;
}

function genUrl(rnd: () => number): ImapUrl {
  const server: ImapServer = { host: pick(rnd, HOSTS) };
  if (rnd() < 0.5) server.user = pick(rnd, USERS);
  if (rnd() < 0.3) server.auth = pick(rnd, ['*', 'GSSAPI', 'PLAIN', 'X-A.b:c']);
  if (rnd() < 0.4) server.port = int(rnd, 1, 65535);
  const url: ImapUrl = { server };
  if (rnd() < 0.05) return url;
  url.mailbox = genName(rnd);
  if (rnd() < 0.5) url.uidValidity = rnd() < 0.1 ? 4294967295 : int(rnd, 1, 1e9);
  if (rnd() < 0.2) {
    if (rnd() < 0.5) url.search = pick(rnd, SEARCHES);
    return url;
  }
  url.uid = rnd() < 0.1 ? 4294967295 : int(rnd, 1, 1e6);
  if (rnd() < 0.6) url.section = pick(rnd, SECTIONS);
  if (rnd() < 0.3) url.partial = rnd() < 0.5 ? { offset: int(rnd, 0, 1e9) } : { offset: int(rnd, 0, 1e9), length: int(rnd, 1, 1e9) };
  if (rnd() < 0.5) {
    url.urlauth = { access: genAccess(rnd) };
    if (rnd() < 0.4) url.urlauth.expire = genExpire(rnd);
    if (rnd() < 0.6) {
      url.urlauth.mechanism = pick(rnd, MECHS);
      url.urlauth.token = genHex(rnd);
    }
  }
  return url;
}

/** An equivalent, non-canonical spelling: random keyword case and lower-case %-escapes. */
function respell(rnd: () => number, canonical: string): string {
  let out = '';
  for (let i = 0; i < canonical.length; i++) {
    const c = canonical[i]!;
    if (c === '%') {
      const esc = canonical.slice(i, i + 3);
      out += rnd() < 0.5 ? esc.toLowerCase() : esc;
      i += 2;
    } else if (/[A-Z]/.test(c) && rnd() < 0.3 && isKeywordChar(canonical, i)) {
      out += c.toLowerCase();
    } else {
      out += c;
    }
  }
  return out;
}

function isKeywordChar(s: string, i: number): boolean {
  const before = s.lastIndexOf(';', i);
  const eq = s.indexOf('=', before);
  return before >= 0 && eq > i && /^;[A-Z]+$/.test(s.slice(before, eq));
}

t.test('property: parse(format(x)) deep-equals x, format(parse(s)) === s', async (t) => {
  const rnd = prng(5092);
  let checked = 0;
  const failures: string[] = [];
  for (let n = 0; n < 4000; n++) {
    const x = genUrl(rnd);
    let s = '';
    try {
      s = formatImapUrl(x);
      const p = parseImapUrl(s);
      if (!sameShape(p.url, x)) failures.push(`parse(format(x)) differs: ${s}`);
      if (formatImapUrl(p.url) !== s) failures.push(`format(parse(s)) !== s: ${s}`);
      const alt = respell(rnd, s);
      const q = parseImapUrl(alt);
      if (formatImapUrl(q.url) !== s) failures.push(`respelled ${alt} formats as ${formatImapUrl(q.url)}`);
      if (x.urlauth !== undefined) {
        if (q.rumpText === undefined || !alt.startsWith(q.rumpText)) failures.push(`rumpText of ${alt}`);
        if (rumpUrl(q.url) !== rumpUrl(x)) failures.push(`rumpUrl differs for ${alt}`);
        if (!s.startsWith(rumpUrl(x))) failures.push(`rumpUrl not a prefix of ${s}`);
      }
      checked++;
    } catch (err) {
      failures.push(`${String(err)} for ${s || JSON.stringify(x)}`);
    }
  }
  t.same(failures.slice(0, 5), [], 'no failures');
  t.equal(checked, 4000);
});

/** Deep equality without caring about key order. */
function sameShape(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return a === b;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  if (ka.join() !== kb.join()) return false;
  return ka.every((k) => sameShape((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

// --- Malformed input --------------------------------------------------------------------

const MALFORMED = [
  '',
  'imap:',
  'imap:/',
  'imap://',
  'imap:///INBOX',
  'http://example.com/INBOX',
  'imaps://example.com/INBOX',
  'INBOX',
  ';SECTION=1.2',
  '//example.com/INBOX',
  'imap://@example.com/',
  'imap://a@b@example.com/',
  'imap://user:pass@example.com/',
  'imap://user;AUTH=@example.com/',
  'imap://user;FOO=x@example.com/',
  'imap://user;AUTH=%2A@example.com/',
  'imap://us er@example.com/',
  'imap://example.com:99999/',
  'imap://example.com:0/',
  'imap://example.com:14a/',
  'imap://[::1/',
  'imap://[not-v6]/',
  'imap://[fe80::1%25eth0]/',
  'imap://[v1.x]/',
  'imap://exa mple.com/',
  'imap://exämple.com/',
  'imap://example.com?x',
  'imap://example.com/INBOX#frag',
  'imap://example.com/INBOX?',
  'imap://example.com/?SUBJECT%20x',
  'imap://example.com/Sent Items',
  'imap://example.com/Entwürfe',
  'imap://example.com/a%2',
  'imap://example.com/a%zz',
  'imap://example.com/a%C3',
  'imap://example.com/a%00b',
  'imap://example.com/a;b',
  'imap://example.com/INBOX/;UID=0',
  'imap://example.com/INBOX/;UID=012',
  'imap://example.com/INBOX/;UID=',
  'imap://example.com/INBOX/;UID=4294967296',
  'imap://example.com/INBOX/;UID=1x',
  'imap://example.com/INBOX;UID=1',
  'imap://example.com/INBOX;UIDVALIDITY=0',
  'imap://example.com/INBOX;UIDVALIDITY=5/',
  'imap://example.com/INBOX;UIDVALIDITY=5;UID=1',
  'imap://example.com/;UID=1',
  'imap://example.com//;UID=1',
  'imap://example.com/INBOX/;SECTION=1',
  'imap://example.com/INBOX/;UID=1/;SECTION=',
  'imap://example.com/INBOX/;UID=1/;SECTION=0',
  'imap://example.com/INBOX/;UID=1/;SECTION=1.',
  'imap://example.com/INBOX/;UID=1/;SECTION=BODY',
  'imap://example.com/INBOX/;UID=1/;SECTION=MIME',
  'imap://example.com/INBOX/;UID=1/;SECTION=HEADER.FIELDS',
  'imap://example.com/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20()',
  'imap://example.com/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(A%5D)',
  'imap://example.com/INBOX/;UID=1/;SECTION=1%5D%20BODY%5B2',
  'imap://example.com/INBOX/;UID=1/;SECTION=1%0D%0A',
  'imap://example.com/INBOX/;UID=1/;SECTION=1;PARTIAL=0',
  'imap://example.com/INBOX/;UID=1/;PARTIAL=',
  'imap://example.com/INBOX/;UID=1/;PARTIAL=1.0',
  'imap://example.com/INBOX/;UID=1/;PARTIAL=.5',
  'imap://example.com/INBOX/;UID=1/;PARTIAL=1.2.3',
  'imap://example.com/INBOX/;UID=1/;PARTIAL=-1',
  'imap://example.com/INBOX/;UID=1/;FOO=1',
  'imap://example.com/INBOX/;UID=1/',
  'imap://example.com/INBOX/;UID=1?ALL',
  'imap://example.com/INBOX;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;URLAUTH=',
  'imap://example.com/INBOX/;UID=1;URLAUTH=everyone',
  'imap://example.com/INBOX/;UID=1;URLAUTH=submit+',
  'imap://example.com/INBOX/;UID=1;URLAUTH=submit',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:1234',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous::91354a473744909de610943775f92038',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous:IN_TERNAL:91354a473744909de610943775f92038',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:91354a473744909de610943775f9203g',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:91354a473744909de610943775f92038:x',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-01-01T00:00:00Z',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-13-01T00:00:00Z;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-02-29T00:00:00Z;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-01-01T24:00:00Z;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-01-01;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-01-01T00:00:00;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;EXPIRE=2026-01-01T00:00:00%2B01:00;URLAUTH=anonymous',
  'imap://example.com/INBOX/;UID=1;URLAUTH=anonymous;EXPIRE=2026-01-01T00:00:00Z',
  'imap://example.com/a/./b',
  'imap://example.com/a/../b',
  'imap://example.com/../INBOX/;UID=1',
  'imap://example.com/../;UID=1',
  'imap://example.com/./;UIDVALIDITY=1/;UID=1',
  '/foo/;UID=20/..', // RFC 5092 §9.1 needs dot-segment removal, which is not done
  '/;UID=20/;section=1.mime', // no mailbox
  'imap://example.com//INBOX', // leading "/" must be %2F (RFC 5092 §7.1)
  'imap://example.com/\u00e9',
  'imap://example.com/INBOX\r\n',
  ' imap://example.com/',
  '/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:91354a473744909de610943775f92038',
  `imap://example.com/${'a'.repeat(MAX_IMAP_URL_LENGTH)}`,
];

t.test('malformed URLs give ImapUrlError', async (t) => {
  t.ok(MALFORMED.length >= 50);
  for (const s of MALFORMED) t.equal(throwsUrlError(() => parseImapUrl(s)), undefined, JSON.stringify(s.slice(0, 100)));
  t.equal(throwsUrlError(() => parseImapUrl(42 as unknown as string)), undefined, 'non-string');
  t.equal(throwsUrlError(() => parseImapUrl('imap://h/INBOX', undefined, { maxLength: 10 })), undefined, 'configured bound');
  const e = (() => {
    try {
      parseImapUrl('imap://example.com/INBOX/;UID=0');
    } catch (err) {
      return err as Error;
    }
    return undefined;
  })();
  t.match(e?.message, /UID/, 'the message says what is wrong');
});

t.test('invalid data is refused by the formatter', async (t) => {
  const server = { host: 'h' };
  const bad: ImapUrl[] = [
    {},
    { server: { host: '' } },
    { server: { host: 'a b' } },
    { server: { host: 'h', port: 0 } },
    { server: { host: 'h', user: '' } },
    { server: { host: 'h', auth: 'A*B' } },
    { server, mailbox: '' },
    { server, mailbox: 'a\0b' },
    { server, mailbox: '\ud800' },
    { server, uid: 1 },
    { server, mailbox: 'a', section: '1' },
    { server, mailbox: 'a', uid: 0 },
    { server, mailbox: 'a', uid: 1.5 },
    { server, mailbox: 'a', uid: 1, search: 'ALL' },
    { server, mailbox: 'a', uid: 1, section: 'header' },
    { server, mailbox: 'a', uid: 1, section: 'BODY' },
    { server, mailbox: 'a', uid: 1, partial: { offset: -1 } },
    { server, mailbox: 'a', uid: 1, urlauth: { access: { kind: 'user', user: '' } } },
    { server, mailbox: 'a', uid: 1, urlauth: { access: { kind: 'anonymous' }, expire: 'soon' } },
    { server, mailbox: 'a', uid: 1, urlauth: { access: { kind: 'anonymous' }, mechanism: 'INTERNAL' } },
    { server, mailbox: 'a', uid: 1, urlauth: { access: { kind: 'anonymous' }, mechanism: 'internal', token: 'a'.repeat(32) } },
  ];
  for (const u of bad) t.equal(throwsUrlError(() => formatImapUrl(u)), undefined, JSON.stringify(u));
  t.equal(throwsUrlError(() => rumpUrl({ server, mailbox: 'a', uid: 1 })), undefined, 'no rump without URLAUTH');
  t.equal(throwsUrlError(() => withAuthorization({ server, mailbox: 'a', uid: 1 }, 'INTERNAL', 'a'.repeat(32))), undefined);
  t.equal(throwsUrlError(() => appendAuthorization('imap://h/a/;UID=1', 'INTERNAL', 'a'.repeat(32))), undefined, 'not a rump');
  t.equal(
    throwsUrlError(() => appendAuthorization('imap://h/a/;UID=1;URLAUTH=anonymous:INTERNAL:' + 'a'.repeat(32), 'INTERNAL', 'a'.repeat(32))),
    undefined,
    'already authorized',
  );
  t.equal(throwsUrlError(() => appendAuthorization('imap://h/a/;UID=1;URLAUTH=anonymous', 'INTERNAL', 'abc')), undefined, 'short token');
});

t.test('names that need care round-trip', async (t) => {
  for (const mailbox of ['.', '..', 'a/./b', 'a/../b', 'x/', '/', '//', 'a;UIDVALIDITY=1', 'a/;UID=1', '?', '#', '%41', 'Sent Items', 'Entwürfe']) {
    const s = formatImapUrl({ server: { host: 'h' }, mailbox, uid: 3 });
    t.same(parseImapUrl(s).url, { server: { host: 'h' }, mailbox, uid: 3 }, `${JSON.stringify(mailbox)} as ${s}`);
    const l = formatImapUrl({ server: { host: 'h' }, mailbox, uidValidity: 1 });
    t.same(parseImapUrl(l).url.mailbox, mailbox, l);
  }
  t.equal(formatImapUrl({ server: { host: 'h' }, mailbox: 'Sent Items' }), 'imap://h/Sent%20Items');
  t.equal(formatImapUrl({ server: { host: 'h' }, mailbox: 'Entwürfe' }), 'imap://h/Entw%C3%BCrfe', 'UTF-8, not modified UTF-7 (RFC 5092 §8)');
  t.equal(formatImapUrl({ server: { host: 'h' }, mailbox: 'a/./b' }), 'imap://h/a/%2E/b');
  // RFC 5092 §7.1: a leading "/" is percent-encoded, so "/" + name is no network path.
  t.equal(formatImapUrl({ mailbox: '/x', uid: 1 }, { form: 'absolute-path' }), '/%2Fx/;UID=1');
  t.equal(parseImapUrl('/%2Fx/;UID=1').url.mailbox, '/x');
  // RFC 5092 §9.1's edge case (there a relative-path reference): with ";UIDVALIDITY="
  // the last segment is no dot segment.
  t.equal(parseImapUrl('/..;UIDVALIDITY=385759045/;UID=20').url.mailbox, '..');
  t.equal(parseImapUrl('imap://h/a/..;UIDVALIDITY=1').url.mailbox, 'a/..');
  t.equal(formatImapUrl(parseImapUrl('imap://h/a/..;UIDVALIDITY=1').url), 'imap://h/a/%2E%2E;UIDVALIDITY=1');
  t.equal(formatImapUrl({ server: { host: 'h', user: 'a@b;c:d' } }), 'imap://a%40b%3Bc%3Ad@h/');
});

t.test('expireTime', async (t) => {
  t.equal(expireTime('2006-05-01T12:00:00+02:00'), Date.UTC(2006, 4, 1, 10));
  t.equal(expireTime('2006-05-01t12:00:00.5z'), Date.UTC(2006, 4, 1, 12, 0, 0, 500));
  t.equal(expireTime('2016-12-31T23:59:60Z'), Date.UTC(2017, 0, 1), 'leap second');
  t.equal(expireTime('2024-02-29T00:00:00-00:30'), Date.UTC(2024, 1, 29, 0, 30));
  t.equal(expireTime('0050-01-01T00:00:00Z'), new Date('0050-01-01T00:00:00Z').getTime(), 'two-digit years are not 19xx');
  for (const s of ['2023-02-29T00:00:00Z', '2024-01-01T00:00:00+24:00', '2024-01-01 00:00:00Z', '24-01-01T00:00:00Z']) {
    t.equal(throwsUrlError(() => expireTime(s)), undefined, s);
  }
});

t.test('fuzz: mutated URLs parse or give ImapUrlError, and what parses re-formats', async (t) => {
  const rnd = prng(4467);
  const noise = [';', '/', '%', '?', '#', ':', '@', '[', ']', '=', '+', '.', '0', '1', 'A', 'a', ' ', 'é', '\u0000', ';UID=', ';URLAUTH=', '%2', '%C3%A4', '%ZZ'];
  const failures: string[] = [];
  let parsed = 0;
  for (let n = 0; n < 6000; n++) {
    let s = formatImapUrl(genUrl(rnd));
    const edits = int(rnd, 1, 3);
    for (let k = 0; k < edits; k++) {
      const at = int(rnd, 0, s.length);
      const r = rnd();
      if (r < 0.33) s = s.slice(0, at) + s.slice(at + 1);
      else if (r < 0.66) s = s.slice(0, at) + pick(rnd, noise) + s.slice(at);
      else s = s.slice(0, at) + pick(rnd, noise) + s.slice(at + 1);
    }
    try {
      const p = parseImapUrl(s);
      parsed++;
      const f = formatImapUrl(p.url);
      if (!sameShape(parseImapUrl(f).url, p.url)) failures.push(`re-parse differs: ${s}`);
    } catch (err) {
      if (!(err instanceof ImapUrlError)) failures.push(`${String(err)} for ${JSON.stringify(s)}`);
    }
  }
  t.same(failures.slice(0, 5), []);
  t.ok(parsed > 100, `some mutations still parse (${parsed})`);
});
