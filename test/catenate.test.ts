/**
 * CATENATE emulated over the legacy Dovecot (issue 4): the forward of the profile draft
 * step by step, a 10 MB attachment forwarded while the client's link carries a few KB,
 * URLAUTH URLs to another user's message, and every error with its response code.
 */
import t from 'tap';
import { ImapFlow } from 'imapflow';
import { startLegacyStack, type LegacyStack } from './helpers/stack.js';
import { startGateway, metricValue, type RunningGateway } from './helpers/gateway.js';
import { RawImap } from './helpers/imap-raw.js';
import { withAttachment } from './helpers/messages.js';

let stack: LegacyStack;
let gw: RunningGateway;

const MAX_LITERAL = 20 * 1024 * 1024;

t.before(async () => {
  stack = await startLegacyStack({ postfix: false });
  gw = await startGateway(stack, { config: { imap: { limits: { maxLiteralSize: MAX_LITERAL }, catenate: { spillBytes: 256 * 1024 } } } });
});
t.teardown(async () => {
  await gw?.stop();
  await stack?.stop();
});

/** Puts a message into user's INBOX (directly upstream) and returns its UID and the UIDVALIDITY. */
const seed = (user: string, raw: Buffer) => stack.append(user, 'INBOX', raw);

/** The newest message of a mailbox of user, raw. */
async function newest(user: string, mailbox: string): Promise<Buffer> {
  const client = new ImapFlow({
    host: stack.imapHost, port: stack.imapPort, secure: false,
    auth: { user: stack.master.user, pass: stack.master.password, authzid: user }, logger: false,
  });
  await client.connect();
  try {
    await client.mailboxOpen(mailbox);
    const msg = await client.fetchOne('*', { source: true, flags: true });
    if (!msg || !msg.source) throw new Error('no message');
    return msg.source;
  } finally {
    await client.logout();
  }
}

async function login(user: string): Promise<RawImap> {
  const c = await RawImap.connect(gw.imapsPort, { tls: true });
  await c.line();
  const r = await c.command('l', `LOGIN ${user} password`);
  if (!/^l OK/.test(r.at(-1)!)) throw new Error(r.join('\n'));
  await c.command('cr', 'CREATE Sent');
  return c;
}

/** Sends an APPEND CATENATE with synchronizing TEXT literals, waiting for each "+". */
async function catenate(c: RawImap, tag: string, head: string, parts: Array<{ text: string } | { url: string }>): Promise<string[]> {
  let line = `${tag} APPEND ${head} CATENATE (`;
  let first = true;
  for (const part of parts) {
    line += first ? '' : ' ';
    first = false;
    if ('url' in part) {
      line += `URL "${part.url}"`;
      continue;
    }
    c.write(`${line}TEXT {${Buffer.byteLength(part.text)}}\r\n`);
    const cont = await c.line();
    if (!cont?.startsWith('+')) return [cont ?? 'closed', ...(await c.until(tag).catch(() => []))];
    c.write(part.text);
    line = '';
  }
  c.write(`${line})\r\n`);
  return c.until(tag);
}

