/** Unit tests of the IMAP wire layer: lexer, parser, collector and writer. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { ImapLexer, parseAnnouncement, type LexEvent, type LexerLimits } from '../src/imap/protocol/lexer.js';
import {
  CommandCollector,
  ImapParseError,
  isValidTag,
  parseResponseHead,
  parseSegments,
  type CollectorOutput,
  type ImapValue,
  type ParsedLine,
} from '../src/imap/protocol/parser.js';
import {
  astring,
  badUrlCode,
  continuation,
  encodeString,
  isQuotable,
  quoted,
  quoteString,
  tagged,
  untagged,
  untaggedStatus,
} from '../src/imap/protocol/writer.js';
import { prng } from './helpers/prng.js';

const limits: LexerLimits = { maxLineLength: 1000, maxLiteralSize: 100_000_000 };


function toBuffer(input: Buffer | string): Buffer {
  return typeof input === 'string' ? Buffer.from(input, 'latin1') : input;
}

/** Pushes input in chunks of the given sizes (all at once by default) and returns the raw events. */
function lexEvents(input: Buffer | string, chunkSizes?: (i: number) => number, lim = limits, lexer = new ImapLexer(lim)): LexEvent[] {
  const data = toBuffer(input);
  const events: LexEvent[] = [];
  let pos = 0;
  let i = 0;
  while (pos < data.length) {
    const n = chunkSizes ? Math.max(1, chunkSizes(i++)) : data.length;
    // Copy each chunk, as a socket would hand out separate buffers.
    events.push(...lexer.push(Buffer.from(data.subarray(pos, pos + n))));
    pos += n;
  }
  return events;
}

