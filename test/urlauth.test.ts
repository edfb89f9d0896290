/**
 * URLAUTH emulated over the legacy Dovecot (issue 4): GENURLAUTH issues tokens only for
 * the user's own URLs on this server; URLFETCH serves exact bytes to the identities the
 * access identifier admits and NIL to everyone else; RESETKEY, EXPIRE and a tampered
 * token each make a URL fail; several URLs in one command fail one by one. GENURLAUTH
 * refuses a URL whose mailbox, UIDVALIDITY or message is not there (issue 15 §4), and no
 * mailbox access key is stored for such a name, nor for one a forged URL presents.
 */
import t from 'tap';
import { ImapFlow } from 'imapflow';
import { masterClient, startLegacyStack, type LegacyStack } from './helpers/stack.js';
import Database from 'better-sqlite3';
import path from 'node:path';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';

let stack: LegacyStack;
let gw: RunningGateway;
let uid = 0;
let uidValidity = 0;
const text = 'Hello Bob,\r\nthe report is attached.\r\n';
const attachment = Buffer.from(Array.from({ length: 3000 }, (_, i) => String.fromCharCode(65 + (i % 26))).join('')).toString('base64').replace(/.{76}/g, '$&\r\n');
const message = Buffer.from(
  'From: alice@example.org\r\nTo: bob@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n' +
    `--xx\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n` +
    `--xx\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n${attachment}\r\n--xx--\r\n`,
);

t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  // carol plays the submission server (an account configured as one, RFC 4467 "submit+").
  gw = await startGateway(stack, { config: { imap: { urlauth: { submitUsers: ['carol'] } } } });
  const client = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: 'alice' }, logger: false,
  });
  await client.connect();
  await client.append('INBOX', message);
  const box = await client.mailboxOpen('INBOX');
  uidValidity = Number(box.uidValidity);
  uid = Number(box.uidNext) - 1;
  await client.logout();
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

async function login(user: string): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(r.at(-1) ?? '')) throw new Error(r.join('\n'));
  return c;
}

const base = () => `imap://alice@localhost/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}`;

/** GENURLAUTH one rump URL as alice; returns the authorized URL. */
async function generate(c: RawImap, rump: string): Promise<string> {
  const lines = await c.command('g', `GENURLAUTH "${rump}" INTERNAL`);
  const m = /^\* GENURLAUTH "([^"]+)"$/.exec(lines[0] ?? '');
  if (!m || !/^g OK/.test(lines.at(-1)!)) throw new Error(lines.join('\n'));
  return m[1]!;
}

/** URLFETCH urls; returns each URL's content (undefined for NIL), in order. */
async function fetchUrls(c: RawImap, ...urls: string[]): Promise<Array<string | undefined>> {
  c.write(`f URLFETCH ${urls.map((u) => `"${u}"`).join(' ')}\r\n`);
  const out: Array<string | undefined> = [];
  for (;;) {
    const line = await c.line();
    if (line === undefined) throw new Error('closed');
    if (line.startsWith('f ')) {
      if (!/^f OK/.test(line)) throw new Error(line);
      return out;
    }
    const nil = /^\* URLFETCH "[^"]+" NIL$/.exec(line);
    if (nil) {
      out.push(undefined);
      continue;
    }
    const lit = /^\* URLFETCH "[^"]+" \{(\d+)\}$/.exec(line);
    if (!lit) throw new Error(`unexpected: ${line}`);
    out.push(await c.bytes(Number(lit[1])).then((b) => b.toString('latin1')));
    await c.line(); // the CRLF that ends the response
  }
}

t.test('capability: URLAUTH is advertised by the gateway over the legacy upstream', async (t) => {
  const c = await login('alice');
  const caps = await c.command('c', 'CAPABILITY');
  t.match(caps[0], /^\* CAPABILITY .* URLAUTH( |$)/);
  t.notMatch(caps[0], /URLAUTH=BINARY/, 'no URLAUTH=BINARY: the extended URLFETCH is not offered');
  c.close();
});

t.test('submit+alice: the submit identity gets the exact bytes, bob gets NIL', async (t) => {
  const alice = await login('alice');
  const rump = `${base()}/;SECTION=1;URLAUTH=submit+alice`;
  const url = await generate(alice, rump);
  t.match(url, new RegExp(`^${rump.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:INTERNAL:[0-9a-f]{64}$`), 'the rump exactly as given, :INTERNAL:token');
  const carol = await login('carol');
  t.same(await fetchUrls(carol, url), [text], 'submit server: the text part, byte for byte');
  const bob = await login('bob');
  t.same(await fetchUrls(bob, url), [undefined], 'bob is not a submit server: NIL');
  t.same(await fetchUrls(alice, url), [undefined], 'nor is alice herself');
  const whole = await generate(alice, `${base()};URLAUTH=submit+alice`);
  t.same(await fetchUrls(carol, whole), [message.toString('latin1')], 'whole message');
  const partial = await generate(alice, `${base()}/;SECTION=2/;PARTIAL=10.20;URLAUTH=submit+alice`);
  t.same(await fetchUrls(carol, partial), [attachment.slice(10, 30)], 'partial range of a section');
  for (const c of [alice, bob, carol]) c.close();
});