t.test('the forward of the profile draft, step by step (RFC 4469 §5, draft-ietf-lemonade-profile)', async (t) => {
  const original = withAttachment(3000);
  const { uid, uidValidity } = await seed('alice', original.raw);
  const c = await login('alice');
  await c.command('s', 'SELECT INBOX');
  const bs = await c.command('b', `UID FETCH ${uid} (BODYSTRUCTURE)`);
  t.match(bs[0], /BODYSTRUCTURE \(\("TEXT" "PLAIN".*\)\("APPLICATION" "OCTET-STREAM"/i, 'the client learns the structure: part 2 is the attachment');
  const head = 'From: alice@example.org\r\nTo: carol@example.org\r\nSubject: Fwd: the data\r\nMIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed; boundary="fwd"\r\n\r\n--fwd\r\nContent-Type: text/plain\r\n\r\nSee the attached data.\r\n--fwd\r\n';
  const tail = '\r\n--fwd--\r\n';
  const url = `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}`;
  const r = await catenate(c, 'a', 'Sent (\\Seen)', [{ text: head }, { url: `${url}/;SECTION=2.MIME` }, { url: `${url}/;SECTION=2` }, { text: tail }]);
  const ok = /^a OK \[APPENDUID (\d+) (\d+)\]/.exec(r.at(-1) ?? '');
  t.ok(ok, `OK [APPENDUID v uid]: ${r.at(-1)}`);
  const expected = Buffer.from(head + original.mime + original.body + tail);
  const appended = await newest('alice', 'Sent');
  t.ok(appended.equals(expected), 'the appended message is exactly text + MIME header + attachment + text');
  await c.command('ex', 'EXAMINE Sent');
  const byUid = await c.command('u', `UID FETCH ${ok?.[2]} (RFC822.SIZE)`);
  t.match(byUid[0], new RegExp(`RFC822.SIZE ${expected.length}`), 'the APPENDUID names that message');
  await c.command('s2', 'SELECT INBOX');
  const flags = await c.command('f', 'STATUS Sent (MESSAGES UNSEEN)');
  t.match(flags[0], /MESSAGES 1 UNSEEN 0/, 'flags given with APPEND (\\Seen) applied');
  t.match((await c.command('n', 'NOOP')).at(-1), /^n OK/, 'session goes on');
  c.close();
});

t.test('a 10 MB attachment forwarded: the client sends and receives under 8 KB', async (t) => {
  const original = withAttachment(10 * 1024 * 1024);
  const { uid, uidValidity } = await seed('bob', original.raw);
  const c = await login('bob');
  const sent0 = c.bytesSent;
  const received0 = c.bytesReceived;
  const head = 'From: bob@example.org\r\nTo: alice@example.org\r\nSubject: Fwd: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\n';
  const tail = '\r\n--z--\r\n';
  const url = `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}/;SECTION=2`;
  // LITERAL+ for the text parts: one write, no round trips.
  c.write(`big APPEND Sent CATENATE (TEXT {${head.length}+}\r\n${head} URL "${url}.MIME" URL "${url}" TEXT {${tail.length}+}\r\n${tail})\r\n`);
  const r = await c.until('big', 60_000);
  t.match(r.at(-1), /^big OK/, String(r.at(-1)));
  const used = c.bytesSent - sent0 + (c.bytesReceived - received0);
  t.ok(used < 8 * 1024, `client bytes for the whole exchange: ${used}`);
  const appended = await newest('bob', 'Sent');
  // What a download-and-upload client would have produced from the same parts.
  t.ok(appended.equals(Buffer.from(head + original.mime + original.body + tail)), 'byte-identical to download and upload');
  const m = await gw.metrics();
  t.ok(metricValue(m, 'lemonade_catenate_url_bytes_total') > 10 * 1024 * 1024, 'bytes the client did not send, counted');
  c.close();
});

t.test("URLAUTH URL parts: alice forwards bob's message with a URL bob authorized", async (t) => {
  const original = withAttachment(2000);
  const { uid, uidValidity } = await seed('bob', original.raw);
  const bob = await login('bob');
  const gen = await bob.command('g', `GENURLAUTH "imap://bob@localhost/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}/;SECTION=2;URLAUTH=user+alice" INTERNAL`);
  const url = /"([^"]+)"/.exec(gen[0]!)![1]!;
  bob.close();
  const alice = await login('alice');
  const r = await catenate(alice, 'x', 'Sent', [{ text: 'Subject: from bob\r\n\r\n' }, { url }]);
  t.match(r.at(-1), /^x OK/);
  t.ok((await newest('alice', 'Sent')).equals(Buffer.from(`Subject: from bob\r\n\r\n${original.body}`)));
  const plain = await catenate(alice, 'y', 'Sent', [{ text: 'x' }, { url: `imap://bob@localhost/INBOX/;UID=${uid}` }]);
  t.match(plain.at(-1), /^y NO \[BADURL imap:\/\/bob@localhost\/INBOX\/;UID=\d+\]/, "bob's mailbox without URLAUTH: BADURL");
  alice.close();
});