/** A compact, chunking-independent description of events (literal data joined). */
function describe(events: LexEvent[]): string[] {
  const out: string[] = [];
  let literal: Buffer[] | undefined;
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
        if (literal === undefined) throw new Error('literal-data outside a literal');
        literal.push(ev.data);
        break;
      case 'literal-end':
        if (literal === undefined) throw new Error('literal-end outside a literal');
        out.push(`data:${Buffer.concat(literal).toString('latin1')}`);
        literal = undefined;
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

function lex(input: Buffer | string, chunkSizes?: (i: number) => number, lim = limits): string[] {
  return describe(lexEvents(input, chunkSizes, lim));
}

/** Lexes in several chunkings (whole, byte by byte, random) and checks they all agree; returns the result. */
function lexAll(t: Pick<typeof import('tap').t, 'same'>, input: Buffer | string, lim = limits, rounds = 20): string[] {
  const whole = lex(input, undefined, lim);
  t.same(lex(input, () => 1, lim), whole, 'byte by byte = whole');
  const rnd = prng(toBuffer(input).length);
  for (let r = 0; r < rounds; r++) {
    const max = 1 + Math.floor(rnd() * 16);
    t.same(lex(input, () => 1 + Math.floor(rnd() * max), lim), whole, `random chunks up to ${max}`);
  }
  return whole;
}

/** Lexes and parses every complete command in input. */
function parseAll(input: Buffer | string): ParsedLine[] {
  const collector = new CommandCollector({ maxLiteralBytes: 10_000_000 });
  const lines: ParsedLine[] = [];
  for (const out of collector.consume(new ImapLexer(limits).push(toBuffer(input)))) {
    if (out.type === 'command') lines.push(parseSegments(out.segments, out.literals));
    else if (out.type === 'error') throw new Error(`unexpected ${out.code}`);
  }
  return lines;
}

function parse(input: Buffer | string): ParsedLine {
  const lines = parseAll(input);
  if (lines.length !== 1) throw new Error(`expected one command, got ${lines.length}`);
  return lines[0]!;
}

const str = (s: string): ImapValue => ({ type: 'string', value: Buffer.from(s, 'latin1'), literal: false });
const lit = (s: string): ImapValue => ({ type: 'string', value: Buffer.from(s, 'latin1'), literal: true });
const lit8 = (s: string): ImapValue => ({ type: 'string', value: Buffer.from(s, 'latin1'), literal: true, binary: true });
const atom = (s: string): ImapValue => ({ type: 'atom', value: s });
const list = (...items: ImapValue[]): ImapValue => ({ type: 'list', items });
const NIL: ImapValue = { type: 'nil' };

// ---- lexer ------------------------------------------------------------------------------

t.test('simple commands, pipelined', async (t) => {
  t.same(lexAll(t, 'a1 NOOP\r\n'), ['text:a1 NOOP\r\n', 'end']);
  t.same(lexAll(t, 'a1 NOOP\r\na2 CAPABILITY\r\n'), ['text:a1 NOOP\r\n', 'end', 'text:a2 CAPABILITY\r\n', 'end']);
  t.same(parse('a1 NOOP\r\n'), { tag: 'a1', items: [atom('NOOP')] });
});

t.test('a line within one chunk is a slice of it (zero-copy)', async (t) => {
  const chunk = Buffer.from('a1 NOOP\r\na2 {3}\r\nabc\r\n');
  const events = new ImapLexer(limits).push(chunk);
  const texts = events.filter((e) => e.type === 'text');
  t.equal(texts.length, 3);
  for (const ev of events) {
    if (ev.type === 'text' || ev.type === 'literal-data') t.equal(ev.data.buffer, chunk.buffer, `${ev.type} shares memory`);
  }
});

t.test('{n}, {n+} and ~{n} literals across arbitrary chunk boundaries', async (t) => {
  const input = 'a LOGIN {5}\r\nalice {8+}\r\npass\r\nwd ~{3}\r\n\0\x01\x02 ~{2+}\r\n\r\n\r\n';
  t.same(lexAll(t, input), [
    'text:a LOGIN {5}\r\n',
    'literal:5:sync',
    'data:alice',
    'text: {8+}\r\n',
    'literal:8:nonsync',
    'data:pass\r\nwd',
    'text: ~{3}\r\n',
    'literal:3:sync:binary',
    'data:\0\x01\x02',
    'text: ~{2+}\r\n',
    'literal:2:nonsync:binary',
    'data:\r\n',
    'text:\r\n',
    'end',
  ]);
});

t.test('multiple literals in one command are parsed in order', async (t) => {
  const p = parse('a LOGIN {5}\r\nalice {4+}\r\npass\r\n');
  t.same(p, { tag: 'a', items: [atom('LOGIN'), lit('alice'), lit('pass')] });
  const q = parse('A003 APPEND saved-messages (\\Seen) "7-Feb-1994 21:52:25 -0800" {12}\r\nHello\r\nWorld ~{2}\r\n\0\x01 (x {1}\r\ny)\r\n');
  t.same(q.items, [
    atom('APPEND'),
    atom('saved-messages'),
    list(atom('\\Seen')),
    str('7-Feb-1994 21:52:25 -0800'),
    lit('Hello\r\nWorld'),
    lit8('\0\x01'),
    list(atom('x'), lit('y')),
  ]);
});

t.test('CRLF inside literal data does not end the line; zero-length literals', async (t) => {
  t.same(lexAll(t, 'a APPEND b {4}\r\n\r\n\r\n\r\n'), ['text:a APPEND b {4}\r\n', 'literal:4:sync', 'data:\r\n\r\n', 'text:\r\n', 'end']);
  t.same(lexAll(t, 'a LOGIN {0}\r\n {0+}\r\n\r\n'), [
    'text:a LOGIN {0}\r\n',
    'literal:0:sync',
    'data:',
    'text: {0+}\r\n',
    'literal:0:nonsync',
    'data:',
    'text:\r\n',
    'end',
  ]);
  t.same(parse('a LOGIN {0}\r\n {0}\r\n\r\n').items, [atom('LOGIN'), lit(''), lit('')]);
  t.same(lexAll(t, 'a X {5}\r\n{3}\r\n\r\n'), ['text:a X {5}\r\n', 'literal:5:sync', 'data:{3}\r\n', 'text:\r\n', 'end'], 'announcement inside data is data');
});

t.test('a literal announcement inside a quoted string is not a literal', async (t) => {
  t.same(lexAll(t, 'a SELECT "box {5}"\r\n'), ['text:a SELECT "box {5}"\r\n', 'end']);
  t.same(lexAll(t, 'a SELECT "box {5}\r\nb NOOP\r\n'), ['text:a SELECT "box {5}\r\n', 'end', 'text:b NOOP\r\n', 'end'], 'unterminated quote');
  t.same(lexAll(t, 'a SELECT "b\\"ox {5}\r\n'), ['text:a SELECT "b\\"ox {5}\r\n', 'end'], 'escaped quote keeps the string open');
  t.same(lexAll(t, 'a SELECT "b\\\\" {2}\r\nab\r\n'), ['text:a SELECT "b\\\\" {2}\r\n', 'literal:2:sync', 'data:ab', 'text:\r\n', 'end'], 'escaped backslash, then the quote closes');
  t.same(lexAll(t, 'a SELECT "x" {2}\r\nab\r\n'), ['text:a SELECT "x" {2}\r\n', 'literal:2:sync', 'data:ab', 'text:\r\n', 'end']);
  t.same(lexAll(t, 'a SELECT "{1}" "a" ~{1}\r\nz\r\n'), ['text:a SELECT "{1}" "a" ~{1}\r\n', 'literal:1:sync:binary', 'data:z', 'text:\r\n', 'end']);
  // Quoting starts afresh in the segment after a literal.
  t.same(lexAll(t, 'a X {1}\r\n" "y" {1}\r\nz\r\n'), ['text:a X {1}\r\n', 'literal:1:sync', 'data:"', 'text: "y" {1}\r\n', 'literal:1:sync', 'data:z', 'text:\r\n', 'end']);
  t.same(parse('a SELECT "box {5}"\r\n').items, [atom('SELECT'), str('box {5}')]);
});

t.test('bad announcements are text', async (t) => {
  for (const line of ['a LOGIN {abc}', 'a LOGIN {}', 'a LOGIN {+}', 'a LOGIN {5} ', 'a LOGIN {5', 'a LOGIN 5}', 'a LOGIN {-5}', 'a LOGIN {5++}', '}']) {
    t.same(lexAll(t, `${line}\r\n`, limits, 2), [`text:${line}\r\n`, 'end'], JSON.stringify(line));
  }
  t.same(parseAnnouncement(Buffer.from('x {12+}\r\n')), { size: 12, sync: false, binary: false });
  t.same(parseAnnouncement(Buffer.from('x ~{12}\r\n')), { size: 12, sync: true, binary: true });
  t.same(parseAnnouncement(Buffer.from('x {0007}\r\n')), { size: 7, sync: true, binary: false }, 'leading zeros');
  t.same(parseAnnouncement(Buffer.from('{3}')), { size: 3, sync: true, binary: false }, 'without CRLF');
  t.equal(parseAnnouncement(Buffer.from('x {12} y\r\n')), undefined, 'only at the end of the line');
  t.equal(parseAnnouncement(Buffer.from('x "{12}\r\n')), undefined, 'not inside quotes');
});

t.test('bare LF ends a line (lenient)', async (t) => {
  t.same(lexAll(t, 'a NOOP\nb NOOP\n'), ['text:a NOOP\n', 'end', 'text:b NOOP\n', 'end']);
  t.same(lexAll(t, 'a X {2}\nab\n'), ['text:a X {2}\n', 'literal:2:sync', 'data:ab', 'text:\n', 'end']);
  t.same(lexAll(t, 'a X\rY\r\n'), ['text:a X\rY\r\n', 'end'], 'a lone CR is an ordinary byte');
});

t.test('over-long line: one error, then recovery at the next command', async (t) => {
  const long = `a17 NOOP ${'x'.repeat(2000)}\r\nb NOOP\r\n`;
  const expected = ['error:line-too-long::', 'text:b NOOP\r\n', 'end'];
  t.same(lexAll(t, long, limits, 5), expected);
  t.same(lex(long, () => 1500), expected, 'in chunks larger than the limit');
  const err = new ImapLexer(limits).push(Buffer.from(long))[0]!;
  t.ok(err.type === 'error' && err.text.length <= 200 && err.text.toString().startsWith('a17 NOOP xxx'), 'error text holds the start, for the tag');
  // A very long line in one chunk and many: the error comes before the line ends.
  const lexer = new ImapLexer(limits);
  t.same(describe(lexer.push(Buffer.from(`a ${'y'.repeat(5000)}`))), ['error:line-too-long::']);
  t.same(describe(lexer.push(Buffer.from('y'.repeat(5000)))), []);
  t.same(describe(lexer.push(Buffer.from('y\r\nc NOOP\r\n'))), ['text:c NOOP\r\n', 'end']);
});

t.test('line length bound is exact, CRLF not counted, CR and LF split across chunks', async (t) => {
  const lim = { maxLineLength: 10, maxLiteralSize: 100 };
  t.same(lexAll(t, '0123456789\r\n', lim), ['text:0123456789\r\n', 'end'], '10 bytes pass');
  t.same(lexAll(t, '0123456789\n', lim), ['text:0123456789\n', 'end'], '10 bytes and a bare LF pass');
  t.same(lexAll(t, '0123456789A\r\nb NOOP\r\n', lim), ['error:line-too-long::', 'text:b NOOP\r\n', 'end'], '11 bytes fail');
  t.same(lexAll(t, '0123456789\r\r\nb X\r\n', lim), ['error:line-too-long::', 'text:b X\r\n', 'end'], 'a CR that does not precede LF counts');
  t.same(lexAll(t, 'a {2}\r\nxy 3456789\r\n', lim), ['text:a {2}\r\n', 'literal:2:sync', 'data:xy', 'text: 3456789\r\n', 'end'], 'the bound is per segment');
});

t.test('over-long continuation segment: the rest of the command is dropped', async (t) => {
  const input = `a APPEND x {3}\r\nabc ${'z'.repeat(2000)}\r\nb NOOP\r\n`;
  t.same(lexAll(t, input, limits, 5), ['text:a APPEND x {3}\r\n', 'literal:3:sync', 'data:abc', 'error:line-too-long::', 'text:b NOOP\r\n', 'end']);
});

t.test('over-long line that announces a literal', async (t) => {
  // Non-synchronizing: its data is on the way and is dropped with the rest of the command,
  // never read as commands (even data that looks like them, or like announcements).
  const body = 'c DELETE INBOX\r\nd {5+}\r\n';
  const nonsync = `a APPEND x (${'\\Seen '.repeat(300)}) {${body.length}+}\r\n${body} {2+}\r\nxy\r\nb NOOP\r\n`;
  t.same(lexAll(t, nonsync, limits, 5), ['error:line-too-long::', 'text:b NOOP\r\n', 'end']);
  // Quoting is tracked in the dropped line: an announcement inside quotes is not one.
  t.same(lexAll(t, `a X "${'q'.repeat(2000)} {5+}\r\nb NOOP\r\n`, limits, 5), ['error:line-too-long::', 'text:b NOOP\r\n', 'end']);
  t.same(lexAll(t, `a X "${'q'.repeat(2000)}\\" {5+}\r\nb NOOP\r\n`, limits, 5), ['error:line-too-long::', 'text:b NOOP\r\n', 'end']);
  t.same(lexAll(t, `a X "${'q'.repeat(2000)}" {0005+}\r\nc NOOP\r\nb NOOP\r\n`, limits, 5), ['error:line-too-long::', 'text:b NOOP\r\n', 'end'], 'quote closed: literal dropped');
  // Synchronizing: the client waits for "+", which does not come; the next line is a new command.
  t.same(lexAll(t, `a X ${'q'.repeat(2000)} {5}\r\nb NOOP\r\n`, limits, 5), ['error:line-too-long::', 'text:b NOOP\r\n', 'end']);
  // Non-synchronizing and too large to skip: a second error so the caller closes; then silence.
  t.same(lex(`a X ${'q'.repeat(2000)} {99999999999999999999+}\r\nxyz\r\nb NOOP\r\n`), ['error:line-too-long::', 'error:literal-too-large:Infinity:false']);
});

t.test('too-large literal: sync continues with the next line, non-sync stops', async (t) => {
  t.same(lexAll(t, 'a APPEND x {99999999999}\r\nb NOOP\r\n'), ['error:literal-too-large:99999999999:true', 'text:b NOOP\r\n', 'end']);
  t.same(lexAll(t, 'a APPEND x {99999999999999999999}\r\nb NOOP\r\n'), ['error:literal-too-large:Infinity:true', 'text:b NOOP\r\n', 'end'], '20 digits do not overflow');
  t.same(lexAll(t, `a APPEND x {${'9'.repeat(400)}}\r\nb NOOP\r\n`), ['error:literal-too-large:Infinity:true', 'text:b NOOP\r\n', 'end'], '400 digits');
  t.same(lexAll(t, 'a APPEND x {00000000000000000000000012}\r\n123456789012\r\n'), ['text:a APPEND x {00000000000000000000000012}\r\n', 'literal:12:sync', 'data:123456789012', 'text:\r\n', 'end'], 'leading zeros are not digits that count');
  const lim = { maxLineLength: 1000, maxLiteralSize: 10 };
  t.same(lexAll(t, 'a X {10}\r\n0123456789\r\n', lim), ['text:a X {10}\r\n', 'literal:10:sync', 'data:0123456789', 'text:\r\n', 'end'], 'exactly the limit');
  t.same(lexAll(t, 'a X {3}\r\nabc {11}\r\nb NOOP\r\n', lim), ['text:a X {3}\r\n', 'literal:3:sync', 'data:abc', 'error:literal-too-large:11:true', 'text:b NOOP\r\n', 'end'], 'in a continuation');

  const lexer = new ImapLexer(limits);
  const events = lexer.push(Buffer.from('a APPEND x {99999999999+}\r\nxyz\r\nb NOOP\r\n'));
  t.same(describe(events), ['error:literal-too-large:99999999999:false']);
  const err = events[0]!;
  t.ok(err.type === 'error' && err.text.toString() === 'a APPEND x {99999999999+}\r\n', 'error text is the segment');
  t.ok(lexer.stopped);
  t.same(lexer.push(Buffer.from('c NOOP\r\n')), [], 'stopped until reset');
  lexer.reset();
  t.notOk(lexer.stopped);
  t.same(describe(lexer.push(Buffer.from('c NOOP\r\n'))), ['text:c NOOP\r\n', 'end']);
});

t.test('abortLiteral: a refused synchronizing literal is not awaited', async (t) => {
  const lexer = new ImapLexer(limits);
  t.same(describe(lexer.push(Buffer.from('a APPEND x {10}\r\n'))), ['text:a APPEND x {10}\r\n', 'literal:10:sync']);
  lexer.abortLiteral();
  t.same(describe(lexer.push(Buffer.from('b NOOP\r\n'))), ['text:b NOOP\r\n', 'end']);
});

t.test('responses: FETCH literals stream through', async (t) => {
  const resp =
    '* 1 FETCH (UID 7 BODY[] {11}\r\nhello world)\r\n' +
    '* 2 FETCH (UID 8 BODY[HEADER.FIELDS (SUBJECT)] {12}\r\nSubject: x\r\n BODY[TEXT] {0}\r\n)\r\n' +
    'a1 OK [READ-WRITE] done\r\n';
  t.same(lexAll(t, resp), [
    'text:* 1 FETCH (UID 7 BODY[] {11}\r\n',
    'literal:11:sync',
    'data:hello world',
    'text:)\r\n',
    'end',
    'text:* 2 FETCH (UID 8 BODY[HEADER.FIELDS (SUBJECT)] {12}\r\n',
    'literal:12:sync',
    'data:Subject: x\r\n',
    'text: BODY[TEXT] {0}\r\n',
    'literal:0:sync',
    'data:',
    'text:)\r\n',
    'end',
    'text:a1 OK [READ-WRITE] done\r\n',
    'end',
  ]);
  const [one, two] = parseAll(resp);
  t.same(one, { tag: '*', items: [atom('1'), atom('FETCH'), list(atom('UID'), atom('7'), atom('BODY[]'), lit('hello world'))] });
  t.same(two!.items[2], list(atom('UID'), atom('8'), atom('BODY[HEADER.FIELDS (SUBJECT)]'), lit('Subject: x\r\n'), atom('BODY[TEXT]'), lit('')));
});

t.test('chunking never changes the result: a mixed random stream', async (t) => {
  const rnd = prng(42);
  const pieces: string[] = [];
  for (let k = 0; k < 200; k++) {
    const kind = Math.floor(rnd() * 7);
    const n = Math.floor(rnd() * 40);
    const data = Array.from({ length: n }, () => String.fromCharCode(Math.floor(rnd() * 256))).join('');
    if (kind === 0) pieces.push(`t${k} NOOP\r\n`);
    else if (kind === 1) pieces.push(`t${k} APPEND box {${n}}\r\n${data} {${n}+}\r\n${data}\r\n`);
    else if (kind === 2) pieces.push(`t${k} LOGIN "a\\"{3}\\\\" ~{${n}}\r\n${data}\r\n`);
    else if (kind === 3) pieces.push(`t${k} X ${'w'.repeat(900 + n * 5)} {${n}+}\r\n${data}\r\n`);
    else if (kind === 4) pieces.push(`* ${k} FETCH (BODY[] {${n}}\r\n${data})\n`);
    else if (kind === 5) pieces.push(`t${k} X {99999999999}\r\n`);
    else pieces.push(`t${k} SEARCH "unterminated {${n}}\r\n`);
  }
  const input = pieces.join('');
  const whole = lex(input);
  t.equal(whole.filter((e) => e === 'end').length + whole.filter((e) => e.startsWith('error:')).length, 200, 'every command ends once');
  t.same(lex(input, () => 1), whole, 'byte by byte');
  for (let r = 0; r < 30; r++) {
    const max = [2, 7, 64, 1000, 5000][r % 5]!;
    t.same(lex(input, () => 1 + Math.floor(rnd() * max)), whole, `random chunks up to ${max}`);
  }
});

t.test('a long line in many small chunks is scanned in linear time', async (t) => {
  const lim = { maxLineLength: 4 * 1024 * 1024, maxLiteralSize: 100 };
  const lexer = new ImapLexer(lim);
  const line = Buffer.from(`a X ${'"q" '.repeat(500_000)}{1}\r\n`);
  const started = process.hrtime.bigint();
  const events: LexEvent[] = [];
  for (let pos = 0; pos < line.length; pos += 16) events.push(...lexer.push(line.subarray(pos, pos + 16)));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  t.same(events.map((e) => e.type), ['text', 'literal-start']);
  t.equal((events[0] as { data: Buffer }).data.length, line.length);
  t.ok(ms < 3000, `2 MB line in 16-byte chunks took ${ms.toFixed(0)} ms`);
});

t.test('50 MB literal in 64 KiB chunks: slices, not copies, bounded memory, fast', async (t) => {
  const lexer = new ImapLexer({ maxLineLength: 65536, maxLiteralSize: 100 * 1024 * 1024 });
  const size = 50 * 1024 * 1024;
  const chunk = randomBytes(64 * 1024);
  global.gc?.();
  const before = process.memoryUsage();
  const started = process.hrtime.bigint();
  let got = 0;
  let copies = 0;
  let events = 0;
  const head = lexer.push(Buffer.from(`a APPEND INBOX {${size}+}\r\n`));
  t.same(describe(head), [`text:a APPEND INBOX {${size}+}\r\n`, `literal:${size}:nonsync`]);
  for (let sent = 0; sent < size; sent += chunk.length) {
    for (const ev of lexer.push(chunk)) {
      events++;
      if (ev.type === 'literal-data') {
        got += ev.data.length;
        if (ev.data.buffer !== chunk.buffer) copies++;
      }
    }
  }
  const tail = describe(lexer.push(Buffer.from('\r\n')));
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const after = process.memoryUsage();
  t.equal(got, size);
  t.equal(copies, 0, 'literal data is handed out as slices of the input');
  t.equal(events, size / chunk.length + 1, 'one literal-data per chunk, then literal-end');
  t.same(tail, ['text:\r\n', 'end']);
  const grew = after.arrayBuffers - before.arrayBuffers;
  t.ok(grew < 8 * 1024 * 1024, `array buffers grew by ${(grew / 1024 / 1024).toFixed(1)} MB`);
  t.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);

  // The same through a response, with the literal split at odd offsets.
  const resp = new ImapLexer({ maxLineLength: 65536, maxLiteralSize: 100 * 1024 * 1024 });
  const first = Buffer.concat([Buffer.from(`* 1 FETCH (BODY[] {${size}}\r\n`), chunk.subarray(0, 1000)]);
  let bytes = 0;
  for (const ev of resp.push(first)) if (ev.type === 'literal-data') bytes += ev.data.length;
  let left = size - 1000;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    for (const ev of resp.push(chunk.subarray(0, n))) if (ev.type === 'literal-data') bytes += ev.data.length;
    left -= n;
  }
  t.same(describe(resp.push(Buffer.from(')\r\n* 2 EXISTS\r\n'))), ['text:)\r\n', 'end', 'text:* 2 EXISTS\r\n', 'end']);
  t.equal(bytes, size);
});

