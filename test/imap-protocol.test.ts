/** Unit tests of the IMAP lexer and parser: literals, quoting, bounds, chunking. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { ImapLexer, parseAnnouncement, type LexEvent } from '../src/imap/protocol/lexer.js';
import { parseSegments, parseResponseHead, ImapParseError, type ImapValue } from '../src/imap/protocol/parser.js';
import { isQuotable, quoted } from '../src/imap/protocol/writer.js';

const limits = { maxLineLength: 1000, maxLiteralSize: 100_000_000 };

/** Feeds input in the given chunk sizes and returns a compact description of the events. */
function lex(input: Buffer | string, chunkSizes?: (i: number) => number, lim = limits): string[] {
  const lexer = new ImapLexer(lim);
  const data = typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
  const events: LexEvent[] = [];
  let pos = 0;
  let i = 0;
  while (pos < data.length) {
    const n = chunkSizes ? Math.max(1, chunkSizes(i++)) : data.length;
    events.push(...lexer.push(data.subarray(pos, pos + n)));
    pos += n;
  }
  return describe(events);
}

function describe(events: LexEvent[]): string[] {
  const out: string[] = [];
  let literal: Buffer[] = [];
  for (const ev of events) {
    switch (ev.type) {
      case 'text':
        out.push(`text:${ev.data.toString('latin1')}`);
        break;
      case 'literal-start':
        out.push(`literal:${ev.size}:${ev.sync ? 'sync' : 'nonsync'}${ev.binary ? ':binary' : ''}`);
        literal = [];
        break;
      case 'literal-data':
        literal.push(ev.data);
        break;
      case 'literal-end':
        out.push(`data:${Buffer.concat(literal).toString('latin1')}`);
        break;
      case 'end':
        out.push('end');
        break;
      case 'error':
        out.push(`error:${ev.code}:${ev.size ?? ''}:${ev.sync ?? ''}`);
        break;
    }
  }
  return out;
}

/** Lexes and parses one complete command. */
function parse(input: string): { tag: string; items: ImapValue[] } {
  const lexer = new ImapLexer(limits);
  const segments: Buffer[] = [];
  const literals: Buffer[] = [];
  let chunks: Buffer[] = [];
  for (const ev of lexer.push(Buffer.from(input, 'latin1'))) {
    if (ev.type === 'text') segments.push(ev.data);
    if (ev.type === 'literal-data') chunks.push(ev.data);
    if (ev.type === 'literal-end') {
      literals.push(Buffer.concat(chunks));
      chunks = [];
    }
  }
  return parseSegments(segments, literals);
}

const str = (s: string): ImapValue => ({ type: 'string', value: Buffer.from(s), literal: false });
const lit = (s: string): ImapValue => ({ type: 'string', value: Buffer.from(s), literal: true });
const atom = (s: string): ImapValue => ({ type: 'atom', value: s });

t.test('simple command', async (t) => {
  t.same(lex('a1 NOOP\r\n'), ['text:a1 NOOP\r\n', 'end']);
  t.same(parse('a1 NOOP\r\n'), { tag: 'a1', items: [atom('NOOP')] });
});

t.test('atoms, quoted strings with escapes, NIL, nested lists', async (t) => {
  const p = parse('t FETCH 1:* (FLAGS (a "b \\"q\\" \\\\" NIL) BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>)\r\n');
  t.same(p.items, [
    atom('FETCH'),
    atom('1:*'),
    {
      type: 'list',
      items: [
        atom('FLAGS'),
        { type: 'list', items: [atom('a'), str('b "q" \\'), { type: 'nil' }] },
        atom('BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>'),
      ],
    },
  ]);
});