t.test('errors: BADURL, TOOBIG, missing literal, bad syntax; the session goes on', async (t) => {
  const original = withAttachment(1000);
  const { uid, uidValidity } = await seed('carol', original.raw);
  const c = await login('carol');
  const ok = /^\S+ OK/;
  const nouid = await catenate(c, 'e1', 'Sent', [{ text: 'a' }, { url: `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid + 50}` }, { text: 'b' }]);
  t.match(nouid.at(-1), /^e1 NO \[BADURL \/INBOX;UIDVALIDITY=\d+\/;UID=\d+\]/, 'nonexistent UID: BADURL, and the next literal is refused');
  t.match((await c.command('n1', 'NOOP')).at(-1), ok);
  const stale = await catenate(c, 'e2', 'Sent', [{ url: `/INBOX;UIDVALIDITY=${uidValidity + 1}/;UID=${uid}` }]);
  t.match(stale.at(-1), /^e2 NO \[BADURL /, 'UIDVALIDITY changed: BADURL');
  const garbage = await catenate(c, 'e3', 'Sent', [{ url: '/INBOX/;UID=abc' }]);
  t.match(garbage.at(-1), /^e3 NO \[BADURL /, 'malformed URL: BADURL');
  const other = await catenate(c, 'e4', 'Sent', [{ url: `imap://carol@elsewhere.example/INBOX/;UID=${uid}` }]);
  t.match(other.at(-1), /^e4 NO \[BADURL /, 'another host: BADURL (no SSRF)');
  c.write(`e5 APPEND Sent CATENATE (TEXT {${MAX_LITERAL + 1}}\r\n`);
  t.match((await c.until('e5')).at(-1), /^e5 NO \[TOOBIG\]/, 'a part over the limit: TOOBIG, literal refused');
  c.write('e6 APPEND Sent CATENATE (TEXT {3+}\r\nabc FROB)\r\n');
  t.match((await c.until('e6')).at(-1), /^e6 BAD /, 'unknown cat-part: BAD');
  c.write('e7 APPEND Sent CATENATE (TEXT {3+}\r\nabc\r\n');
  t.match((await c.until('e7')).at(-1), /^e7 BAD /, 'missing ")": BAD');
  c.write('e8 APPEND Sent CATENATE (TEXT)\r\n');
  t.match((await c.until('e8')).at(-1), /^e8 BAD /, 'TEXT without its literal: BAD');
  const missingBox = await catenate(c, 'e9', 'NoSuchBox', [{ text: 'Subject: x\r\n\r\nx\r\n' }]);
  t.match(missingBox.at(-1), /^e9 NO \[TRYCREATE\]/, 'a missing target mailbox: TRYCREATE');
  // An ATOM-CHAR is 7-bit (RFC 3501 §9): "Senté" is no mailbox name, so CATENATE is not emulated for it and the APPEND is bad syntax.
  c.write(Buffer.from('e12 APPEND Sent\u00e9 CATENATE (TEXT {1+}\r\nz)\r\n', 'utf8'));
  const eightBit = await c.until('e12');
  t.match(eightBit.at(-1), /^e12 BAD /, `an 8-bit atom as mailbox: BAD (${eightBit.at(-1)})`);
  t.match((await c.command('n2', 'NOOP')).at(-1), ok, 'and the session goes on');
  c.write(`e10 APPEND Sent CATENATE (URL "/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}" TEXT {1+}\r\nz)\r\ne11 NOOP\r\n`);
  t.match((await c.until('e10')).at(-1), /^e10 OK/, 'pipelined: CATENATE then NOOP');
  t.match((await c.until('e11')).at(-1), /^e11 OK/);
  t.match((await c.command('p', 'APPEND Sent {5+}\r\nhello')).at(-1), ok, 'plain APPEND still relayed');
  const m = await gw.metrics();
  t.ok(metricValue(m, 'lemonade_catenate_appends_total', { result: 'badurl' }) >= 4, 'refusals counted');
  c.close();
});

t.test('a missing target mailbox wins over a bad URL: NO [TRYCREATE], checked first (RFC 3501 §6.3.11)', async (t) => {
  const { uid, uidValidity } = await seed('carol', withAttachment(500).raw);
  const c = await login('carol');
  const before = metricValue(await gw.metrics(), 'lemonade_catenate_appends_total', { result: 'mailbox' });
  const wrong = `/INBOX;UIDVALIDITY=${uidValidity + 7}/;UID=1/;SECTION=HEADER`;
  // The command: TEXT, then a URL with a wrong UIDVALIDITY, into a mailbox that is not there.
  const r = await catenate(c, 'm1', 'NoSuchBox', [{ text: 'Subject: x\r\n\r\n' }, { url: wrong }, { text: 'tail' }]);
  t.match(r.at(-1), /^m1 NO \[TRYCREATE\] /, `TRYCREATE, not BADURL: ${r.at(-1)}`);
  t.equal(r.length, 1, 'answered at the first TEXT literal, which is refused (no "+")');
  const urlFirst = await catenate(c, 'm2', '"No Such Box"', [{ url: wrong }, { text: 'x' }]);
  t.match(urlFirst.at(-1), /^m2 NO \[TRYCREATE\] /, 'a URL part first: still TRYCREATE');
  const odd = await catenate(c, 'm3', 'a[b]%*', [{ url: `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}` }]);
  t.match(odd.at(-1), /^m3 NO \[TRYCREATE\] /, 'an atom mailbox with "[", "]", "%", "*" is recognized as CATENATE, not relayed');
  const ok = await catenate(c, 'm4', 'Sent', [{ text: 'Subject: y\r\n\r\n' }, { url: `/INBOX;UIDVALIDITY=${uidValidity}/;UID=${uid}/;SECTION=1` }]);
  t.match(ok.at(-1), /^m4 OK /, 'an existing mailbox: appended as before');
  const after = metricValue(await gw.metrics(), 'lemonade_catenate_appends_total', { result: 'mailbox' });
  t.equal(after - before, 3, 'counted as result="mailbox"');
  t.match((await c.command('n', 'NOOP')).at(-1), /^n OK/, 'the session goes on');
  c.close();
});

t.test('a URL that does not resolve says why, and nothing about other users\' mail', async (t) => {
  const mine = await seed('alice', withAttachment(300).raw);
  const bobs = await seed('bob', withAttachment(300).raw);
  const bob = await login('bob');
  const gen = async (rump: string): Promise<string> => {
    const r = await bob.command('g', `GENURLAUTH "${rump}" INTERNAL`);
    const m = /^\* GENURLAUTH "([^"]+)"/.exec(r[0]!);
    if (!m) throw new Error(r.join('\n'));
    return m[1]!;
  };
  const base = `imap://bob@localhost/INBOX;UIDVALIDITY=${bobs.uidValidity}/;UID=${bobs.uid}`;
  const submitAlice = await gen(`${base};URLAUTH=submit+alice`);
  const userCarol = await gen(`${base};URLAUTH=user+carol`);
  const forAlice = await gen(`${base}/;SECTION=1;URLAUTH=user+alice`);
  const expired = await gen(`${base};EXPIRE=2020-01-01T00:00:00Z;URLAUTH=user+alice`);
  const toDelete = await gen(`${base}/;SECTION=2;URLAUTH=user+alice`);
  const tampered = forAlice.slice(0, -1) + (forAlice.endsWith('0') ? '1' : '0');
  // A valid-looking token for a message bob never had (his key exists: the token is simply wrong).
  const neverThere = `imap://bob@localhost/INBOX;UIDVALIDITY=${bobs.uidValidity}/;UID=${bobs.uid + 1000};URLAUTH=user+alice:INTERNAL:${'0'.repeat(64)}`;
  const nobody = `imap://nobody@localhost/INBOX/;UID=1;URLAUTH=user+alice:INTERNAL:${'0'.repeat(64)}`;

  const alice = await login('alice');
  const why = async (url: string): Promise<string> => {
    const r = await catenate(alice, 'w', 'Sent', [{ url }]);
    const m = /^w NO \[BADURL [^\]]*\] (.*)$/.exec(r.at(-1)!);
    if (!m) throw new Error(r.join(' | '));
    return m[1]!;
  };
  t.equal(await why(submitAlice), 'CATENATE: URL does not resolve: URL access identifier does not permit this user', 'submit+alice: IMAP sessions are not submit servers');
  t.equal(await why(userCarol), 'CATENATE: URL does not resolve: URL access identifier does not permit this user', "user+carol used by alice");
  t.equal(await why(expired), 'CATENATE: URL does not resolve: URL expired');
  const invalid = 'CATENATE: URL does not resolve: URL authorization token invalid or no such message';
  t.equal(await why(tampered), invalid, 'a wrong token');
  t.equal(await why(neverThere), invalid, "a message that is not in bob's mailbox reads as a wrong token");
  t.equal(await why(nobody), invalid, 'a user who does not exist reads as a wrong token');
  await bob.command('s', 'SELECT INBOX');
  await bob.command('d', `UID STORE ${bobs.uid} +FLAGS.SILENT (\\Deleted)`);
  await bob.command('x', 'EXPUNGE');
  t.equal(await why(toDelete), invalid, "bob's message deleted after the URL was issued: the same words");
  // The user's own mail: as precise as FETCH would be.
  t.equal(await why(`/INBOX;UIDVALIDITY=${mine.uidValidity}/;UID=${mine.uid + 1000}`), 'CATENATE: URL does not resolve: no such message');
  t.equal(await why(`/INBOX;UIDVALIDITY=${mine.uidValidity + 1}/;UID=${mine.uid}`), 'CATENATE: URL does not resolve: mailbox UIDVALIDITY has changed');
  t.equal(await why(`/NoSuchBox/;UID=1`), 'CATENATE: URL does not resolve: no such mailbox');
  t.equal(await why(`imap://bob@localhost/INBOX/;UID=${bobs.uid}`), "CATENATE: URL does not resolve: another user's mail needs a URLAUTH-authorized URL");
  t.equal(await why('imap://alice@elsewhere.example/INBOX/;UID=1'), 'CATENATE: URL does not resolve: the URL names another server');
  t.equal(await why('/INBOX/;UID=abc'), 'CATENATE: URL does not resolve: not a valid IMAP URL for this server');
  bob.close();
  alice.close();
});