// ---- parser -----------------------------------------------------------------------------

t.test('atoms, quoted strings with escapes, NIL, nested lists', async (t) => {
  const p = parse('t FETCH 1:*,5 (FLAGS (a "b \\"q\\" \\\\" NIL nil) BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024> "")\r\n');
  t.same(p, {
    tag: 't',
    items: [
      atom('FETCH'),
      atom('1:*,5'),
      list(atom('FLAGS'), list(atom('a'), str('b "q" \\'), NIL, NIL), atom('BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>'), str('')),
    ],
  });
  t.same(parse('a STORE 1 +FLAGS.SILENT (\\Seen \\Deleted $Junk)\r\n').items, [atom('STORE'), atom('1'), atom('+FLAGS.SILENT'), list(atom('\\Seen'), atom('\\Deleted'), atom('$Junk'))]);
  t.same(parse('a X ((()) ())\r\n').items, [atom('X'), list(list(list()), list())]);
  t.same(parse('a X NILS "NIL"\r\n').items, [atom('X'), atom('NILS'), str('NIL')], 'only the bare atom NIL is nil');
  t.same(parse('a SELECT "caf\xc3\xa9"\r\n').items, [atom('SELECT'), { type: 'string', value: Buffer.from('café'), literal: false }], '8-bit quoted (UTF8=ACCEPT)');
  t.same(parse('a X  b  \r\n').items, [atom('X'), atom('b')], 'runs of spaces and trailing spaces are tolerated');
  t.same(parse('a1\r\n'), { tag: 'a1', items: [] });
});

