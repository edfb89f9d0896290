/**
 * protocol/append-grammar.ts: a relayed APPEND is checked against RFC 3501 §9 before any
 * of it goes upstream (Dovecot's framing differs from the client's after some malformed ones).
 */
import t from 'tap';
import { AppendGrammar } from '../src/imap/protocol/append-grammar.js';

const LEGACY = { binary: false, catenate: false };
const FULL = { binary: true, catenate: true };

/** The verdict on a command given as its text segments (each up to a literal announcement, the literals left out). */
function verdict(segments: string[], upstream = LEGACY): string | undefined {
  const g = new AppendGrammar(upstream);
  for (const s of segments) {
    const fault = g.check(Buffer.from(s, 'latin1'));
    if (fault !== undefined) return fault;
  }
  return undefined;
}

t.test('valid APPENDs go on', async (t) => {
  for (const segments of [
    ['C1 APPEND INBOX {5}\r\n', '\r\n'],
    ['C1 APPEND INBOX {5+}\r\n', '\r\n'],
    ['C1 append "Sent Items" (\\Seen $Label1) " 1-Jan-2020 10:00:00 +0000" {5}\r\n', '\r\n'],
    ['C1 APPEND INBOX () "01-Jan-2020 25:61:61 +9999" {5}\r\n', '\r\n'], // grammatical; the upstream judges the values
    ['C1 APPEND INBOX "1-Jan-2020 10:00:00 -0500" {5}\r\n', '\r\n'],
    ['C1 APPEND {5}\r\n', ' (\\Seen) {7}\r\n', '\r\n'], // the mailbox as a literal
    ['C1 APPEND a]b {5}\r\n', '\r\n'],
  ]) {
    t.equal(verdict(segments), undefined, JSON.stringify(segments));
  }
  t.equal(verdict(['C1 APPEND INBOX (\\Seen) CATENATE (TEXT {5}\r\n', ' URL "/INBOX;UID=1")\r\n'], FULL), undefined, 'CATENATE left to an upstream that has it');
  t.equal(verdict(['C1 APPEND INBOX {5}\r\n', ' (\\Seen) {5}\r\n', '\r\n']), undefined, 'after the message: the upstream judges (MULTIAPPEND or not)');
  t.equal(verdict(['C1 APPEND INBOX {5}\r\n', ' extra\r\n']), undefined);
  t.equal(verdict(['C1 APPEND INBOX ~{5}\r\n', '\r\n'], { ...LEGACY, binary: true }), undefined, 'literal8 to a BINARY upstream');
});

t.test('malformed APPENDs are refused before anything goes upstream', async (t) => {
  for (const segments of [
    ['C1 APPEND IN GENURLAUTHBOX () "01-Jan-020 25:61:61 +9999" ~{16}\r\n'],
    ['C1 APPEND IN GENURLAUTHBOX () "01-Jan-2020 10:00:00 +0000" {16}\r\n'],
    ['C1 APPEND INBOX 42 {5}\r\n'],
    ['C1 APPEND INBOX (\\Seen {5}\r\n'],
    ['C1 APPEND INBOX (\\Seen) (\\Draft) {5}\r\n'],
    ['C1 APPEND INBOX "not a date" {5}\r\n'],
    ['C1 APPEND INBOX {5}x\r\n'],
    ['C1 APPEND INBOX\r\n'],
    ['C1 APPEND {5}\r\n', ' x {7}\r\n'],
    ['C1 APPEND INBOX ~{5}\r\n'], // literal8 without BINARY upstream
    ['C1 APPEND INBOX CATENATE (TEXT {5}\r\n'], // the gateway assembles CATENATE for a legacy upstream: not relayed
  ]) {
    t.type(verdict(segments), 'string', JSON.stringify(segments));
  }
  t.type(verdict(['C1 APPEND INBOXAPPEND INBOX (\\Bogus\\) CATENATE (TEXT {72+}\r\n'], FULL), 'string', 'an argument too many before CATENATE');
});