t.test('user+bob, authuser, anonymous', async (t) => {
  const alice = await login('alice');
  const bob = await login('bob');
  const carol = await login('carol');
  const forBob = await generate(alice, `${base()}/;SECTION=1;URLAUTH=user+bob`);
  t.same(await fetchUrls(bob, forBob), [text], 'user+bob: bob');
  t.same(await fetchUrls(carol, forBob), [undefined], 'user+bob: not carol');
  const anyUser = await generate(alice, `${base()}/;SECTION=1;URLAUTH=authuser`);
  t.same(await fetchUrls(bob, anyUser), [text], 'authuser: bob');
  t.same(await fetchUrls(carol, anyUser), [text], 'authuser: carol');
  const anon = await generate(alice, `${base()}/;SECTION=1;URLAUTH=anonymous`);
  t.same(await fetchUrls(bob, anon), [undefined], 'anonymous fetches are off by default');
  for (const c of [alice, bob, carol]) c.close();
});

t.test('RESETKEY, EXPIRE, a tampered token, several URLs in one command', async (t) => {
  const alice = await login('alice');
  const bob = await login('bob');
  const good = await generate(alice, `${base()}/;SECTION=1;URLAUTH=user+bob`);
  const expired = await generate(alice, `${base()}/;SECTION=1;EXPIRE=2020-01-01T00:00:00Z;URLAUTH=user+bob`);
  const future = await generate(alice, `${base()}/;SECTION=1;EXPIRE=2099-01-01T00:00:00Z;URLAUTH=user+bob`);
  const last = good.at(-1)!;
  const tampered = good.slice(0, -1) + (last === '0' ? '1' : '0');
  const wrongUid = good.replace(`;UID=${uid}`, `;UID=${uid + 1}`);
  // A message expunged after its URL was authorized (GENURLAUTH refuses one that is not there).
  const gone = await stack.append('alice', 'INBOX', Buffer.from('Subject: soon gone\r\n\r\nx\r\n'));
  const missing = await generate(alice, `imap://alice@localhost/INBOX;UIDVALIDITY=${gone.uidValidity}/;UID=${gone.uid};URLAUTH=user+bob`);
  const remover = await masterClient(stack, 'alice');
  await remover.mailboxOpen('INBOX');
  await remover.messageDelete(String(gone.uid), { uid: true });
  await remover.logout();
  t.same(
    await fetchUrls(bob, good, expired, future, tampered, wrongUid, missing, 'imap://not a url'),
    [text, undefined, text, undefined, undefined, undefined, undefined],
    'each URL on its own: good, expired, not yet expired, tampered, UID changed under the token, message expunged since, garbage',
  );
  t.match((await alice.command('r', 'RESETKEY INBOX INTERNAL')).at(-1), /^r OK/);
  t.same(await fetchUrls(bob, good, future), [undefined, undefined], 'after RESETKEY INBOX: NIL at once');
  const again = await generate(alice, `${base()}/;SECTION=1;URLAUTH=user+bob`);
  t.not(again, good, 'a new token');
  t.same(await fetchUrls(bob, again), [text]);
  t.match((await alice.command('r2', 'RESETKEY')).at(-1), /^r2 OK/);
  t.same(await fetchUrls(bob, again), [undefined], 'after RESETKEY of all mailboxes: NIL');
  alice.close();
  bob.close();
});