t.test('a fetch attribute with brackets is one atom', async (t) => {
  const p = parse('a UID FETCH 1:10 (UID BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024> BODY[1.2.MIME] BINARY.PEEK[1]<0.5>)\r\n');
  t.same(p.items, [
    atom('UID'),
    atom('FETCH'),
    atom('1:10'),
    list(atom('UID'), atom('BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.1024>'), atom('BODY[1.2.MIME]'), atom('BINARY.PEEK[1]<0.5>')),
  ]);
  t.same(parse('a FETCH 1 BODY.PEEK[HEADER.FIELDS ("X-]" TO)]\r\n').items[2], atom('BODY.PEEK[HEADER.FIELDS ("X-]" TO)]'), 'a quoted "]" inside');
  t.same(parse('* OK [PERMANENTFLAGS (\\Seen \\*)] Limited\r\n').items, [atom('OK'), atom('[PERMANENTFLAGS (\\Seen \\*)]'), atom('Limited')]);
  t.same(parse('* 4 FETCH (BODY[HEADER.FIELDS (TO)] "x" BINARY.SIZE[1 2] 3)\r\n').items[2], list(atom('BODY[HEADER.FIELDS (TO)]'), str('x'), atom('BINARY.SIZE[1 2]'), atom('3')));
});

t.test('RFC 3501 §9: "[" is an ATOM-CHAR and "]" an ASTRING-CHAR outside fetch sections and response codes', async (t) => {
  // The mailbox name of issue 16: every ATOM-CHAR that is not a letter, "[" among them.
  t.same(parse("a1 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}\r\n").items, [atom('SELECT'), atom("!#$&'+,-.0123456789:;<=>?@^_`|[}")]);
  t.same(parse('a SELECT [\r\n').items, [atom('SELECT'), atom('[')]);
  t.same(parse('a STATUS a[b (MESSAGES)\r\n').items, [atom('STATUS'), atom('a[b'), list(atom('MESSAGES'))]);
  t.same(parse('a SELECT a[b (CONDSTORE)\r\n').items, [atom('SELECT'), atom('a[b'), list(atom('CONDSTORE'))]);
  t.same(parse('a SELECT a]b\r\n').items, [atom('SELECT'), atom('a]b')], '"]" alone (ASTRING-CHAR)');
  t.same(parse('a SELECT ]\r\n').items, [atom('SELECT'), atom(']')]);
  t.same(parse('a SELECT [Gmail]/Sent\r\n').items, [atom('SELECT'), atom('[Gmail]/Sent')]);
  // No section outside FETCH: the brackets do not swallow the space (Dovecot reads "a[b" too).
  t.same(parse('a SELECT a[b c]\r\n').items, [atom('SELECT'), atom('a[b'), atom('c]')]);
  t.same(parse('a SELECT [a b]\r\n').items, [atom('SELECT'), atom('[a'), atom('b]')]);
  t.same(parse('a SELECT body[x y]\r\n').items, [atom('SELECT'), atom('body[x'), atom('y]')], 'a section name outside FETCH is a mailbox');
  t.same(parse('a COPY 1:* x%y*z\r\n').items, [atom('COPY'), atom('1:*'), atom('x%y*z')], 'list-wildcards, leniently, as Dovecot');
  t.same(parse('a FETCH 1 (FLAGS X[Y)\r\n').items[2], list(atom('FLAGS'), atom('X[Y')), 'in FETCH, only section names open a section');
  t.same(parse('a UID FETCH 1 body.peek[1]\r\n').items[3], atom('body.peek[1]'), 'section names are case-insensitive');
  t.same(parse('* NO x[y z]\r\n').items, [atom('NO'), atom('x[y'), atom('z]')], 'a code only right after the status word');
});

