/** Unit tests of the SMTP wire layer: reader, command/argument parser and replies. */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { SmtpReader, type SmtpEvent, type SmtpReaderLimits } from '../src/smtp/protocol/reader.js';
import {
  SmtpSyntaxError,
  decodeBase64Strict,
  decodeXtext,
  encodeXtext,
  parseAddress,
  parseAuthArgs,
  parseBdatArgs,
  parseCommandLine,
  parseMailFrom,
  parseRcptTo,
  parseSize,
  validateBody,
  validateEnvid,
  validateNotify,
  validateOrcpt,
  validateRet,
} from '../src/smtp/protocol/parser.js';
import { ReplyParseError, ReplyReader, ehloReply, reply, type ParsedReply } from '../src/smtp/protocol/reply.js';

const limits: SmtpReaderLimits = { maxCommandLine: 512, maxTextLine: 1000 };

/** Events with adjacent data/chunk buffers merged, so different chunkings compare equal. */
function normalize(events: SmtpEvent[]): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const ev of events) {
    const prev = out[out.length - 1];
    if ((ev.type === 'data' || ev.type === 'chunk') && prev?.type === ev.type) {
      prev.text = (prev.text as string) + ev.data.toString('latin1');
    } else if (ev.type === 'data' || ev.type === 'chunk') {
      out.push({ type: ev.type, text: ev.data.toString('latin1') });
    } else {
      out.push({ ...ev });
    }
  }
  return out;
}

function feed(reader: SmtpReader, chunks: Array<string | Buffer>): SmtpEvent[] {
  const events: SmtpEvent[] = [];
  for (const c of chunks) events.push(...reader.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c));
  return events;
}

/** A reader already in DATA mode. */
function dataReader(l: SmtpReaderLimits = limits): SmtpReader {
  const r = new SmtpReader(l);
  r.expectData();
  return r;
}