t.test('GENURLAUTH refuses URLs it must not authorize; the session goes on', async (t) => {
  const alice = await login('alice');
  const refused = async (args: string) => (await alice.command('n', `GENURLAUTH ${args}`)).at(-1)!;
  t.match(await refused(`"imap://alice@elsewhere.example/INBOX/;UID=${uid};URLAUTH=authuser" INTERNAL`), /^n NO /, 'another host');
  t.match(await refused(`"imap://bob@localhost/INBOX/;UID=${uid};URLAUTH=authuser" INTERNAL`), /^n NO /, "another user's mailbox");
  t.match(await refused(`"${base()};URLAUTH=authuser" XYZZY`), /^n NO /, 'unknown mechanism');
  t.match(await refused(`"imap://alice@localhost/INBOX;URLAUTH=authuser" INTERNAL`), /^n NO /, 'no ;UID=');
  t.match(await refused(`"${base()}" INTERNAL`), /^n NO /, 'no ;URLAUTH=');
  t.match(await refused(`"${base()};URLAUTH=authuser:INTERNAL:${'0'.repeat(64)}" INTERNAL`), /^n NO /, 'already authorized');
  t.match(await refused(`"imap://alice@localhost/IN%ZZBOX/;UID=1;URLAUTH=authuser" INTERNAL`), /^n NO /, 'malformed');
  t.match(await refused(`"${base()};URLAUTH=authuser"`), /^n BAD /, 'missing mechanism');
  t.match(await refused(''), /^n BAD /, 'no arguments');
  t.match((await alice.command('u', 'URLFETCH')).at(-1), /^u BAD /, 'URLFETCH without URLs');
  t.match((await alice.command('z', 'NOOP')).at(-1), /^z OK/, 'the session goes on');
  alice.close();
  const m = await gw.metrics();
  t.ok(metricValue(m, 'lemonade_urlauth_issued_total') >= 10, 'issued tokens counted');
  t.ok(metricValue(m, 'lemonade_urlauth_fetches_total', { result: 'refused', reason: 'token' }) >= 1, 'refusals counted by reason');
  t.ok(metricValue(m, 'lemonade_urlauth_fetch_bytes_total', { by: 'urlfetch' }) > message.length, 'bytes served counted');
});

/** The mailboxes the store holds an access key for, per user. */
function storedKeys(): string[] {
  const db = new Database(path.join(gw.dir, 'data', 'gateway.sqlite'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], { user: string; mailbox: string }>('SELECT user, mailbox FROM mailbox_keys ORDER BY user, mailbox').all().map((r) => `${r.user}:${r.mailbox}`);
  } finally {
    db.close();
  }
}

t.test('GENURLAUTH only for messages that exist: NO [BADURL url], and no key stored', async (t) => {
  const alice = await login('alice');
  const bob = await login('bob');
  t.match((await alice.command('r', 'RESETKEY')).at(-1), /^r OK/, 'no keys of alice to begin with');
  const before = storedKeys();
  t.notOk(before.some((k) => k.startsWith('alice:')), 'none stored');
  const rumps: Array<[string, string]> = [
    ['a mailbox that does not exist', `imap://alice@localhost/NoSuchBox/;UID=${uid};URLAUTH=user+bob`],
    ['a UID that does not exist', `imap://alice@localhost/INBOX/;UID=${uid + 100};URLAUTH=user+bob`],
    ['a UIDVALIDITY that is not the mailbox\'s', `imap://alice@localhost/INBOX;UIDVALIDITY=${uidValidity + 1}/;UID=${uid};URLAUTH=user+bob`],
    ['a mailbox name with CR LF in it', `imap://alice@localhost/INBOX%0D%0AX1%20CREATE%20smuggled/;UID=${uid};URLAUTH=user+bob`],
    ['a mailbox name with a bare LF', `imap://alice@localhost/Drafts%0A/;UID=1;URLAUTH=user+bob`],
  ];
  for (const [what, rump] of rumps) {
    const r = await alice.command('n', `GENURLAUTH "${rump}" INTERNAL`);
    t.equal(r.length, 1, `${what}: no GENURLAUTH response`);
    t.equal(r.at(-1)?.startsWith(`n NO [BADURL ${rump}] `), true, `${what}: NO [BADURL url] (${r.at(-1)})`);
  }
  // All or nothing: a good URL next to a bad one gets no token either.
  const pair = await alice.command('p', `GENURLAUTH "${base()};URLAUTH=user+bob" INTERNAL "${rumps[0]![1]}" INTERNAL`);
  t.match(pair.at(-1), /^p NO \[BADURL /, 'one bad URL fails the command');
  t.notOk(pair.some((l) => l.startsWith('* GENURLAUTH')), 'and nothing is issued');
  // A forged URL for a mailbox with no key leaves none behind either.
  const forged = `imap://alice@localhost/Forged%0D%0ABox/;UID=1;URLAUTH=user+bob:INTERNAL:${'ab'.repeat(32)}`;
  t.same(await fetchUrls(bob, forged), [undefined], 'a forged URL: NIL');
  t.same(storedKeys(), before, 'the store holds no key for any of those names');
  const direct = await masterClient(stack, 'alice');
  const boxes = (await direct.list()).map((b) => b.path);
  await direct.logout();
  t.notOk(boxes.some((b) => /smuggled|\r|\n/i.test(b)), `no mailbox was made upstream (${boxes.join(', ')})`);

  // A valid one still works end to end, and makes INBOX's key.
  const url = await generate(alice, `${base()}/;SECTION=1;URLAUTH=user+bob`);
  t.same(await fetchUrls(bob, url), [text], 'URLFETCH of a valid URL: the part');
  t.same(storedKeys().filter((k) => k.startsWith('alice:')), ['alice:INBOX'], 'one key, for INBOX');
  alice.close();
  bob.close();
});