t.test('responses: BODYSTRUCTURE multipart ")(", ENVELOPE with NIL, literal8', async (t) => {
  const p = parse(
    '* 3 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 1)("TEXT" "HTML" NIL NIL NIL "7BIT" 9 1) "ALTERNATIVE") BINARY[1] ~{3}\r\n\0\xff\x01)\r\n',
  );
  t.same(p.items, [
    atom('3'),
    atom('FETCH'),
    list(
      atom('BODYSTRUCTURE'),
      list(
        list(str('TEXT'), str('PLAIN'), list(str('CHARSET'), str('utf-8')), NIL, NIL, str('7BIT'), atom('5'), atom('1')),
        list(str('TEXT'), str('HTML'), NIL, NIL, NIL, str('7BIT'), atom('9'), atom('1')),
        str('ALTERNATIVE'),
      ),
      atom('BINARY[1]'),
      lit8('\0\xff\x01'),
    ),
  ]);
});

t.test('parse errors', async (t) => {
  const bad = [
    'a FETCH 1 (FLAGS\r\n',
    'a FETCH 1 FLAGS)\r\n',
    'a SELECT "INBOX\r\n',
    'a X "\\q"\r\n',
    'a FETCH 1 BODY[\r\n',
    'a UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM)\r\n',
    'a X "a"b\r\n',
    'a X b"a"\r\n',
    'a X (a)b\r\n',
    'a X foo{3}\r\n',
    'a X {3} y\r\n',
    'a X \x01\r\n',
    '\r\n',
    ' a NOOP\r\n',
    'a+b NOOP\r\n',
    'a(b NOOP\r\n',
  ];
  for (const line of bad) t.throws(() => parseSegments([Buffer.from(line, 'latin1')], []), ImapParseError, JSON.stringify(line));
  t.throws(() => parseSegments([], []), ImapParseError, 'no segments');
  t.throws(() => parseSegments([Buffer.from('a X {3}\r\n'), Buffer.from('\r\n')], [Buffer.from('ab')]), ImapParseError, 'literal length mismatch');
  t.throws(() => parseSegments([Buffer.from('a X y\r\n'), Buffer.from('\r\n')], [Buffer.from('ab')]), ImapParseError, 'segment without announcement');
  t.throws(() => parseSegments([Buffer.from('a X {2}\r\n')], []), ImapParseError, 'announcement in the last segment');
  t.throws(() => parseSegments([Buffer.from('a X {2}\r\n'), Buffer.from('b\r\n')], [Buffer.from('ab')]), ImapParseError, 'token right after a literal');
  t.ok(isValidTag('A001') && isValidTag('*') && isValidTag('+') && isValidTag('a]b'));
  t.notOk(isValidTag('a+') || isValidTag('') || isValidTag('a*') || isValidTag('a%') || isValidTag('a\\b') || isValidTag('é'));
});

