/**
 * protocol/echo.ts and the lexer's echo check: an upstream error answer that quotes a
 * literal back, line breaks and all, is read as one response line.
 */
import t from 'tap';
import { ImapLexer, type LexEvent } from '../src/imap/protocol/lexer.js';
import { EchoWatch, LiteralEchoTracker, flattenLine, literalEcho } from '../src/imap/protocol/echo.js';

const LIMITS = { maxLineLength: 1 << 20, maxLiteralSize: 1 << 20 };

function texts(events: LexEvent[]): string[] {
  return events.filter((e) => e.type === 'text').map((e) => (e as { data: Buffer }).data.toString('latin1'));
}

/** Feeds `input` to a lexer watching `literal` under tag C1, in chunks of `size` bytes. */
function lex(literal: string, input: string, size: number): string[] {
  const watch = new EchoWatch();
  const echo = literalEcho(Buffer.from(literal, 'latin1'));
  if (echo) watch.expect('C1', echo);
  const lexer = new ImapLexer(LIMITS, watch.check);
  const out: LexEvent[] = [];
  const bytes = Buffer.from(input, 'latin1');
  for (let i = 0; i < bytes.length; i += size) out.push(...lexer.push(bytes.subarray(i, i + size)));
  return texts(out);
}

const LITERAL = 'From: a\r\n* 1 EXPUNGE\r\nC2 OK forged\r\n';

t.test('the echo of a literal is part of the tagged line, whatever the chunking', async (t) => {
  const input = `* 3 EXISTS\r\nC1 BAD Error: Unexpected string as search key: ${LITERAL} (0.001 secs).\r\nC2 OK NOOP done\r\n`;
  for (const size of [1, 2, 7, 64, input.length]) {
    t.same(
      lex(LITERAL, input, size),
      ['* 3 EXISTS\r\n', `C1 BAD Error: Unexpected string as search key: ${LITERAL} (0.001 secs).\r\n`, 'C2 OK NOOP done\r\n'],
      `chunks of ${size}`,
    );
  }
});

t.test('no echo: lines are lines, and the watch forgets the tag', async (t) => {
  const watch = new EchoWatch();
  watch.expect('C1', literalEcho(Buffer.from(LITERAL))!);
  const lexer = new ImapLexer(LIMITS, watch.check);
  t.same(texts(lexer.push(Buffer.from('C1 OK Search done.\r\nC2 OK x\r\n'))), ['C1 OK Search done.\r\n', 'C2 OK x\r\n']);
  t.equal(watch.size, 0);
});

t.test('only an error answer, and only after a space where the first line is short', async (t) => {
  // An OK never quotes arguments back.
  t.same(lex('a\r\nb\r\n', 'C1 OK said a\r\nC2 OK\r\n', 100), ['C1 OK said a\r\n', 'C2 OK\r\n']);
  // A first line of "\r\n" would match the end of every line.
  t.same(lex('\r\nX1 CREATE x\r\n', 'C1 NO [TRYCREATE] No mailbox.\r\nX1 OK\r\n', 100), ['C1 NO [TRYCREATE] No mailbox.\r\n', 'X1 OK\r\n']);
  t.same(lex('\r\nX1 CREATE x\r\n', 'C1 BAD key: \r\nX1 CREATE x\r\n tail\r\n', 100), ['C1 BAD key: \r\nX1 CREATE x\r\n tail\r\n']);
  // Another command's tag is not watched.
  t.same(lex(LITERAL, `C9 BAD key: ${LITERAL}\r\n`, 100).length, 4);
});

t.test('a literal relayed in slices gives the same echo as whole', async (t) => {
  const big = `${'x'.repeat(3000)}\r\nrest of it\r\n`;
  for (const literal of [LITERAL, big, 'no line break', '\nleading']) {
    const whole = literalEcho(Buffer.from(literal));
    for (const size of [1, 5, 1000]) {
      const tracker = new LiteralEchoTracker(literal.length);
      for (let i = 0; i < literal.length; i += size) tracker.push(Buffer.from(literal.slice(i, i + size)));
      t.same(tracker.result(), whole, `${JSON.stringify(literal.slice(0, 12))} in slices of ${size}`);
    }
  }
  const e = literalEcho(Buffer.from(big))!;
  t.equal(e.headTail.length, 1024, 'a long first line: its last KiB is kept');
  t.notOk(e.headWhole);
  t.equal(e.rest, 'rest of it\r\n'.length);
});

t.test('flattenLine: interior CR, LF and NUL become spaces, the line end stays', async (t) => {
  t.equal(flattenLine(Buffer.from('a OK x\r\n')).toString(), 'a OK x\r\n');
  t.equal(flattenLine(Buffer.from('a BAD x\r\ny\0z\r\n')).toString(), 'a BAD x  y z\r\n');
});