t.test('APPENDUID worked out by the gateway (the upstream has no UIDPLUS): two clients appending at once', async (t) => {
  const a = await login('alice');
  const b = await login('alice');
  await a.command('c', 'CREATE Shared');
  const sent: Array<{ uid: number; text: string }> = [];
  const appendMany = async (c: RawImap, who: string) => {
    for (let i = 0; i < 6; i++) {
      const text = `Subject: ${who} ${i}\r\n\r\n${'x'.repeat(10 + i * 7 + (who === 'b' ? 3 : 0))}\r\n`;
      const r = i % 2 === 0
        ? await c.command(`${who}${i}`, `APPEND Shared {${Buffer.byteLength(text)}+}\r\n${text}`)
        : await catenate(c, `${who}${i}`, 'Shared', [{ text }]);
      const m = /^\S+ OK \[APPENDUID (\d+) (\d+)\]/.exec(r.at(-1) ?? '');
      if (!m) throw new Error(`no APPENDUID: ${r.at(-1)}`);
      sent.push({ uid: Number(m[2]), text });
    }
  };
  await Promise.all([appendMany(a, 'a'), appendMany(b, 'b')]);
  t.equal(new Set(sent.map((s) => s.uid)).size, 12, 'twelve distinct UIDs');
  await a.command('s', 'EXAMINE Shared');
  for (const { uid, text } of sent) {
    const lines = await a.command('f', `UID FETCH ${uid} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])`);
    t.match(lines.join('\n'), new RegExp(text.split('\r\n')[0]!), `UID ${uid} is "${text.split('\r\n')[0]}"`);
  }
  a.close();
  b.close();
});