t.test('reader: command mode', async (t) => {
  t.test('pipelined commands in one chunk, CRLF stripped', async (t) => {
    const r = new SmtpReader(limits);
    const ev = r.push(Buffer.from('MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n'));
    t.same(ev, [
      { type: 'command', line: 'MAIL FROM:<a@b>' },
      { type: 'command', line: 'RCPT TO:<c@d>' },
      { type: 'command', line: 'DATA' },
    ]);
  });

  t.test('LF-only lines and a line split across pushes', async (t) => {
    const r = new SmtpReader(limits);
    t.same(feed(r, ['EHLO x\nNO', 'O', 'P\r', '\nQUIT\n']), [
      { type: 'command', line: 'EHLO x' },
      { type: 'command', line: 'NOOP' },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  t.test('UTF-8 is decoded, empty line is a command', async (t) => {
    const r = new SmtpReader(limits);
    t.same(r.push(Buffer.from('RCPT TO:<jörg@example.com>\r\n\r\n')), [
      { type: 'command', line: 'RCPT TO:<jörg@example.com>' },
      { type: 'command', line: '' },
    ]);
  });

  t.test('too-long line is reported once at its end, then reading recovers', async (t) => {
    const r = new SmtpReader({ maxCommandLine: 20, maxTextLine: 1000 });
    const long = 'X'.repeat(100);
    t.same(feed(r, ['NOOP\r\n', long.slice(0, 50), long.slice(50), '\r\nQUIT\r\n']), [
      { type: 'command', line: 'NOOP' },
      { type: 'command-too-long' },
      { type: 'command', line: 'QUIT' },
    ]);
    // In one chunk too.
    t.same(r.push(Buffer.from(`${long}\r\nNOOP\r\n`)), [{ type: 'command-too-long' }, { type: 'command', line: 'NOOP' }]);
  });

  t.test('limit counts the CRLF', async (t) => {
    const r = new SmtpReader({ maxCommandLine: 10, maxTextLine: 1000 });
    // 8 + CRLF = 10: fits; 9 + CRLF = 11: too long, split or not.
    t.same(r.push(Buffer.from('12345678\r\n123456789\r\n')), [{ type: 'command', line: '12345678' }, { type: 'command-too-long' }]);
    t.same(feed(r, ['1234', '5678\r', '\n', '12345', '6789', '\r\n']), [
      { type: 'command', line: '12345678' },
      { type: 'command-too-long' },
    ]);
    // A line exactly at the limit without its LF yet can no longer fit.
    t.same(feed(r, ['1234567890', '\n', 'A\n']), [{ type: 'command-too-long' }, { type: 'command', line: 'A' }]);
  });

  t.test('reset drops a partial line', async (t) => {
    const r = new SmtpReader(limits);
    r.push(Buffer.from('STARTTLS\r\nGARBAGE'));
    r.reset();
    t.same(r.push(Buffer.from('EHLO x\r\n')), [{ type: 'command', line: 'EHLO x' }]);
  });
});

t.test('reader: DATA', async (t) => {
  t.test('commands stay commands until expectData()', async (t) => {
    const r = new SmtpReader(limits);
    t.same(r.push(Buffer.from('DATA\r\n')), [{ type: 'command', line: 'DATA' }]);
    r.expectData();
    const ev = r.push(Buffer.from('Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n'));
    t.same(normalize(ev), [
      { type: 'data', text: 'Subject: x\r\n\r\nbody\r\n' },
      { type: 'data-end', lineTooLong: false },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  const message = 'From: a\r\n\r\n..leading\r\n.x\r\nline\n.not-a-line-start\r\n\r\n.\r.\r\nend\r\n.\r\nNOOP\r\n';
  const expected = [
    { type: 'data', text: 'From: a\r\n\r\n.leading\r\nx\r\nline\n.not-a-line-start\r\n\r\n\r.\r\nend\r\n' },
    { type: 'data-end', lineTooLong: false },
    { type: 'command', line: 'NOOP' },
  ];

  t.test('dot-unstuffing, bare LF passes, ".\\r" then other is content', async (t) => {
    t.same(normalize(dataReader().push(Buffer.from(message))), expected);
  });

  t.test('terminator split at every position across two chunks', async (t) => {
    const buf = Buffer.from(message);
    for (let i = 0; i <= buf.length; i++) {
      const ev = feed(dataReader(), [buf.subarray(0, i), buf.subarray(i)]);
      t.same(normalize(ev), expected, `split at ${i}`);
    }
  });

  t.test('byte-by-byte feeding gives identical output', async (t) => {
    const buf = Buffer.from(message);
    const r = dataReader();
    const ev: SmtpEvent[] = [];
    for (let i = 0; i < buf.length; i++) ev.push(...r.push(buf.subarray(i, i + 1)));
    t.same(normalize(ev), expected);
  });

  t.test('every three-way split of a short message with the terminator at its end', async (t) => {
    const buf = Buffer.from('a\r\n..\r\n.\r\n');
    for (let i = 0; i <= buf.length; i++) {
      for (let j = i; j <= buf.length; j++) {
        const ev = feed(dataReader(), [buf.subarray(0, i), buf.subarray(i, j), buf.subarray(j)]);
        t.same(normalize(ev), [{ type: 'data', text: 'a\r\n.\r\n' }, { type: 'data-end', lineTooLong: false }], `${i},${j}`);
      }
    }
  });

  t.test('empty message: "." right after 354', async (t) => {
    t.same(dataReader().push(Buffer.from('.\r\nQUIT\r\n')), [
      { type: 'data-end', lineTooLong: false },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  t.test('bare LF does not make a terminator; "\\n.\\n" neither', async (t) => {
    const ev = dataReader().push(Buffer.from('a\n.\r\nb\r\n.\nc\r\n.\r\n'));
    t.same(normalize(ev), [{ type: 'data', text: 'a\n.\r\nb\r\n\nc\r\n' }, { type: 'data-end', lineTooLong: false }]);
  });

  t.test('lines over maxTextLine are flagged, content still flows', async (t) => {
    const l = { maxCommandLine: 512, maxTextLine: 10 };
    t.same(normalize(dataReader(l).push(Buffer.from('12345678\r\n.\r\n'))).at(-1), { type: 'data-end', lineTooLong: false });
    const long = '123456789\r\n';
    const ev = feed(dataReader(l), ['ok\r\n', long.slice(0, 4), long.slice(4), '.\r\n']);
    t.same(normalize(ev), [{ type: 'data', text: `ok\r\n${long}` }, { type: 'data-end', lineTooLong: true }]);
    // A stuffed dot does not count (RFC 5321 §4.5.3.1.6).
    t.same(normalize(dataReader(l).push(Buffer.from('..2345678\r\n.\r\n'))).at(-1), { type: 'data-end', lineTooLong: false });
    // The flag is per message.
    const r = dataReader(l);
    r.push(Buffer.from('x'.repeat(50) + '\r\n.\r\n'));
    r.expectData();
    t.same(r.push(Buffer.from('short\r\n.\r\n')).at(-1), { type: 'data-end', lineTooLong: false });
  });

  t.test('data events are slices of the input', async (t) => {
    const chunk = Buffer.from('hello\r\nworld\r\n');
    const ev = dataReader().push(chunk);
    t.equal(ev.length, 1);
    const data = (ev[0] as { data: Buffer }).data;
    t.equal(data.buffer, chunk.buffer);
    t.equal(data.byteOffset, chunk.byteOffset);
  });

  t.test('random chunkings of random content agree', async (t) => {
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) {
      const kind = i % 7;
      lines.push(kind === 0 ? '.' + 'x'.repeat(i % 5) : kind === 1 ? '..' : kind === 2 ? '.\r' : 'line ' + i + (kind === 3 ? '\n' : ''));
    }
    const body = lines.join('\r\n') + '\r\n';
    const wire = Buffer.from(body + '.\r\nQUIT\r\n', 'latin1');
    const whole = normalize(dataReader().push(wire));
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 50; round++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < wire.length; ) {
        const n = 1 + Math.floor(rand() * 20);
        chunks.push(wire.subarray(i, i + n));
        i += n;
      }
      t.same(normalize(feed(dataReader(), chunks)), whole, `round ${round}`);
    }
    t.equal(whole.at(-1)?.line, 'QUIT');
  });
});

t.test('reader: BDAT', async (t) => {
  t.test('chunks pipelined with following commands in one push', async (t) => {
    const r = new SmtpReader(limits);
    t.same(normalize(r.push(Buffer.from('BDAT 5\r\nhelloBDAT 3 LAST\r\nabcQUIT\r\n'))), [
      { type: 'command', line: 'BDAT 5' },
      { type: 'chunk', text: 'hello' },
      { type: 'chunk-end' },
      { type: 'command', line: 'BDAT 3 LAST' },
      { type: 'chunk', text: 'abc' },
      { type: 'chunk-end' },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  t.test('same stream byte by byte', async (t) => {
    const r = new SmtpReader(limits);
    const wire = Buffer.from('bdat 5\r\nhelloBDAT 3 last\r\nabcQUIT\r\n');
    const ev: SmtpEvent[] = [];
    for (let i = 0; i < wire.length; i++) ev.push(...r.push(wire.subarray(i, i + 1)));
    t.same(normalize(ev), [
      { type: 'command', line: 'bdat 5' },
      { type: 'chunk', text: 'hello' },
      { type: 'chunk-end' },
      { type: 'command', line: 'BDAT 3 last' },
      { type: 'chunk', text: 'abc' },
      { type: 'chunk-end' },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  t.test('BDAT 0 LAST: just the command', async (t) => {
    const r = new SmtpReader(limits);
    t.same(r.push(Buffer.from('BDAT 0 LAST\r\nQUIT\r\n')), [
      { type: 'command', line: 'BDAT 0 LAST' },
      { type: 'command', line: 'QUIT' },
    ]);
  });

  t.test('binary chunk with CRLF.CRLF and command-like bytes inside is opaque', async (t) => {
    const r = new SmtpReader(limits);
    const payload = Buffer.from('\r\n.\r\nQUIT\r\n\0\xff', 'latin1');
    const ev = r.push(Buffer.concat([Buffer.from(`BDAT ${payload.length} LAST\r\n`), payload, Buffer.from('NOOP\r\n')]));
    t.same(normalize(ev), [
      { type: 'command', line: `BDAT ${payload.length} LAST` },
      { type: 'chunk', text: payload.toString('latin1') },
      { type: 'chunk-end' },
      { type: 'command', line: 'NOOP' },
    ]);
  });

  t.test('invalid BDAT lines stay in command mode', async (t) => {
    for (const line of ['BDAT', 'BDAT x', 'BDAT 5 FIRST', 'BDAT -1', 'BDAT 1234567890123456', 'BDAT 5 LAST x', 'BDAT\t5']) {
      const r = new SmtpReader(limits);
      t.same(r.push(Buffer.from(`${line}\r\nNOOP\r\n`)), [
        { type: 'command', line },
        { type: 'command', line: 'NOOP' },
      ], line);
    }
    // What the session accepts, the reader reads a chunk for (shared parseBdatArgs).
    const r = new SmtpReader(limits);
    t.same(normalize(r.push(Buffer.from('BDAT  2  last \r\nabNOOP\r\n'))), [
      { type: 'command', line: 'BDAT  2  last ' },
      { type: 'chunk', text: 'ab' },
      { type: 'chunk-end' },
      { type: 'command', line: 'NOOP' },
    ]);
  });

  t.test('parseBdatArgs', async (t) => {
    t.same(parseBdatArgs('5'), { size: 5, last: false });
    t.same(parseBdatArgs('0 LAST'), { size: 0, last: true });
    t.same(parseBdatArgs('999999999999999 last'), { size: 999999999999999, last: true });
    t.equal(parseBdatArgs('9999999999999999'), undefined);
    t.equal(parseBdatArgs(''), undefined);
    t.equal(parseBdatArgs('5 LASTX'), undefined);
  });
});

t.test('reader: large content streams fast, BDAT without copies', async (t) => {
  const size = 20 * 1024 * 1024;
  const step = 64 * 1024;
  // Realistic text: 76-byte lines, some starting with a dot.
  const line = Buffer.from('.' + 'a'.repeat(73) + '\r\n');
  const body = Buffer.alloc(size);
  for (let i = 0; i + line.length <= size; i += line.length) line.copy(body, i);
  body.write('\r\n', size - 2);

  t.test('DATA', async (t) => {
    const r = dataReader();
    const wire = Buffer.concat([body, Buffer.from('.\r\n')]);
    let bytes = 0;
    let ended = false;
    const start = performance.now();
    for (let i = 0; i < wire.length; i += step) {
      for (const ev of r.push(wire.subarray(i, i + step))) {
        if (ev.type === 'data') bytes += ev.data.length;
        else if (ev.type === 'data-end') ended = true;
      }
    }
    const ms = performance.now() - start;
    t.ok(ended);
    // Each 76-byte line lost its leading dot.
    t.equal(bytes, size - Math.floor((size - 2) / line.length));
    t.ok(ms < 5000, `20 MB DATA in ${ms.toFixed(0)} ms`);
  });

  t.test('BDAT', async (t) => {
    const r = new SmtpReader(limits);
    const wire = Buffer.concat([Buffer.from(`BDAT ${size} LAST\r\n`), body, Buffer.from('QUIT\r\n')]);
    let bytes = 0;
    let slices = 0;
    let chunks = 0;
    const tail: SmtpEvent[] = [];
    const start = performance.now();
    for (let i = 0; i < wire.length; i += step) {
      const input = wire.subarray(i, i + step);
      for (const ev of r.push(input)) {
        if (ev.type === 'chunk') {
          bytes += ev.data.length;
          chunks++;
          if (ev.data.buffer === wire.buffer) slices++;
        } else if (ev.type !== 'command' || ev.line !== `BDAT ${size} LAST`) {
          tail.push(ev);
        }
      }
    }
    const ms = performance.now() - start;
    t.equal(bytes, size);
    t.equal(slices, chunks, 'every chunk event is a slice of the input');
    t.same(tail, [{ type: 'chunk-end' }, { type: 'command', line: 'QUIT' }]);
    t.ok(ms < 2000, `20 MB BDAT in ${ms.toFixed(0)} ms`);
  });
});

t.test('parser: command lines', async (t) => {
  t.same(parseCommandLine('mail FROM:<a@b>'), { verb: 'MAIL', args: 'FROM:<a@b>' });
  t.same(parseCommandLine('QUIT'), { verb: 'QUIT', args: '' });
  t.same(parseCommandLine('DATA  \t'), { verb: 'DATA', args: '' });
  t.same(parseCommandLine('EHLO  x'), { verb: 'EHLO', args: ' x' });
  for (const bad of ['', ' QUIT', '123', 'X-FOO', 'MAIL:FROM', 'HELO\tx']) t.equal(parseCommandLine(bad), undefined, bad);
});

t.test('parser: MAIL FROM', async (t) => {
  t.test('all parameters', async (t) => {
    const r = parseMailFrom('FROM:<a@example.com> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159+2B1 SMTPUTF8 AUTH=<>');
    t.equal(r.address, 'a@example.com');
    t.same(
      [...r.params],
      [
        ['SIZE', '1000'],
        ['BODY', '8BITMIME'],
        ['RET', 'HDRS'],
        ['ENVID', 'QQ314159+2B1'],
        ['SMTPUTF8', true],
        ['AUTH', '<>'],
      ],
    );
  });

  t.test('null sender, case, lenient space after colon, several spaces', async (t) => {
    t.same(parseMailFrom('FROM:<>'), { address: '', params: new Map() });
    t.same(parseMailFrom('from:<a@b.c>   size=5  '), { address: 'a@b.c', params: new Map([['SIZE', '5']]) });
    t.equal(parseMailFrom('From: <a@b.c>').address, 'a@b.c');
    t.equal(parseMailFrom('FROM:  <>').address, '');
  });

  t.test('quoted local part, address literals, source route', async (t) => {
    t.equal(parseMailFrom('FROM:<"john q. doe"@example.com>').address, '"john q. doe"@example.com');
    t.equal(parseMailFrom('FROM:<"a>b\\"c"@example.com> SIZE=1').address, '"a>b\\"c"@example.com');
    t.equal(parseMailFrom('FROM:<user@[192.0.2.1]>').address, 'user@[192.0.2.1]');
    t.equal(parseMailFrom('FROM:<user@[IPv6:2001:db8::1]>').address, 'user@[IPv6:2001:db8::1]');
    t.equal(parseMailFrom('FROM:<user@[IPv6:::ffff:192.0.2.1]>').address, 'user@[IPv6:::ffff:192.0.2.1]');
    t.equal(parseMailFrom('FROM:<@relay1.example,@relay2.example:user@example.com>').address, 'user@example.com');
  });

  t.test('UTF-8 only with utf8', async (t) => {
    t.throws(() => parseMailFrom('FROM:<jörg@example.com>'), SmtpSyntaxError);
    t.throws(() => parseMailFrom('FROM:<a@bücher.de>'), SmtpSyntaxError);
    t.throws(() => parseMailFrom('FROM:<a@b.c> X=ü'), SmtpSyntaxError);
    t.equal(parseMailFrom('FROM:<jörg@bücher.de> SMTPUTF8', { utf8: true }).address, 'jörg@bücher.de');
    t.equal(parseMailFrom('FROM:<"jö rg"@b.de>', { utf8: true }).address, '"jö rg"@b.de');
    t.equal(parseMailFrom('FROM:<a@b.c> X=ü', { utf8: true }).params.get('X'), 'ü');
    t.throws(() => parseMailFrom('FROM:<j\ufffdrg@b.de>', { utf8: true }), SmtpSyntaxError);
  });

  t.test('syntax errors', async (t) => {
    const bad = [
      'FROM:a@b.c',
      'FROM:<a@b.c',
      'FROM:a@b.c>',
      'FROM<a@b.c>',
      'TO:<a@b.c>',
      ' FROM:<a@b.c>',
      'FROM:<a@b.c>SIZE=10',
      'FROM:<a@b.c> SIZE=1 size=2',
      'FROM:<a@b.c> SIZE=',
      'FROM:<a@b.c> =5',
      'FROM:<a@b.c> -X=1',
      'FROM:<a@b.c> X=a=b',
      'FROM:<"a@b.c>',
      'FROM:<"a"b@c.d>',
      'FROM:<a>',
      'FROM:<@b.c>',
      'FROM:<a@>',
      'FROM:<a..b@c.d>',
      'FROM:<.a@c.d>',
      'FROM:<a b@c.d>',
      'FROM:<a@-c.d>',
      'FROM:<a@c..d>',
      'FROM:<a@[300.1.1.1]>',
      'FROM:<a@[IPv6:1::2::3]>',
      'FROM:<a@[1.2.3]>',
      'FROM:<@relay:>',
      'FROM:<@relay a@b.c>',
      `FROM:<${'x'.repeat(300)}@b.c>`,
      `FROM:<a@${'x'.repeat(64)}.c>`,
    ];
    for (const args of bad) t.throws(() => parseMailFrom(args), SmtpSyntaxError, args);
  });
});

t.test('parser: RCPT TO', async (t) => {
  const r = parseRcptTo('TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.org');
  t.equal(r.address, 'b@example.org');
  t.same([...r.params], [
    ['NOTIFY', 'SUCCESS,FAILURE'],
    ['ORCPT', 'rfc822;b+40example.org'],
  ]);
  t.equal(parseRcptTo('TO:<Postmaster>').address, 'Postmaster');
  t.equal(parseRcptTo('to:<postmaster>').address, 'postmaster');
  t.equal(parseRcptTo('TO:<postmaster@example.org>').address, 'postmaster@example.org');
  t.throws(() => parseRcptTo('TO:<>'), SmtpSyntaxError);
  t.throws(() => parseRcptTo('TO:<Postmaster> NOTIFY=NEVER NOTIFY=NEVER'), SmtpSyntaxError);
  t.throws(() => parseRcptTo('FROM:<a@b.c>'), SmtpSyntaxError);
  t.throws(() => parseRcptTo('TO:<someone>'), SmtpSyntaxError);
});

t.test('parser: parseAddress', async (t) => {
  t.equal(parseAddress('<a@b.c>'), 'a@b.c');
  t.equal(parseAddress('a@b.c'), 'a@b.c');
  t.equal(parseAddress('<a.b+tag@x-y.example>'), 'a.b+tag@x-y.example');
  t.equal(parseAddress('<a@[IPv6:::1]>'), 'a@[IPv6:::1]');
  t.equal(parseAddress('<a@[x-tag:stuff]>'), 'a@[x-tag:stuff]');
  t.throws(() => parseAddress('<>'), SmtpSyntaxError);
  t.throws(() => parseAddress('<a@b.c'), SmtpSyntaxError);
  t.throws(() => parseAddress('<a@[IPv6:zz::1]>'), SmtpSyntaxError);
});

t.test('parser: xtext and DSN values', async (t) => {
  t.equal(decodeXtext('a+2Bb+3Dc'), 'a+b=c');
  t.equal(decodeXtext('x+2b'), 'x+', 'lower-case hex accepted');
  for (const bad of ['+', '+4', '+GG', 'a=b', 'a b', 'é']) t.throws(() => decodeXtext(bad), SmtpSyntaxError, bad);
  for (const s of ['plain', 'a+b=c', 'spaces and\ttabs', 'ünïcödé ✓', '', '+++===', '\x00\x7f~!']) {
    const enc = encodeXtext(s);
    t.match(enc, /^[\x21-\x7e]*$/);
    t.notMatch(enc, /=/);
    t.equal(decodeXtext(enc), s, JSON.stringify(s));
  }
  t.equal(encodeXtext('a+b=c d'), 'a+2Bb+3Dc+20d');

  t.ok(validateNotify('NEVER'));
  t.ok(validateNotify('SUCCESS'));
  t.ok(validateNotify('success,failure,delay'));
  for (const bad of ['', 'NEVER,SUCCESS', 'SUCCESS,SUCCESS', 'SUCCESS,', 'ALWAYS']) t.notOk(validateNotify(bad), bad);

  t.ok(validateOrcpt('rfc822;a@b.c'));
  t.ok(validateOrcpt('rfc822;a+2Bb@b.c'));
  t.ok(validateOrcpt('utf-8;jörg@b.de'));
  for (const bad of ['rfc822', ';a@b', 'rfc822;', 'rfc 822;a@b', 'rfc822;a=b', 'rfc822;+ZZ', `rfc822;${'a'.repeat(501)}`]) {
    t.notOk(validateOrcpt(bad), bad);
  }

  t.ok(validateRet('FULL'));
  t.ok(validateRet('hdrs'));
  t.notOk(validateRet('BODY'));

  t.ok(validateEnvid('QQ314159'));
  t.ok(validateEnvid('+2B'.repeat(100)), '100 decoded characters');
  t.notOk(validateEnvid('a'.repeat(101)));
  t.notOk(validateEnvid(''));
  t.notOk(validateEnvid('a=b'));

  t.equal(parseSize('0'), 0);
  t.equal(parseSize('10485760'), 10485760);
  t.ok((parseSize('9'.repeat(20)) ?? 0) > 1e19);
  for (const bad of ['', '-1', '1.5', '9'.repeat(21), '1e5', ' 1']) t.equal(parseSize(bad), undefined, bad);

  t.equal(validateBody('8bitmime'), '8BITMIME');
  t.equal(validateBody('7BIT'), '7BIT');
  t.equal(validateBody('BINARYMIME'), 'BINARYMIME');
  t.equal(validateBody('8BIT'), undefined);
});

t.test('parser: AUTH', async (t) => {
  t.same(parseAuthArgs('PLAIN dGVzdA=='), { mechanism: 'PLAIN', initial: 'dGVzdA==' });
  t.same(parseAuthArgs('login'), { mechanism: 'LOGIN' });
  t.same(parseAuthArgs('PLAIN ='), { mechanism: 'PLAIN', initial: '=' });
  t.same(parseAuthArgs('SCRAM-SHA-256'), { mechanism: 'SCRAM-SHA-256' });
  for (const bad of ['', 'PLAIN a b', 'PLAIN dGVzdA=', 'PLAIN d*', 'PLAIN ', 'A'.repeat(21), 'PL@IN']) {
    t.equal(parseAuthArgs(bad), undefined, bad);
  }
  t.same(decodeBase64Strict('dGVzdA=='), Buffer.from('test'));
  t.same(decodeBase64Strict('AHVzZXIAcGFzcw=='), Buffer.from('\0user\0pass'));
  t.same(decodeBase64Strict(''), Buffer.alloc(0));
  for (const bad of ['dGVzdA', 'dGVzdA=', 'dGV zdA==', 'dGVzdA===', '====', 'dG=zdA==', '*']) {
    t.equal(decodeBase64Strict(bad), undefined, bad);
  }
});

t.test('reply formatting', async (t) => {
  t.equal(reply(250, '2.1.0', 'Ok'), '250 2.1.0 Ok\r\n');
  t.equal(reply(354, undefined, 'Go on'), '354 Go on\r\n');
  t.equal(reply(250, '2.1.0', ['first', 'last']), '250-2.1.0 first\r\n250 2.1.0 last\r\n');
  t.equal(reply(550, '5.1.1', 'bad\r\nINJECTED 250 ok'), '550 5.1.1 bad INJECTED 250 ok\r\n');
  t.equal(reply(250, undefined, ''), '250 Ok\r\n');
  t.equal(reply(550, '5.0.0', ['']), '550 5.0.0 Failed\r\n');
  t.equal(reply(451, '4.3.0', []), '451 4.3.0 Temporary failure\r\n');
  const long = reply(550, '5.0.0', 'é'.repeat(1000));
  t.ok(Buffer.byteLength(long) <= 512, 'bounded to 512 octets');
  t.match(long, /^550 5\.0\.0 (é)+\r\n$/);

  t.equal(
    ehloReply('mx.example', 'Hello client', ['PIPELINING', 'SIZE 100', 'AUTH PLAIN LOGIN']),
    '250-mx.example Hello client\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 AUTH PLAIN LOGIN\r\n',
  );
  t.equal(ehloReply('mx.example', 'Hi', []), '250 mx.example Hi\r\n');
  t.equal(ehloReply('mx.example', '', []), '250 mx.example\r\n');
});

t.test('ReplyReader', async (t) => {
  const wire = '220 mx ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n250 2.1.0 Sender ok\r\n' +
    '550-5.1.1 no such\r\n550-5.1.1 user here\r\n550 5.1.1 sorry\r\n354 go\r\n250\r\n452 4.5.3 Too many\n' +
    '250 5.0.0 class mismatch\r\n';
  const expected: ParsedReply[] = [
    { code: 220, lines: ['mx ESMTP'] },
    { code: 250, lines: ['mx.example', 'PIPELINING', 'SIZE 10'] },
    { code: 250, enhanced: '2.1.0', lines: ['Sender ok'] },
    { code: 550, enhanced: '5.1.1', lines: ['no such', 'user here', 'sorry'] },
    { code: 354, lines: ['go'] },
    { code: 250, lines: [''] },
    { code: 452, enhanced: '4.5.3', lines: ['Too many'] },
    { code: 250, lines: ['5.0.0 class mismatch'] },
  ];
  t.same(new ReplyReader().push(Buffer.from(wire)), expected);
  const buf = Buffer.from(wire);
  for (let i = 0; i <= buf.length; i++) {
    const r = new ReplyReader();
    t.same([...r.push(buf.subarray(0, i)), ...r.push(buf.subarray(i))], expected, `split at ${i}`);
  }
  const r = new ReplyReader();
  const got: ParsedReply[] = [];
  for (const b of buf) got.push(...r.push(Buffer.from([b])));
  t.same(got, expected, 'byte by byte');

  t.throws(() => new ReplyReader().push(Buffer.from('hello\r\n')), ReplyParseError);
  t.throws(() => new ReplyReader().push(Buffer.from('250-a\r\n251 b\r\n')), ReplyParseError);
  t.throws(() => new ReplyReader().push(Buffer.from('250x\r\n')), ReplyParseError);
  t.throws(() => new ReplyReader().push(Buffer.from('250-x\r\n'.repeat(101))), ReplyParseError);
  t.throws(() => new ReplyReader().push(Buffer.from('250 ' + 'x'.repeat(5000))), ReplyParseError, 'long line without LF');
  t.throws(() => {
    const rr = new ReplyReader();
    for (let i = 0; i < 5; i++) rr.push(Buffer.from('x'.repeat(1000)));
  }, ReplyParseError, 'long line in pieces');
  t.same(new ReplyReader().push(Buffer.from('250-x\r\n'.repeat(99) + '250 y\r\n'))[0]?.lines.length, 100);
});

t.test('random bytes never throw from the reader', async (t) => {
  const r = new SmtpReader({ maxCommandLine: 64, maxTextLine: 100 });
  for (let i = 0; i < 200; i++) {
    const ev = r.push(randomBytes(257));
    for (const e of ev) if (e.type === 'command' && /^BDAT /i.test(e.line)) r.reset();
    if (i % 10 === 0) r.expectData();
  }
  t.pass();
});