t.test('synchronizing, non-synchronizing and binary literals', async (t) => {
  const input = 'a LOGIN {5}\r\nalice {8+}\r\npass\r\nwd ~{3}\r\n\0\x01\x02\r\n';
  const expected = [
    'text:a LOGIN {5}\r\n', 'literal:5:sync', 'data:alice',
    'text: {8+}\r\n', 'literal:8:nonsync', 'data:pass\r\nwd',
    'text: ~{3}\r\n', 'literal:3:sync:binary', 'data:\0\x01\x02',
    'text:\r\n', 'end',
  ];
  t.same(lex(input), expected, 'whole');
  t.same(lex(input, () => 1), expected, 'byte by byte');
  for (let round = 0; round < 20; round++) {
    const sizes = Array.from({ length: 100 }, () => 1 + Math.floor(Math.random() * 7));
    t.same(lex(input, (i) => sizes[i % sizes.length]!), expected, `random chunks ${round}`);
  }
  const p = parse('a LOGIN {5}\r\nalice {4+}\r\npass\r\n');
  t.same(p.items, [atom('LOGIN'), lit('alice'), lit('pass')]);
});

t.test('a literal announcement inside a quoted string is not a literal', async (t) => {
  t.same(lex('a SELECT "box {5}"\r\n'), ['text:a SELECT "box {5}"\r\n', 'end']);
  t.same(lex('a SELECT "b\\"ox {5}\r\n'), ['text:a SELECT "b\\"ox {5}\r\n', 'end'], 'unbalanced quote: no literal');
  t.same(lex('a SELECT "x" {2}\r\nab\r\n'), ['text:a SELECT "x" {2}\r\n', 'literal:2:sync', 'data:ab', 'text:\r\n', 'end']);
});

t.test('CRLF inside literal data does not end the line; zero-length literal', async (t) => {
  t.same(lex('a APPEND b {4}\r\n\r\n\r\n\r\n'), ['text:a APPEND b {4}\r\n', 'literal:4:sync', 'data:\r\n\r\n', 'text:\r\n', 'end']);
  t.same(lex('a LOGIN {0}\r\n x\r\n'), ['text:a LOGIN {0}\r\n', 'literal:0:sync', 'data:', 'text: x\r\n', 'end']);
});

t.test('over-long line: one error, then recovery at the next command', async (t) => {
  const long = `a NOOP ${'x'.repeat(2000)}\r\nb NOOP\r\n`;
  const expected = ['error:line-too-long::', 'text:b NOOP\r\n', 'end'];
  t.same(lex(long), expected);
  t.same(lex(long, () => 3), expected, 'in small chunks');
  t.same(lex(long, () => 1500), expected, 'in chunks larger than the limit');
});

t.test('too-large literal: sync continues with the next line, non-sync stops', async (t) => {
  t.same(lex('a APPEND x {99999999999}\r\nb NOOP\r\n'), ['error:literal-too-large:99999999999:true', 'text:b NOOP\r\n', 'end']);
  t.same(lex('a APPEND x {999999999999999999999}\r\nb NOOP\r\n')[0], 'error:literal-too-large:Infinity:true', '21 digits do not overflow');
  t.same(lex('a APPEND x {99999999999+}\r\nxyz\r\nb NOOP\r\n'), ['error:literal-too-large:99999999999:false']);
});

t.test('abortLiteral: a refused synchronizing literal is not awaited', async (t) => {
  const lexer = new ImapLexer(limits);
  t.same(describe(lexer.push(Buffer.from('a APPEND x {10}\r\n'))), ['text:a APPEND x {10}\r\n', 'literal:10:sync']);
  lexer.abortLiteral();
  t.same(describe(lexer.push(Buffer.from('b NOOP\r\n'))), ['text:b NOOP\r\n', 'end']);
});

t.test('bad announcements are text', async (t) => {
  t.same(lex('a LOGIN {abc}\r\n'), ['text:a LOGIN {abc}\r\n', 'end']);
  t.same(lex('a LOGIN {}\r\n'), ['text:a LOGIN {}\r\n', 'end']);
  t.equal(parseAnnouncement(Buffer.from('x {12+}\r\n'))?.size, 12);
  t.same(parseAnnouncement(Buffer.from('x ~{12}\r\n')), { size: 12, sync: true, binary: true });
  t.equal(parseAnnouncement(Buffer.from('x {12} y\r\n')), undefined, 'only at the end of the line');
});