t.test('parseResponseHead', async (t) => {
  t.same(parseResponseHead(Buffer.from('* 1 FETCH (UID 7)\r\n')), { tag: '*', kind: 'FETCH', number: 1 });
  t.same(parseResponseHead(Buffer.from('* 23 EXISTS\r\n')), { tag: '*', kind: 'EXISTS', number: 23 });
  t.same(parseResponseHead(Buffer.from('* 5 expunge\n')), { tag: '*', kind: 'EXPUNGE', number: 5 });
  t.same(parseResponseHead(Buffer.from('+ idling\r\n')), { tag: '+', kind: '+' });
  t.same(parseResponseHead(Buffer.from('+\r\n')), { tag: '+', kind: '+' });
  t.same(parseResponseHead(Buffer.from('+ \r\n')), { tag: '+', kind: '+' });
  t.same(parseResponseHead(Buffer.from('* CAPABILITY IMAP4rev1 IDLE\r\n')), { tag: '*', kind: 'CAPABILITY' });
  t.same(parseResponseHead(Buffer.from('* LIST (\\HasNoChildren) "/" INBOX\r\n')), { tag: '*', kind: 'LIST' });
  t.same(parseResponseHead(Buffer.from('* SEARCH\r\n')), { tag: '*', kind: 'SEARCH' });
  t.same(parseResponseHead(Buffer.from('a1 OK done\r\n')), { tag: 'a1', kind: 'OK' });
  t.same(parseResponseHead(Buffer.from('a1 OK\r\n')), { tag: 'a1', kind: 'OK' });
  t.same(parseResponseHead(Buffer.from('a1\r\n')), { tag: 'a1', kind: '' });
  t.same(parseResponseHead(Buffer.from('* 7\r\n')), { tag: '*', kind: '', number: 7 });

  const tag = parseResponseHead(Buffer.from('a1 OK [READ-WRITE] SELECT completed\r\n'));
  t.same(tag, { tag: 'a1', kind: 'OK', code: { name: 'READ-WRITE', raw: 'READ-WRITE', start: 6, end: 18 } });
  t.same(parseResponseHead(Buffer.from('C12 NO [TRYCREATE] no such mailbox\r\n')).code?.name, 'TRYCREATE');
  t.same(parseResponseHead(Buffer.from('* BYE [UNAVAILABLE] bye\r\n')).code?.name, 'UNAVAILABLE');
  t.same(parseResponseHead(Buffer.from('* NO [ALERT]\r\n')).code?.raw, 'ALERT', 'code without text');
  t.same(parseResponseHead(Buffer.from('a OK [APPENDUID 38505 3955] APPEND completed\r\n')).code, { name: 'APPENDUID', raw: 'APPENDUID 38505 3955', start: 5, end: 27 });
  t.equal(parseResponseHead(Buffer.from('a NO [BADCHARSET (UTF-8 "a]b")] no\r\n')).code?.raw, 'BADCHARSET (UTF-8 "a]b")', 'quoted "]" inside a code');
  t.equal(parseResponseHead(Buffer.from('a OK text [NOT-A-CODE]\r\n')).code, undefined, 'a code must come first');
  t.equal(parseResponseHead(Buffer.from('* 1 FETCH [X]\r\n')).code, undefined, 'no code on server data');
  t.equal(parseResponseHead(Buffer.from('a OK [UNTERMINATED\r\n')).code, undefined);

  // A [CAPABILITY ...] code rewritten in place, on a greeting and on a tagged response.
  const greeting = Buffer.from('* OK [CAPABILITY IMAP4rev1 IDLE LOGINDISABLED] Dovecot ready.\r\n');
  const head = parseResponseHead(greeting);
  t.equal(head.kind, 'OK');
  t.equal(head.code?.name, 'CAPABILITY');
  t.equal(head.code?.raw, 'CAPABILITY IMAP4rev1 IDLE LOGINDISABLED');
  t.equal(greeting.toString('latin1', head.code!.start, head.code!.end), '[CAPABILITY IMAP4rev1 IDLE LOGINDISABLED]');
  const rewritten = Buffer.concat([greeting.subarray(0, head.code!.start), Buffer.from('[CAPABILITY IMAP4rev1 LITERAL+]'), greeting.subarray(head.code!.end)]);
  t.equal(rewritten.toString(), '* OK [CAPABILITY IMAP4rev1 LITERAL+] Dovecot ready.\r\n');
  const login = parseResponseHead(Buffer.from('a2 OK [capability IMAP4rev1 SORT] Logged in\r\n'));
  t.same(login.code, { name: 'CAPABILITY', raw: 'capability IMAP4rev1 SORT', start: 6, end: 33 });
  t.same(parseResponseHead(Buffer.from('* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n')).code?.name, 'CAPABILITY');
});

