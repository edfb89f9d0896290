/**
 * Unit tests of the FUTURERELEASE parts (RFC 4865): the clocks, the hold-param parser and
 * EHLO keyword, and the DSN builder (RFC 3464 / RFC 6522 / RFC 3461). The DSNs are read
 * back with Python's email package, a MIME parser written independently of this one.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { ManualClock, MAX_NODE_TIMER_MS, createSystemClock, systemClock } from '../src/lemonade/futurerelease/clock.js';
import {
  MAX_FUTURE_RELEASE_INTEGER,
  checkHoldPolicy,
  describeHold,
  formatUtcDateTime,
  futureReleaseKeyword,
  holdQuotaRefusal,
  parseHold,
  parseRfc3339DateTime,
  type HoldPolicy,
  type HoldResult,
} from '../src/lemonade/futurerelease/hold-params.js';
import { DEFAULT_MAX_RETURNED_BYTES, buildDsn, headerBlock, type DsnInput } from '../src/lemonade/futurerelease/dsn.js';

// ---- clock -----------------------------------------------------------------------------

t.test('ManualClock fires due timers in due-time order, ties in scheduling order', async (t) => {
  const clock = new ManualClock(1000);
  const fired: Array<[string, number]> = [];
  const at = (name: string) => () => fired.push([name, clock.now()]);
  clock.setTimeout(at('c30'), 30);
  clock.setTimeout(at('a10'), 10);
  clock.setTimeout(at('d20'), 20);
  clock.setTimeout(at('b10'), 10);
  t.equal(clock.pending, 4);
  clock.advance(25);
  t.same(fired, [
    ['a10', 1010],
    ['b10', 1010],
    ['d20', 1020],
  ]);
  t.equal(clock.now(), 1025, 'now is the end of the window after advance');
  clock.advance(5);
  t.same(fired.at(-1), ['c30', 1030], 'a timer due exactly at the end of the window fires');
  t.equal(clock.pending, 0);
});

t.test('ManualClock: timers scheduled by callbacks fire in the same advance when due', async (t) => {
  const clock = new ManualClock(0);
  const fired: Array<[string, number]> = [];
  clock.setTimeout(() => {
    fired.push(['outer', clock.now()]);
    clock.setTimeout(() => fired.push(['inner+5', clock.now()]), 5);
    clock.setTimeout(() => {
      fired.push(['inner+0', clock.now()]);
      clock.setTimeout(() => fired.push(['nested+1', clock.now()]), 1);
    }, 0);
    clock.setTimeout(() => fired.push(['late', clock.now()]), 100);
  }, 10);
  clock.setTimeout(() => fired.push(['other12', clock.now()]), 12);
  clock.advance(50);
  t.same(fired, [
    ['outer', 10],
    ['inner+0', 10],
    ['nested+1', 11],
    ['other12', 12],
    ['inner+5', 15],
  ]);
  t.equal(clock.pending, 1, 'the timer due after the window waits');
  clock.advance(60);
  t.same(fired.at(-1), ['late', 110]);
});

t.test('ManualClock: cancel, set forward and back, bad input, runaway callbacks', async (t) => {
  const clock = new ManualClock(0);
  let n = 0;
  const h = clock.setTimeout(() => n++, 10);
  h.cancel();
  h.cancel();
  clock.advance(20);
  t.equal(n, 0, 'a cancelled timer does not fire');

  const h2 = clock.setTimeout(() => n++, 10);
  clock.set(100);
  t.equal(n, 1, 'set() forward fires what falls due');
  t.equal(clock.now(), 100);
  h2.cancel(); // after firing: harmless

  clock.setTimeout(() => n++, 50); // due at 150
  clock.set(40);
  t.equal(clock.now(), 40, 'set() backward moves the clock back');
  t.equal(n, 1, 'and fires nothing');
  clock.advance(100);
  t.equal(n, 1, 'timers keep their absolute due time (150)');
  clock.advance(10);
  t.equal(n, 2);

  clock.setTimeout(() => n++, -5);
  clock.setTimeout(() => n++, Number.NaN);
  clock.advance(0);
  t.equal(n, 4, 'negative and NaN delays fire at the current time');

  t.throws(() => clock.advance(-1), RangeError);
  t.throws(() => clock.set(Number.POSITIVE_INFINITY), RangeError);
  t.throws(() => new ManualClock(Number.NaN), RangeError);

  const spin = new ManualClock(0);
  const again = (): void => {
    spin.setTimeout(again, 0);
  };
  spin.setTimeout(again, 0);
  t.throws(() => spin.advance(1), /too many timers/);

  const boom = new ManualClock(0);
  let after = 0;
  boom.setTimeout(() => {
    throw new Error('callback failed');
  }, 5);
  boom.setTimeout(() => after++, 7);
  t.throws(() => boom.advance(10), /callback failed/);
  t.equal(boom.now(), 5, 'the clock stops at the failing timer');
  t.equal(after, 0);
  boom.advance(5);
  t.equal(after, 1, 'later timers stay pending');
});

t.test('systemClock: real timers, cancel, and delays longer than a Node timer holds', async (t) => {
  const before = Date.now();
  t.ok(Math.abs(systemClock.now() - before) < 1000);
  await new Promise<void>((resolve) => systemClock.setTimeout(resolve, 5));
  t.pass('a short timer fires');

  const clock = createSystemClock({ unref: true });
  let fired = false;
  const h = clock.setTimeout(() => (fired = true), 5);
  h.cancel();
  // A delay Node cannot hold in one timer (it would fire after 1 ms with a warning).
  let longFired = false;
  const long = clock.setTimeout(() => (longFired = true), MAX_NODE_TIMER_MS * 2);
  await new Promise((resolve) => setTimeout(resolve, 40));
  t.notOk(fired, 'a cancelled timer does not fire');
  t.notOk(longFired, 'a 50-day delay does not fire early');
  long.cancel();

  let inCall = true;
  let ranSync = false;
  const zero = new Promise<void>((resolve) =>
    systemClock.setTimeout(() => {
      ranSync = inCall;
      resolve();
    }, 0),
  );
  inCall = false;
  await zero;
  t.notOk(ranSync, 'a zero delay still runs asynchronously');
});

// ---- hold-params -----------------------------------------------------------------------

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0); // 2026-01-15T12:00:00Z
const DAY: HoldPolicy = { maxIntervalSeconds: 86_400 };
const WIDE: HoldPolicy = { maxIntervalSeconds: MAX_FUTURE_RELEASE_INTEGER };
const OFF: HoldPolicy = { maxIntervalSeconds: 0 };

function refused(r: HoldResult | undefined): [number, string] | 'accepted' | 'none' {
  if (r === undefined) return 'none';
  return r.ok ? 'accepted' : [r.code, r.enhanced];
}

t.test('FUTURERELEASE EHLO keyword (RFC 4865 §3 items 1-3)', async (t) => {
  // "FUTURERELEASE" SP max-future-release-interval SP max-future-release-date-time, with
  // future-release-integer = %x31-39 *8DIGIT and a date-time "normalized to UTC".
  const abnf = /^FUTURERELEASE [1-9][0-9]{0,8} [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z$/;
  const line = futureReleaseKeyword(DAY, NOW);
  t.equal(line, 'FUTURERELEASE 86400 2026-01-16T12:00:00Z');
  t.match(line, abnf);
  t.equal(futureReleaseKeyword(DAY, NOW + 999), 'FUTURERELEASE 86400 2026-01-16T12:00:00Z', 'rounded down to the second');
  const wide = futureReleaseKeyword(WIDE, NOW);
  t.match(wide, abnf);
  t.equal(wide, `FUTURERELEASE 999999999 ${formatUtcDateTime(NOW + 999_999_999_000)}`);
  t.equal(futureReleaseKeyword({ maxIntervalSeconds: 1 }, NOW), 'FUTURERELEASE 1 2026-01-15T12:00:01Z');
  t.equal(futureReleaseKeyword(OFF, NOW), undefined, 'disabled: not advertised');
  for (const bad of [-1, 1.5, MAX_FUTURE_RELEASE_INTEGER + 1, Number.NaN]) {
    t.throws(() => futureReleaseKeyword({ maxIntervalSeconds: bad }, NOW), RangeError, `policy ${bad}`);
    t.type(checkHoldPolicy({ maxIntervalSeconds: bad }), 'string');
  }
  t.equal(checkHoldPolicy(DAY), undefined);

  // A client at the advertised limit (§4.1 item 4) is accepted at a later MAIL.
  const advertised = (futureReleaseKeyword(DAY, NOW + 123) as string).split(' ')[2] as string;
  t.equal(refused(parseHold({ holduntil: advertised }, DAY, NOW + 5000)), 'accepted');
});

t.test('HOLDFOR (RFC 4865 §3 item 4, §4.2 items 7, 10, 11)', async (t) => {
  t.equal(parseHold({}, DAY, NOW), undefined, 'no hold-param: no hold');
  t.same(parseHold({ holdfor: '60' }, DAY, NOW), { ok: true, releaseAtMs: NOW + 60_000, requested: 'for;60' });
  t.same(parseHold({ holdfor: '1' }, DAY, NOW), { ok: true, releaseAtMs: NOW + 1000, requested: 'for;1' });
  t.same(parseHold({ holdfor: '86400' }, DAY, NOW), { ok: true, releaseAtMs: NOW + 86_400_000, requested: 'for;86400' }, 'exactly the max');
  t.same(parseHold({ holdfor: '86401' }, DAY, NOW), {
    ok: false,
    code: 501,
    enhanced: '5.5.4',
    text: 'HOLDFOR exceeds the maximum of 86400 seconds',
  });
  t.same(parseHold({ holdfor: '999999999' }, WIDE, NOW), { ok: true, releaseAtMs: NOW + 999_999_999_000, requested: 'for;999999999' });
  // future-release-integer = %x31-39 *8DIGIT: 1..999999999 without a leading zero.
  for (const bad of ['0', '00', '060', '1234567890', '9999999999', '12a', 'abc', '-5', '+5', ' 5', '5 ', '', '1e3', '0x10', '６']) {
    t.same(refused(parseHold({ holdfor: bad }, WIDE, NOW)), [501, '5.5.4'], `HOLDFOR=${JSON.stringify(bad)}`);
  }
  t.same(refused(parseHold({ holdfor: true }, WIDE, NOW)), [501, '5.5.4'], 'HOLDFOR without a value');
  const r = parseHold({ holdfor: '0' }, WIDE, NOW);
  t.match(r, { ok: false, text: /1 to 999999999/ });
});

t.test('HOLDUNTIL (RFC 4865 §3 item 4 with erratum 2040, §4.2 items 6, 8, 10, 11; RFC 3339 §5.6)', async (t) => {
  const at = (s: string, policy = DAY): HoldResult | undefined => parseHold({ holduntil: s }, policy, NOW);
  t.same(at('2026-01-15T13:00:00Z'), { ok: true, releaseAtMs: NOW + 3_600_000, requested: 'until;2026-01-15T13:00:00Z' });
  t.same(at('2026-01-15T15:00:00+02:00'), { ok: true, releaseAtMs: NOW + 3_600_000, requested: 'until;2026-01-15T15:00:00+02:00' }, 'numeric offset');
  t.same(at('2026-01-15T08:30:00-04:30'), { ok: true, releaseAtMs: NOW + 3_600_000, requested: 'until;2026-01-15T08:30:00-04:30' });
  t.match(at('2026-01-15T13:00:00-00:00'), { ok: true, releaseAtMs: NOW + 3_600_000 }, '-00:00 (RFC 3339 §4.3)');
  t.same(at('2026-01-15t13:00:00z'), { ok: true, releaseAtMs: NOW + 3_600_000, requested: 'until;2026-01-15t13:00:00z' }, 'lower-case t and z');
  t.match(at('2026-01-15T13:00:00.5Z'), { ok: true, releaseAtMs: NOW + 3_600_500 }, 'fractional seconds');
  t.match(at('2026-01-15T13:00:00.123456Z'), { ok: true, releaseAtMs: NOW + 3_600_124 }, 'sub-millisecond rounds up, never early');
  t.match(at('2026-01-15T13:00:00.0001Z'), { ok: true, releaseAtMs: NOW + 3_600_001 });
  t.match(at('2026-01-15T13:00:00.000Z'), { ok: true, releaseAtMs: NOW + 3_600_000 });

  // In the past, or now: valid, so accepted (§4.2 item 4) and released at once.
  t.same(at('2026-01-14T00:00:00Z'), { ok: true, releaseAtMs: NOW, requested: 'until;2026-01-14T00:00:00Z' }, 'in the past');
  t.same(at('1970-01-01T00:00:00Z'), { ok: true, releaseAtMs: NOW, requested: 'until;1970-01-01T00:00:00Z' });
  t.match(at('0001-01-01T00:00:00Z'), { ok: true, releaseAtMs: NOW }, 'a year below 100 is that year, not 19xx');
  t.match(at('2026-01-15T12:00:00Z'), { ok: true, releaseAtMs: NOW });

  // Beyond the max-future-release-date-time (now + interval).
  t.match(at('2026-01-16T12:00:00Z'), { ok: true, releaseAtMs: NOW + 86_400_000 }, 'exactly the max');
  t.same(at('2026-01-16T12:00:00.001Z'), { ok: false, code: 501, enhanced: '5.5.4', text: 'HOLDUNTIL is later than 2026-01-16T12:00:00Z' });
  t.same(refused(at('2026-01-16T12:00:01Z')), [501, '5.5.4']);
  t.same(refused(at('2026-01-16T13:00:01+01:00')), [501, '5.5.4'], 'offset applied before the comparison');
  t.same(refused(at('2099-01-01T00:00:00Z')), [501, '5.5.4']);

  // Leap seconds: 23:59:60 UTC on the last day of a month only (RFC 3339 §5.6, §5.7).
  t.same(at('2026-06-30T23:59:60Z', WIDE), { ok: true, releaseAtMs: Date.UTC(2026, 6, 1), requested: 'until;2026-06-30T23:59:60Z' });
  t.match(at('2026-06-30T16:59:60-07:00', WIDE), { ok: true, releaseAtMs: Date.UTC(2026, 6, 1) }, 'leap second with an offset');
  t.equal(parseRfc3339DateTime('1990-12-31T23:59:60Z'), Date.UTC(1991, 0, 1));
  t.equal(parseRfc3339DateTime('1990-12-31T15:59:60-08:00'), Date.UTC(1991, 0, 1), 'RFC 3339 §5.8 example');
  t.equal(parseRfc3339DateTime('1996-12-19T16:39:57-08:00'), Date.UTC(1996, 11, 20, 0, 39, 57), 'RFC 3339 §5.8 example');
  for (const bad of ['2026-01-15T12:30:60Z', '2026-06-30T22:59:60Z', '2026-06-29T23:59:60Z', '2026-06-30T23:59:60+01:00']) {
    t.same(refused(at(bad, WIDE)), [501, '5.5.4'], `leap second where none can be: ${bad}`);
  }

  const garbage = [
    'tomorrow',
    '',
    '2026-01-15',
    '2026-01-15T13:00Z',
    '2026-01-15T13:00:00',
    '2026-01-15 13:00:00Z',
    '2026-01-15T13:00:00.Z',
    '2026-01-15T13:00:00+0200',
    '2026-01-15T13:00:00+02',
    '2026-01-15T13:00:00+24:00',
    '2026-01-15T13:00:00+02:60',
    '2026-01-15T13:00:00UTC',
    '2026-01-15T24:00:00Z',
    '2026-01-15T13:60:00Z',
    '2026-01-15T13:00:61Z',
    '2026-13-01T00:00:00Z',
    '2026-00-10T00:00:00Z',
    '2026-02-29T00:00:00Z',
    '2026-04-31T00:00:00Z',
    '2026-01-00T00:00:00Z',
    '26-01-15T13:00:00Z',
    '+2026-01-15T13:00:00Z',
    '2026-01-15T13:00:00Z ',
    `2026-01-15T13:00:00.${'1'.repeat(60)}Z`,
    '1768482000',
    '２０２６-01-15T13:00:00Z',
  ];
  for (const bad of garbage) t.same(refused(at(bad, WIDE)), [501, '5.5.4'], `HOLDUNTIL=${JSON.stringify(bad)}`);
  t.same(refused(parseHold({ holduntil: true }, DAY, NOW)), [501, '5.5.4'], 'HOLDUNTIL without a value');
  t.match(parseRfc3339DateTime('2024-02-29T00:00:00Z'), Date.UTC(2024, 1, 29), 'leap year');
  t.match(parseRfc3339DateTime('2000-02-29T00:00:00Z'), Date.UTC(2000, 1, 29));
  t.equal(parseRfc3339DateTime('1900-02-29T00:00:00Z'), undefined);
});

t.test('both hold-params, disabled policy, quota, trace comment', async (t) => {
  // §4.2 items 9-11: more than one hold-param.
  t.same(parseHold({ holdfor: '60', holduntil: '2026-01-15T13:00:00Z' }, DAY, NOW), {
    ok: false,
    code: 501,
    enhanced: '5.5.4',
    text: 'Only one of HOLDFOR and HOLDUNTIL may be given',
  });
  t.same(refused(parseHold({ holdfor: 'x', holduntil: 'y' }, DAY, NOW)), [501, '5.5.4']);
  // Not offered: the reply for any parameter not advertised (RFC 5321 §4.1.1.11).
  t.same(parseHold({ holdfor: '60' }, OFF, NOW), { ok: false, code: 555, enhanced: '5.5.4', text: 'Unsupported parameter HOLDFOR' });
  t.same(parseHold({ holduntil: '2026-01-15T13:00:00Z' }, OFF, NOW), {
    ok: false,
    code: 555,
    enhanced: '5.5.4',
    text: 'Unsupported parameter HOLDUNTIL',
  });
  t.same(refused(parseHold({ holdfor: '60', holduntil: 'x' }, OFF, NOW)), [555, '5.5.4']);
  t.equal(parseHold({}, OFF, NOW), undefined);
  t.throws(() => parseHold({ holdfor: '1' }, { maxIntervalSeconds: -1 }, NOW), RangeError);

  // §6 items 3-5.
  t.same(holdQuotaRefusal('user'), { ok: false, code: 552, enhanced: '5.7.16', text: 'Future release per-user message quota exceeded' });
  t.same(holdQuotaRefusal('system'), { ok: false, code: 552, enhanced: '5.7.17', text: 'Future release system message quota exceeded' });

  t.equal(describeHold(Date.UTC(2026, 11, 1, 10)), 'held until 2026-12-01T10:00:00Z (RFC 4865)');
  t.equal(describeHold(Date.UTC(2026, 11, 1, 10) + 250), 'held until 2026-12-01T10:00:00.250Z (RFC 4865)');
  t.equal(formatUtcDateTime(parseRfc3339DateTime('0005-01-02T00:00:00Z') as number), '0005-01-02T00:00:00Z', 'years below 1000 keep 4 digits');
  t.throws(() => formatUtcDateTime(Number.NaN), RangeError);
});

// ---- DSN -------------------------------------------------------------------------------

const PY = String.raw`
import sys, json, email
from email import policy
raw = sys.stdin.buffer.read()
msg = email.message_from_bytes(raw, policy=policy.default)
def hdrs(m):
    return [[k, str(v)] for k, v in m.items()]
out = {
  'headers': hdrs(msg),
  'content_type': msg.get_content_type(),
  'report_type': msg.get_param('report-type'),
  'multipart': msg.is_multipart(),
  'defects': [type(d).__name__ for d in msg.defects],
  'parts': [],
}
for p in msg.iter_parts():
    info = {'type': p.get_content_type(), 'cte': p.get('Content-Transfer-Encoding'),
            'charset': p.get_content_charset(), 'defects': [type(d).__name__ for d in p.defects]}
    ct = p.get_content_type()
    if ct == 'message/delivery-status':
        info['blocks'] = [hdrs(b) for b in p.get_payload()]
    elif ct == 'message/rfc822':
        inner = p.get_payload()[0]
        info['inner_headers'] = hdrs(inner)
        info['inner_body'] = inner.get_payload(decode=True).decode('latin1')
    else:
        info['payload'] = p.get_payload(decode=True).decode('latin1')
    out['parts'].append(info)
print(json.dumps(out))
`;

interface Parsed {
  headers: Array<[string, string]>;
  content_type: string;
  report_type: string | null;
  multipart: boolean;
  defects: string[];
  parts: Array<{
    type: string;
    cte: string | null;
    charset: string | null;
    defects: string[];
    blocks?: Array<Array<[string, string]>>;
    inner_headers?: Array<[string, string]>;
    inner_body?: string;
    payload?: string;
  }>;
}

function pyParse(dsn: Buffer): Parsed {
  const r = spawnSync('python3', ['-c', PY], { input: dsn, maxBuffer: 64 * 1024 * 1024 });
  if (r.error !== undefined || r.status !== 0) {
    throw new Error(`python3 could not parse the DSN: ${r.error?.message ?? r.stderr.toString()}`);
  }
  return JSON.parse(r.stdout.toString()) as Parsed;
}

const get = (fields: Array<[string, string]> | undefined, name: string): string | undefined =>
  fields?.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
const all = (fields: Array<[string, string]> | undefined, name: string): string[] =>
  (fields ?? []).filter(([k]) => k.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

const ORIGINAL_HEADER =
  'Received: from client.example.org ([192.0.2.7])\r\n\tby gw.example.net (lemonade-gateway) with ESMTPSA id abc;\r\n\tThu, 15 Jan 2026 12:00:00 +0000\r\n' +
  'From: Alice <alice@example.org>\r\n' +
  'To: Bob <bob@example.com>\r\n' +
  'Subject: Birthday greetings\r\n' +
  'Date: Thu, 15 Jan 2026 11:59:58 +0000\r\n' +
  'Message-ID: <birthday.1@example.org>\r\n' +
  'MIME-Version: 1.0\r\n' +
  'Content-Type: text/plain; charset=us-ascii\r\n';
const ORIGINAL_BODY = 'Happy birthday, Bob!\r\n\r\n-- \r\nAlice\r\n';
const ORIGINAL = Buffer.from(ORIGINAL_HEADER + '\r\n' + ORIGINAL_BODY, 'latin1');

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingMta: 'gw.example.net',
    sender: 'alice@example.org',
    envid: 'QQ314159',
    arrivalDate: new Date(NOW),
    recipients: [
      {
        address: 'bob@example.com',
        orcpt: 'rfc822;Bob@Example.COM',
        action: 'failed',
        status: '5.1.1',
        diagnostic: '550 5.1.1 <bob@example.com>: Recipient address rejected',
        remoteMta: 'mx.example.com',
      },
      { address: 'carol@example.com', action: 'failed', status: '5.2.2', diagnostic: '552 5.2.2 Mailbox full' },
    ],
    original: ORIGINAL,
    now: new Date(NOW + 86_400_000),
    messageIdDomain: 'gw.example.net',
    futureReleaseRequest: 'for;86400',
    ...over,
  };
}

function assertCrlf(t: Test, buf: Buffer): void {
  const s = buf.toString('latin1');
  t.notMatch(s, /(?<!\r)\n/, 'no bare LF');
  t.notMatch(s, /\r(?!\n)/, 'no bare CR');
  t.ok(s.split('\r\n').every((l) => l.length <= 998), 'no line above 998 octets');
}

t.test('DSN structure: multipart/report, delivery-status fields, returned header (RET absent)', async (t) => {
  const dsn = buildDsn(input());
  assertCrlf(t, dsn);
  const p = pyParse(dsn);
  t.same(p.defects, [], 'no defects at the top');
  t.equal(p.content_type, 'multipart/report');
  t.equal(p.report_type, 'delivery-status');
  t.equal(p.parts.length, 3);
  t.same(
    p.parts.map((x) => x.type),
    ['text/plain', 'message/delivery-status', 'text/rfc822-headers'],
  );
  for (const part of p.parts) t.same(part.defects, [], `no defects in ${part.type}`);

  t.equal(get(p.headers, 'From'), 'Mail Delivery System <MAILER-DAEMON@gw.example.net>');
  t.equal(get(p.headers, 'To'), 'alice@example.org');
  t.equal(get(p.headers, 'Subject'), 'Undelivered Mail Returned to Sender');
  t.equal(get(p.headers, 'Date'), 'Fri, 16 Jan 2026 12:00:00 +0000');
  t.match(get(p.headers, 'Message-ID'), /^<[0-9a-z]+\.[0-9a-f]{16}@gw\.example\.net>$/);
  t.equal(get(p.headers, 'Auto-Submitted'), 'auto-replied');
  t.equal(get(p.headers, 'MIME-Version'), '1.0');

  const [perMessage, bob, carol, ...rest] = p.parts[1]?.blocks ?? [];
  t.equal(rest.length, 0, 'one block per recipient after the per-message block');
  t.equal(get(perMessage, 'Reporting-MTA'), 'dns; gw.example.net');
  t.equal(get(perMessage, 'Original-Envelope-Id'), 'QQ314159');
  t.equal(get(perMessage, 'Arrival-Date'), 'Thu, 15 Jan 2026 12:00:00 +0000');
  t.equal(get(perMessage, 'Future-Release-Request'), 'for;86400', 'RFC 4865 §5.1.2 item 2');
  t.equal(get(bob, 'Original-Recipient'), 'rfc822; Bob@Example.COM');
  t.equal(get(bob, 'Final-Recipient'), 'rfc822; bob@example.com');
  t.equal(get(bob, 'Action'), 'failed');
  t.equal(get(bob, 'Status'), '5.1.1');
  t.equal(get(bob, 'Remote-MTA'), 'dns; mx.example.com');
  t.equal(get(bob, 'Diagnostic-Code'), 'smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected');
  t.equal(get(carol, 'Original-Recipient'), undefined, 'no ORCPT, no Original-Recipient (RFC 3461 §6.3 (d))');
  t.equal(get(carol, 'Final-Recipient'), 'rfc822; carol@example.com');
  t.equal(get(carol, 'Status'), '5.2.2');
  t.equal(get(carol, 'Remote-MTA'), undefined);

  const headersPart = p.parts[2];
  t.equal(headersPart?.payload, ORIGINAL_HEADER, "the third part is the original's header block");
  t.equal(headerBlock(ORIGINAL).toString('latin1'), ORIGINAL_HEADER);
  t.match(p.parts[0]?.payload, /could not be delivered/);
  t.match(p.parts[0]?.payload, /<bob@example\.com>: delivery failed \(5\.1\.1\)/);
  t.match(p.parts[0]?.payload, /mx\.example\.com said: 550 5\.1\.1/);

  const second = buildDsn(input());
  const boundary = (b: Buffer) => /boundary="([^"]+)"/.exec(b.toString('latin1'))?.[1];
  t.not(boundary(second), boundary(dsn), 'a fresh boundary each time');
  t.not(get(pyParse(second).headers, 'Message-ID'), get(p.headers, 'Message-ID'));
});

t.test('DSN: RET=FULL returns the message, bounded; RET=HDRS and delayed return the header', async (t) => {
  const full = pyParse(buildDsn(input({ ret: 'FULL' })));
  t.equal(full.parts[2]?.type, 'message/rfc822');
  t.equal(get(full.parts[2]?.inner_headers, 'Subject'), 'Birthday greetings');
  t.equal(get(full.parts[2]?.inner_headers, 'Message-ID'), '<birthday.1@example.org>');
  t.equal(full.parts[2]?.inner_body, ORIGINAL_BODY);
  t.match(full.parts[0]?.payload, /The message is attached\./);

  const hdrs = pyParse(buildDsn(input({ ret: 'HDRS' })));
  t.equal(hdrs.parts[2]?.type, 'text/rfc822-headers');
  t.equal(hdrs.parts[2]?.payload, ORIGINAL_HEADER);

  const big = Buffer.concat([Buffer.from(ORIGINAL_HEADER + '\r\n'), Buffer.alloc(5000, 'x\r\n')]);
  const capped = buildDsn(input({ ret: 'FULL', original: big }), { maxReturnedBytes: 1000 });
  assertCrlf(t, capped);
  const c = pyParse(capped);
  t.equal(c.parts[2]?.type, 'text/rfc822-headers', 'over maxReturnedBytes: header only');
  t.equal(c.parts[2]?.payload, ORIGINAL_HEADER);
  t.match(c.parts[0]?.payload, /more than the 1000 returned in full/);
  t.ok(capped.length < 4000, 'the DSN stays small');
  t.equal(DEFAULT_MAX_RETURNED_BYTES, 1024 * 1024);
  const bigDefault = Buffer.concat([Buffer.from(ORIGINAL_HEADER + '\r\n'), Buffer.alloc(DEFAULT_MAX_RETURNED_BYTES, 'y')]);
  t.equal(pyParse(buildDsn(input({ ret: 'FULL', original: bigDefault }))).parts[2]?.type, 'text/rfc822-headers', '1 MiB default');

  const delayed = buildDsn(
    input({
      ret: 'FULL',
      recipients: [
        {
          address: 'bob@example.com',
          action: 'delayed',
          status: '4.4.1',
          diagnostic: '421 4.4.1 Try again later',
          lastAttemptDate: new Date(NOW + 86_400_000),
          willRetryUntil: new Date(NOW + 5 * 86_400_000),
        },
      ],
    }),
  );
  const d = pyParse(delayed);
  t.equal(get(d.headers, 'Subject'), 'Delayed Mail (still being retried)');
  t.equal(d.parts[2]?.type, 'text/rfc822-headers', 'no failure reported: header only (RFC 3461 §4.3)');
  const block = d.parts[1]?.blocks?.[1];
  t.equal(get(block, 'Action'), 'delayed');
  t.equal(get(block, 'Status'), '4.4.1');
  t.equal(get(block, 'Last-Attempt-Date'), 'Fri, 16 Jan 2026 12:00:00 +0000');
  t.equal(get(block, 'Will-Retry-Until'), 'Tue, 20 Jan 2026 12:00:00 +0000');
  t.match(d.parts[0]?.payload, /still being\s+retried/);

  const failedWithRetry = pyParse(
    buildDsn(input({ recipients: [{ address: 'b@example.com', action: 'failed', status: '5.0.0', willRetryUntil: new Date(NOW) }] })),
  );
  t.equal(get(failedWithRetry.parts[1]?.blocks?.[1], 'Will-Retry-Until'), undefined, 'Will-Retry-Until only for delayed (§2.3.9)');
});

t.test('DSN: 8-bit originals (RFC 6522 §3, §4)', async (t) => {
  const header8 = 'From: Zoë <zoe@example.org>\r\nSubject: Grüße\r\n';
  const original8 = Buffer.from(header8 + '\r\nBody with ümlauts\r\n', 'utf8');
  const dsn = buildDsn(input({ ret: 'FULL', original: original8 }));
  assertCrlf(t, dsn);
  t.notOk([...dsn].some((b) => b >= 0x80), 'the DSN stays 7-bit by default');
  const p = pyParse(dsn);
  t.equal(p.parts[2]?.type, 'text/rfc822-headers', '8-bit body not returned on a 7-bit path');
  t.equal(p.parts[2]?.cte, 'quoted-printable');
  t.equal(Buffer.from(p.parts[2]?.payload ?? '', 'latin1').toString('utf8'), header8, 'the header comes back intact');
  t.match(p.parts[0]?.payload, /8-bit or binary content/);

  const eight = pyParse(buildDsn(input({ ret: 'FULL', original: original8 }), { eightBit: true }));
  t.equal(eight.parts[2]?.type, 'message/rfc822', 'an 8BITMIME path takes the whole message');
  t.equal(get(eight.headers, 'Content-Transfer-Encoding'), '8bit');
  t.equal(eight.parts[2]?.cte, '8bit');

  const binary = pyParse(buildDsn(input({ ret: 'FULL', original: Buffer.from('Subject: x\r\n\r\na\x00b\r\n', 'latin1') }), { eightBit: true }));
  t.equal(binary.parts[2]?.type, 'text/rfc822-headers', 'NUL: binary, header only');
  const longLine = pyParse(buildDsn(input({ ret: 'FULL', original: Buffer.from(`Subject: x\r\n\r\n${'a'.repeat(1200)}\r\n`) })));
  t.equal(longLine.parts[2]?.type, 'text/rfc822-headers', 'a line over 998 octets: header only');

  const lf = Buffer.from('Subject: bare LF\nFrom: a@example.org\n\nbody\n', 'latin1');
  const lfDsn = buildDsn(input({ ret: 'FULL', original: lf }));
  assertCrlf(t, lfDsn);
  t.equal(pyParse(lfDsn).parts[2]?.inner_body, 'body\r\n');
  t.equal(headerBlock(lf).toString(), 'Subject: bare LF\r\nFrom: a@example.org\r\n');
  t.equal(headerBlock(Buffer.from('Subject: no body')).toString(), 'Subject: no body\r\n');
  t.equal(headerBlock(Buffer.from('\r\nbody only')).length, 0);

  const utf8Rcpt = pyParse(
    buildDsn(input({ sender: 'zoë@example.org', recipients: [{ address: 'jürgen@example.de', orcpt: 'utf-8;j\\x{FC}rgen@example.de', action: 'failed', status: '5.1.1' }] })),
  );
  const b = utf8Rcpt.parts[1]?.blocks?.[1];
  t.equal(get(b, 'Final-Recipient'), 'utf-8; j\\x{FC}rgen@example.de', 'RFC 6533 utf-8-addr-xtext keeps the part 7-bit');
  t.equal(get(b, 'Original-Recipient'), 'utf-8; j\\x{FC}rgen@example.de');
  t.equal(utf8Rcpt.parts[0]?.charset, 'utf-8');
  t.match(utf8Rcpt.parts[0]?.payload ? Buffer.from(utf8Rcpt.parts[0].payload, 'latin1').toString('utf8') : '', /<jürgen@example\.de>/);
});

t.test('DSN: inputs cannot inject header or DSN fields', async (t) => {
  const dsn = buildDsn(
    input({
      sender: 'alice@example.org>\r\nBcc: victim@example.net',
      envid: 'QQ+0D+0AInjected-Envid:+20x',
      futureReleaseRequest: 'for;60\r\nInjected-Frr: x',
      recipients: [
        {
          address: 'bob@example.com\r\nInjected-Address: x',
          orcpt: 'rfc822;bob@example.com+0D+0AInjected-Orcpt:+20x',
          action: 'failed',
          status: '5.1.1\r\nInjected-Status: x',
          diagnostic: '550 5.1.1 nope\r\nInjected: x',
          remoteMta: 'mx.example.com\r\nInjected-Mta: x',
        },
        {
          address: 'carol@example.com',
          action: 'failed',
          status: '5.01.001',
          diagnostic: '550-first line\r\n550-second line\n550 third\rline',
        },
      ],
    }),
  );
  assertCrlf(t, dsn);
  const raw = dsn.toString('latin1');
  t.notMatch(raw, /^(Injected|Bcc)/im, 'no line starts a field from the inputs');
  const p = pyParse(dsn);
  t.same(p.defects, []);
  t.equal(all(p.headers, 'Bcc').length, 0);
  t.equal(p.parts.length, 3);
  for (const block of p.parts[1]?.blocks ?? []) {
    t.notOk(
      block.some(([k]) => /^injected/i.test(k)),
      `no injected field in ${block.map(([k]) => k).join(',')}`,
    );
  }
  const [perMessage, bob, carol] = p.parts[1]?.blocks ?? [];
  t.equal(get(perMessage, 'Original-Envelope-Id'), 'QQ Injected-Envid: x', 'decoded xtext, CRLF flattened');
  t.equal(get(bob, 'Original-Recipient'), 'rfc822; bob@example.com Injected-Orcpt: x');
  t.equal(get(bob, 'Status'), '5.0.0', 'an unusable status becomes 5.0.0 (RFC 3461 §6.3 (g))');
  t.equal(get(bob, 'Remote-MTA'), 'dns; mx.example.comInjected-Mta:x', 'only host-name characters kept');
  t.match(get(bob, 'Diagnostic-Code'), /^smtp; 550 5\.1\.1 nope\s+Injected: x$/, 'the second line is a continuation');
  t.match(raw, /Diagnostic-Code: smtp; 550 5\.1\.1 nope\r\n Injected: x\r\n/, 'folded per RFC 3461 §9.2');
  t.equal(get(carol, 'Status'), '5.1.1', 'leading zeros dropped (RFC 3464 §2.3.4)');
  t.match(raw, /Diagnostic-Code: smtp; 550-first line\r\n 550-second line\r\n 550 third\r\n line\r\n/);
});

t.test('DSN: status normalization and refusals', async (t) => {
  const status = (action: 'failed' | 'delayed', s: string): string | undefined =>
    get(pyParse(buildDsn(input({ recipients: [{ address: 'b@example.com', action, status: s }] }))).parts[1]?.blocks?.[1], 'Status');
  t.equal(status('failed', '4.4.7'), '4.4.7', 'a 4.x.x failure is allowed (RFC 3464 §2.3.3 note)');
  t.equal(status('failed', '2.0.0'), '5.0.0');
  t.equal(status('failed', 'garbage'), '5.0.0');
  t.equal(status('delayed', '5.1.1'), '4.0.0');
  t.equal(status('delayed', '4.4.1'), '4.4.1');

  t.throws(() => buildDsn(input({ sender: '' })), /null reverse-path/);
  t.throws(() => buildDsn(input({ recipients: [] })), RangeError);
  t.throws(() => buildDsn(input({ reportingMta: 'bad host\r\nX: y' })), RangeError);
  t.throws(() => buildDsn(input({ messageIdDomain: 'a b' })), RangeError);

  const noExtras = pyParse(buildDsn(input({ envid: undefined, futureReleaseRequest: undefined })));
  const perMessage = noExtras.parts[1]?.blocks?.[0];
  t.equal(get(perMessage, 'Original-Envelope-Id'), undefined, 'no ENVID, no Original-Envelope-Id (RFC 3461 §6.3 (a))');
  t.equal(get(perMessage, 'Future-Release-Request'), undefined);
  t.ok(get(perMessage, 'Arrival-Date'));

  const from = pyParse(buildDsn(input(), { fromAddress: 'postmaster@gw.example.net' }));
  t.equal(get(from.headers, 'From'), 'Mail Delivery System <postmaster@gw.example.net>');
});