t.test('withAppendUid replaces an unadvertised code and leaves failures alone', async (t) => {
  const { withAppendUid } = await import('../src/lemonade/appenduid.js');
  t.equal(withAppendUid(Buffer.from('a OK [APPENDUID 1 9] Append completed.\r\n'), 5, 7).toString(), 'a OK [APPENDUID 5 7] Append completed.\r\n');
  t.equal(withAppendUid(Buffer.from('a OK Append completed.\r\n'), 5, 7).toString(), 'a OK [APPENDUID 5 7] Append completed.\r\n');
  t.equal(withAppendUid(Buffer.from('a OK [APPENDUID 1 9] done\r\n'), 5, undefined).toString(), 'a OK done\r\n', 'not certain: no code rather than a wrong one');
  t.equal(withAppendUid(Buffer.from('a NO [TRYCREATE] no\r\n'), 5, 7).toString(), 'a NO [TRYCREATE] no\r\n');
});

t.test('UIDPLUS emulated: advertised, COPYUID for COPY and UID COPY, UID EXPUNGE of exactly the set', async (t) => {
  const c = await login('carol');
  t.match((await c.command('cap', 'CAPABILITY'))[0], / UIDPLUS( |$)/, 'UIDPLUS advertised');
  await c.command('c1', 'CREATE Src');
  await c.command('c2', 'CREATE Dst');
  const uids: number[] = [];
  for (let i = 0; i < 5; i++) {
    const text = `Subject: m${i}\r\n\r\nbody ${i}\r\n`;
    const r = await c.command(`a${i}`, `APPEND Src {${text.length}+}\r\n${text}`);
    uids.push(Number(/APPENDUID \d+ (\d+)/.exec(r.at(-1)!)![1]));
  }
  await c.command('s', 'SELECT Src');
  const copy = await c.command('cp', 'COPY 2:3 Dst');
  const m = /^cp OK \[COPYUID (\d+) (\S+) (\S+)\]/.exec(copy.at(-1)!);
  t.ok(m, `COPY: ${copy.at(-1)}`);
  t.equal(m?.[2], `${uids[1]}:${uids[2]}`, 'source UIDs of messages 2 and 3');
  const ucopy = await c.command('uc', `UID COPY ${uids[4]},${uids[0]} Dst`);
  const u = /^uc OK \[COPYUID (\d+) (\S+) (\S+)\]/.exec(ucopy.at(-1)!);
  t.equal(u?.[2], `${uids[0]},${uids[4]}`, 'UID COPY: source set in UID order');
  // The destination UIDs name the copies.
  const dst = await RawImap.connect(gw.imapsPort, { tls: true });
  await dst.line();
  await dst.command('l', 'LOGIN carol password');
  await dst.command('e', 'EXAMINE Dst');
  const [d1, d2] = (u?.[3] ?? '').split(/[,:]/).map(Number);
  t.match((await dst.command('f', `UID FETCH ${d1} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])`)).join('\n'), /Subject: m0/);
  t.match((await dst.command('g', `UID FETCH ${d2} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])`)).join('\n'), /Subject: m4/);
  dst.close();
  t.match((await c.command('nc', 'COPY 1 NoSuchBox')).at(-1), /^nc NO \[TRYCREATE\]/, 'the upstream refusal relayed');
  // UID EXPUNGE: 1, 2, 4 deleted; expunge only 2 and 4.
  await c.command('st', `UID STORE ${uids[0]},${uids[1]},${uids[3]} +FLAGS.SILENT (\\Deleted)`);
  const ex = await c.command('x', `UID EXPUNGE ${uids[1]},${uids[3]}`);
  t.match(ex.at(-1), /^x OK/);
  t.equal(ex.filter((l) => / EXPUNGE$/.test(l)).length, 2, 'two EXPUNGE responses reach the client');
  t.notMatch(ex.join('\n'), /\* SEARCH/, "the gateway's own SEARCH stays hidden");
  const left = await c.command('ls', 'UID SEARCH ALL');
  t.equal(left[0], `* SEARCH ${uids[0]} ${uids[2]} ${uids[4]}`, 'only the two in the set are gone');
  const del = await c.command('ld', 'UID SEARCH DELETED');
  t.equal(del[0], `* SEARCH ${uids[0]}`, 'the other deleted message is still \\Deleted');
  t.match((await c.command('bad', 'UID EXPUNGE x')).at(-1), /^bad BAD/);
  c.close();
});