// ---- collector --------------------------------------------------------------------------

/** Feeds each piece as one chunk (a client sends no literal before "+", so tests split there). */
function collect(collector: CommandCollector, lexer: ImapLexer, ...pieces: string[]): Array<string | ParsedLine> {
  const out: Array<string | ParsedLine> = [];
  for (const piece of pieces) for (const o of collector.consume(lexer.push(Buffer.from(piece, 'latin1')))) out.push(summarize(o));
  return out;
}

function summarize(o: CollectorOutput): string | ParsedLine {
  if (o.type === 'command') return parseSegments(o.segments, o.literals);
  if (o.type === 'continue') return `continue:${o.size}`;
  return `error:${o.code}:${o.size ?? ''}:${o.sync ?? ''}:${o.fatal}:${o.text.toString('latin1').split(' ')[0]}`;
}

t.test('CommandCollector: whole commands, continuation requests', async (t) => {
  const lexer = new ImapLexer(limits);
  const collector = new CommandCollector({ maxLiteralBytes: 100, lexer });
  t.same(collect(collector, lexer, 'a LOGIN {5}\r\n'), ['continue:5']);
  t.equal(collector.buffered, 'a LOGIN {5}\r\n'.length + 5);
  t.same(collect(collector, lexer, 'alice {3+}\r\nabc\r\nb NOOP\r\n'), [
    { tag: 'a', items: [atom('LOGIN'), lit('alice'), lit('abc')] },
    { tag: 'b', items: [atom('NOOP')] },
  ]);
  t.equal(collector.buffered, 0);
});

t.test('CommandCollector: literal bound, sync refused (lexer aborted), non-sync skipped', async (t) => {
  const lexer = new ImapLexer(limits);
  const collector = new CommandCollector({ maxLiteralBytes: 10, lexer });
  t.same(collect(collector, lexer, 'a APPEND x {6}\r\n', '123456 {5}\r\n', 'b NOOP\r\n'), ['continue:6', 'error:literal-too-large:5:true:false:a', { tag: 'b', items: [atom('NOOP')] }], 'the client never sends the refused literal');
  t.same(collect(collector, lexer, 'c APPEND x {11+}\r\nc2 NOOP\r\nzz\r\nd NOOP\r\n'), ['error:literal-too-large:11:false:false:c', { tag: 'd', items: [atom('NOOP')] }], 'non-sync data is skipped');
  // Without a lexer (reading responses), even a synchronizing literal is skipped.
  const respLexer = new ImapLexer(limits);
  const responses = new CommandCollector({ maxLiteralBytes: 4 });
  t.same(collect(responses, respLexer, '* 1 FETCH (BODY[] {5}\r\nhello)\r\n* 2 EXISTS\r\n'), ['error:literal-too-large:5:true:false:*', { tag: '*', items: [atom('2'), atom('EXISTS')] }]);
});

t.test('CommandCollector: lexer errors carry the first segment; fatal marks a lost stream', async (t) => {
  const lexer = new ImapLexer(limits);
  const collector = new CommandCollector({ maxLiteralBytes: 1000, lexer });
  t.same(collect(collector, lexer, `t1 X {2}\r\nab ${'x'.repeat(2000)}\r\nt2 NOOP\r\n`), ['continue:2', 'error:line-too-long:::false:t1', { tag: 't2', items: [atom('NOOP')] }]);
  t.same(collect(collector, lexer, 't3 APPEND x {99999999999}\r\nt4 NOOP\r\n'), ['error:literal-too-large:99999999999:true:false:t3', { tag: 't4', items: [atom('NOOP')] }]);
  t.same(collect(collector, lexer, 't5 APPEND x {99999999999+}\r\n'), ['error:literal-too-large:99999999999:false:true:t5']);
});

t.test('CommandCollector: text bound stops endless {0} chains', async (t) => {
  const lexer = new ImapLexer(limits);
  const collector = new CommandCollector({ maxLiteralBytes: 1000, maxTextBytes: 100, lexer });
  const out = collect(collector, lexer, `z1 X {0+}\r\n${' {0+}\r\n'.repeat(50)}\r\nz2 NOOP\r\n`);
  t.same(out, ['error:command-too-large:::false:z1', { tag: 'z2', items: [atom('NOOP')] }]);
  // Refused on text that announces a synchronizing literal: the literal is refused too.
  const out2 = collect(collector, lexer, `z3 X ${'y'.repeat(95)} {3}\r\n`, 'z4 NOOP\r\n');
  t.same(out2, ['error:command-too-large:::false:z3', { tag: 'z4', items: [atom('NOOP')] }]);
});

