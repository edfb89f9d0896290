/**
 * Unit tests of smtp/preconditions.ts (what each submission command needs before its
 * handler runs, in the order the checks are made) and of the reply helpers that write
 * named replies (smtp/protocol/reply.ts, replies.ts). The session's use of them is
 * covered end to end by submission*.test.ts.
 */
import t from 'tap';
import { precondition, type SessionView } from '../src/smtp/preconditions.js';
import { Replies } from '../src/smtp/protocol/replies.js';
import { asParsedReply, challenge, formatReply } from '../src/smtp/protocol/reply.js';

const fresh: SessionView = {
  greeted: false,
  authenticated: false,
  transaction: undefined,
  authAllowed: true,
  starttlsAvailable: true,
  burlOffered: true,
};
const view = (over: Partial<SessionView>): SessionView => ({ ...fresh, ...over });
const ready = view({ greeted: true, authenticated: true });
const inMail = view({ greeted: true, authenticated: true, transaction: { refused: false, contentStarted: false } });
const mailRefused = view({ greeted: true, authenticated: true, transaction: { refused: true, contentStarted: false } });

const refusal = (verb: string, args: string, s: SessionView): string | undefined => {
  const r = precondition(verb, args, s);
  return r === undefined ? undefined : formatReply(r);
};

t.test('unknown and unoffered verbs', async (t) => {
  t.equal(refusal('FROB', '', ready), '500 5.5.1 Command unrecognized: FROB\r\n');
  t.equal(refusal('BURL', 'imap://x', view({ ...ready, burlOffered: false })), '500 5.5.1 Command unrecognized: BURL\r\n', 'BURL without side connections is unknown');
  t.equal(refusal('BURL', 'imap://x', view({ burlOffered: false })), '500 5.5.1 Command unrecognized: BURL\r\n', 'unknown comes before authentication required');
  t.equal(refusal('A'.repeat(40), '', ready), `500 5.5.1 Command unrecognized: ${'A'.repeat(20)}\r\n`, 'the verb is cut in the reply');
});

t.test('commands that take no arguments', async (t) => {
  for (const verb of ['RSET', 'QUIT', 'DATA', 'STARTTLS']) {
    t.equal(refusal(verb, 'x', ready), `501 5.5.4 ${verb} takes no arguments\r\n`);
    t.equal(refusal(verb, '', ready), undefined);
  }
  t.equal(refusal('STARTTLS', 'x', view({ starttlsAvailable: false })), '501 5.5.4 STARTTLS takes no arguments\r\n', 'arguments are checked before availability');
  t.equal(refusal('STARTTLS', '', view({ starttlsAvailable: false })), '503 5.5.1 STARTTLS not available\r\n');
  t.equal(refusal('NOOP', 'anything', fresh), undefined, 'NOOP ignores its argument (RFC 5321 §4.1.1.9)');
});

t.test('AUTH: EHLO first, once, outside a transaction, after TLS; in that order', async (t) => {
  t.equal(refusal('AUTH', 'PLAIN', view({ authAllowed: false })), '503 5.5.1 Send EHLO first\r\n');
  t.equal(refusal('AUTH', 'PLAIN', view({ greeted: true, authenticated: true, authAllowed: false })), '503 5.5.1 Already authenticated\r\n');
  t.equal(refusal('AUTH', 'PLAIN', view({ greeted: true, transaction: { refused: true, contentStarted: false }, authAllowed: false })), '503 5.5.1 AUTH not allowed during a mail transaction\r\n', 'even after a MAIL the MTA refused');
  t.equal(refusal('AUTH', 'PLAIN', view({ greeted: true, authAllowed: false })), '530 5.7.0 Must issue a STARTTLS command first\r\n');
  t.equal(refusal('AUTH', 'PLAIN', view({ greeted: true })), undefined);
});

t.test('MAIL, RCPT, BURL, XCANCEL', async (t) => {
  t.equal(refusal('MAIL', 'FROM:<a@b>', view({ authenticated: true })), '503 5.5.1 Send EHLO first\r\n');
  t.equal(refusal('MAIL', 'FROM:<a@b>', view({ greeted: true })), '530 5.7.0 Authentication required\r\n');
  t.equal(refusal('MAIL', 'FROM:<a@b>', inMail), '503 5.5.1 Nested MAIL command\r\n');
  t.equal(refusal('MAIL', 'FROM:<a@b>', mailRefused), undefined, 'a MAIL the MTA refused is replaced');
  t.equal(refusal('RCPT', 'TO:<a@b>', ready), '503 5.5.1 Need MAIL command first\r\n');
  t.equal(refusal('RCPT', 'TO:<a@b>', mailRefused), '503 5.5.1 Need MAIL command first\r\n');
  t.equal(refusal('RCPT', 'TO:<a@b>', view({ ...inMail, transaction: { refused: false, contentStarted: true } })), '503 5.5.1 Message content already started\r\n');
  t.equal(refusal('RCPT', 'TO:<a@b>', inMail), undefined);
  t.equal(refusal('BURL', 'imap://x', view({ greeted: true })), '530 5.7.0 Authentication required\r\n');
  t.equal(refusal('XCANCEL', 'id', view({ greeted: true })), '530 5.7.0 Authentication required\r\n');
  t.equal(refusal('XCANCEL', 'id', mailRefused), '503 5.5.1 XCANCEL not allowed during a mail transaction\r\n');
  t.equal(refusal('XCANCEL', 'id', ready), undefined);
});

t.test('reply helpers', async (t) => {
  t.equal(challenge(''), '334 \r\n', 'an empty SASL challenge stays empty (RFC 4954 §4)');
  t.equal(challenge('VXNlcm5hbWU6'), '334 VXNlcm5hbWU6\r\n');
  t.equal(challenge('a\r\nb'), '334 a b\r\n', 'no line break gets through');
  t.equal(formatReply(Replies.greeting('mx.test')), '220 mx.test ESMTP lemonade-gateway\r\n', 'no enhanced code in the greeting (RFC 2034 §3)');
  t.equal(formatReply(Replies.contentConflict('DATA', 'BDAT')), '503 5.5.1 DATA not allowed after BDAT\r\n');
  t.equal(formatReply(Replies.contentConflict('BURL', 'DATA')), '503 5.5.1 BURL not allowed during DATA\r\n');
  t.equal(formatReply(Replies.noHeldMessage('x'.repeat(100))).length, `550 5.0.0 No held message ${'x'.repeat(40)} of yours to cancel (unknown, not yours, or already being released)\r\n`.length, 'a client id is cut');
  t.same(asParsedReply(Replies.mtaUnavailable), { code: 451, enhanced: '4.4.1', lines: ['Upstream mail server unavailable, try again later'] });
  t.same(asParsedReply(Replies.startData), { code: 354, lines: ['End data with <CR><LF>.<CR><LF>'] }, 'no enhanced key when there is none');
});