t.test('bare LF ends a line', async (t) => {
  t.same(lex('a NOOP\nb NOOP\n'), ['text:a NOOP\n', 'end', 'text:b NOOP\n', 'end']);
});

t.test('responses: FETCH with a literal, response heads', async (t) => {
  const resp = '* 1 FETCH (UID 7 BODY[] {11}\r\nhello world)\r\na1 OK [READ-WRITE] done\r\n';
  t.same(lex(resp), ['text:* 1 FETCH (UID 7 BODY[] {11}\r\n', 'literal:11:sync', 'data:hello world', 'text:)\r\n', 'end', 'text:a1 OK [READ-WRITE] done\r\n', 'end']);
  t.same(parseResponseHead(Buffer.from('* 1 FETCH (UID 7)\r\n')), { tag: '*', kind: 'FETCH', number: 1 });
  t.same(parseResponseHead(Buffer.from('+ idling\r\n')), { tag: '+', kind: '+' });
  t.same(parseResponseHead(Buffer.from('+\r\n')), { tag: '+', kind: '+' });
  const cap = Buffer.from('* OK [CAPABILITY IMAP4rev1 IDLE] Dovecot ready.\r\n');
  const head = parseResponseHead(cap);
  t.equal(head.kind, 'OK');
  t.equal(head.code?.name, 'CAPABILITY');
  t.equal(head.code?.raw, 'CAPABILITY IMAP4rev1 IDLE');
  t.equal(cap.toString('latin1', head.code!.start, head.code!.end), '[CAPABILITY IMAP4rev1 IDLE]');
  t.same(parseResponseHead(Buffer.from('C12 NO [TRYCREATE] no such mailbox\r\n')).code?.name, 'TRYCREATE');
  t.equal(parseResponseHead(Buffer.from('* CAPABILITY IMAP4rev1\r\n')).kind, 'CAPABILITY');
});

t.test('parse errors', async (t) => {
  for (const bad of ['a FETCH 1 (FLAGS\r\n', 'a FETCH 1 FLAGS)\r\n', 'a SELECT "INBOX\r\n', 'a X "\\q"\r\n', 'a X BODY[\r\n', '\r\n']) {
    t.throws(() => parse(bad), ImapParseError, JSON.stringify(bad));
  }
});

t.test('50 MB literal in 64 KiB chunks: slices, not copies, and fast', async (t) => {
  const lexer = new ImapLexer({ maxLineLength: 65536, maxLiteralSize: 100 * 1024 * 1024 });
  const size = 50 * 1024 * 1024;
  const chunk = randomBytes(64 * 1024);
  const started = process.hrtime.bigint();
  let got = 0;
  let copies = 0;
  const head = lexer.push(Buffer.from(`a APPEND INBOX {${size}+}\r\n`));
  t.same(describe(head), [`text:a APPEND INBOX {${size}+}\r\n`, `literal:${size}:nonsync`]);
  for (let sent = 0; sent < size; sent += chunk.length) {
    for (const ev of lexer.push(chunk)) {
      if (ev.type === 'literal-data') {
        got += ev.data.length;
        if (ev.data.buffer !== chunk.buffer) copies++;
      }
    }
  }
  const tail = describe(lexer.push(Buffer.from('\r\n')));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.equal(got, size);
  t.equal(copies, 0, 'literal data is handed out as slices of the input');
  t.same(tail, ['text:\r\n', 'end']);
  t.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
});

t.test('writer: quoting', async (t) => {
  t.equal(quoted('a"b\\c'), '"a\\"b\\\\c"');
  t.ok(isQuotable('pass word'));
  t.notOk(isQuotable('line\r\nbreak'));
  t.notOk(isQuotable('caf\u00e9'));
});