t.test('CommandCollector: collected literals do not keep input chunks alive', async (t) => {
  const lexer = new ImapLexer(limits);
  const collector = new CommandCollector({ maxLiteralBytes: 1000 });
  const chunk = Buffer.alloc(15); // not from the shared pool, unlike small Buffer.from()
  chunk.write('a X {3+}\r\nabc\r\n', 'latin1');
  const out = [...collector.consume(lexer.push(chunk))];
  const cmd = out[0]!;
  t.ok(cmd.type === 'command' && cmd.literals[0]!.buffer !== chunk.buffer, 'literal copied once');
});

// ---- writer -----------------------------------------------------------------------------

t.test('writer: quoting and literals', async (t) => {
  t.equal(quoted('a"b\\c'), '"a\\"b\\\\c"');
  t.ok(isQuotable('pass word'));
  t.notOk(isQuotable('line\r\nbreak'));
  t.notOk(isQuotable('caf\u00e9'));
  t.equal(quoteString('INBOX'), '"INBOX"');
  t.equal(quoteString('say "hi" \\o/'), '"say \\"hi\\" \\\\o/"');
  t.equal(quoteString(''), '""');
  t.equal(quoteString('two\r\nlines'), '{10}\r\ntwo\r\nlines');
  t.equal(quoteString('café'), '{5}\r\ncafé', 'the size counts UTF-8 bytes');
  t.equal(quoteString('x'.repeat(1001)), `{1001}\r\n${'x'.repeat(1001)}`, 'too long');
  t.equal(quoteString('nul\0'), '{4}\r\nnul\0');
  t.equal(quoteString(Buffer.from('ok')), '"ok"');
  t.equal(quoteString('a\nb', { nonSync: true }), '{3+}\r\na\nb');
  t.same(encodeString(Buffer.from([0xff, 0x00])), Buffer.from([0x7b, 0x32, 0x7d, 0x0d, 0x0a, 0xff, 0x00]), 'exact bytes');
  t.same(encodeString('a"b'), Buffer.from('"a\\"b"'));
  t.equal(astring('INBOX'), 'INBOX');
  t.equal(astring('Sent Items'), '"Sent Items"');
  t.equal(astring('NIL'), '"NIL"');
  t.equal(astring(''), '""');
  t.equal(astring('a%'), '"a%"');
  t.equal(astring('a]'), '"a]"');
  t.equal(astring('x'.repeat(1001)), `{1001}\r\n${'x'.repeat(1001)}`, 'long atoms go as literals too');
});

t.test('writer: strings round-trip through the lexer and parser', async (t) => {
  const samples = ['plain', 'with space', 'q"uo\\te', '', 'CR\rLF\nCRLF\r\n', 'ünïcødé', '{5}', '"{5}', 'x'.repeat(3000), 'NIL', '\x01\x7f'];
  for (const s of samples) {
    const line = parse(Buffer.from(`a X ${quoteString(s)} ${astring(s)}\r\n`, 'utf8'));
    const got = line.items.slice(1).map((v) => (v.type === 'string' || v.type === 'atom' ? Buffer.from(v.type === 'atom' ? v.value : v.value).toString('utf8') : v.type));
    t.same(got, [s, s], JSON.stringify(s.slice(0, 20)));
  }
  const bytes = randomBytes(300);
  const enc = encodeString(bytes);
  const p = parse(Buffer.concat([Buffer.from('a X '), enc, Buffer.from('\r\n')]));
  t.same((p.items[1] as { value: Buffer }).value, bytes);
});

t.test('writer: responses', async (t) => {
  t.equal(tagged('a1', 'OK', 'LOGIN completed').toString(), 'a1 OK LOGIN completed\r\n');
  t.equal(tagged('a1', 'NO', 'too big', 'TOOBIG').toString(), 'a1 NO [TOOBIG] too big\r\n');
  t.equal(tagged('a1', 'BAD', 'bad\r\n* OK injected').toString(), 'a1 BAD bad  * OK injected\r\n', 'CR/LF cannot end the line');
  t.equal(tagged('a1', 'OK', '').toString(), 'a1 OK done\r\n', 'text is never empty');
  t.equal(untagged('CAPABILITY IMAP4rev1').toString(), '* CAPABILITY IMAP4rev1\r\n');
  t.equal(untagged(`1 FETCH (BODY[] ${quoteString('a\r\nb')})`).toString(), '* 1 FETCH (BODY[] {4}\r\na\r\nb)\r\n', 'literals kept');
  t.equal(untaggedStatus('OK', 'ready', 'CAPABILITY IMAP4rev1').toString(), '* OK [CAPABILITY IMAP4rev1] ready\r\n');
  t.equal(untaggedStatus('BYE', 'x\ny').toString(), '* BYE x y\r\n');
  t.equal(continuation('Ready for literal data').toString(), '+ Ready for literal data\r\n');
  t.equal(continuation().toString(), '+ \r\n');
  for (const b of [tagged('a', 'OK', 'x'), untagged('x'), untaggedStatus('NO', 'x'), continuation('x')]) t.ok(Buffer.isBuffer(b));
  const head = parseResponseHead(tagged('C9', 'OK', 'done', 'CAPABILITY IMAP4rev1 X'));
  t.same(head, { tag: 'C9', kind: 'OK', code: { name: 'CAPABILITY', raw: 'CAPABILITY IMAP4rev1 X', start: 6, end: 30 } });
});

t.test('writer: BADURL names the URL within RFC 4469 §6 url-resp-text', async (t) => {
  t.equal(badUrlCode('imap://alice@localhost/INBOX/;uid=1'), 'BADURL imap://alice@localhost/INBOX/;uid=1');
  t.equal(badUrlCode('/a]b\r\nc\0d'), 'BADURL /a%5Db%0D%0Ac%00d', 'the excluded characters percent-encoded, not dropped');
  t.equal(badUrlCode(''), 'BADURL ""', 'never a bare BADURL: an empty URL as it was on the wire');
  t.equal(badUrlCode('x'.repeat(5000)).length, 'BADURL '.length + 1000, 'bounded');
  const line = tagged('c', 'NO', 'no', badUrlCode('/x]\r\n* OK [ALERT] y'));
  t.equal(line.toString(), 'c NO [BADURL /x%5D%0D%0A* OK [ALERT%5D y] no\r\n', 'one line, one code');
  t.equal(parseResponseHead(line).code?.name, 'BADURL');
});
