/**
 * The hand-written SMTP client to the upstream MTA (src/smtp/upstream.ts) and its pool,
 * against the real Postfix of the legacy stack: pipelined envelopes, DATA with
 * dot-stuffing across write boundaries, BDAT with 8-bit content, per-recipient verdicts
 * and DSN parameters. A tiny recording SMTP server checks exact wire bytes and faults.
 */
import t from 'tap';
import net from 'node:net';
import path from 'node:path';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { startLegacyStack, withoutTrace, type LegacyStack } from './helpers/stack.js';
import { UpstreamSmtp, type UpstreamConfig } from '../src/smtp/upstream.js';
import { RelayPool } from '../src/smtp/relay-pool.js';
import { STAGING_SIZE } from '../src/smtp/content-staging.js';
import { UpstreamUnavailable } from '../src/upstream/connect.js';
import { smtpRelayDuration, upstreamConnectFailures } from '../src/metrics/metrics.js';

let stack: LegacyStack;
const opts = { heloName: 'gateway.test', replyTimeoutMs: 20_000 };

t.before(async () => {
  stack = await startLegacyStack({ postfix: true });
});
t.teardown(async () => {
  await stack?.stop();
});

const upstreamCfg = (port: number): UpstreamConfig => ({
  host: '127.0.0.1',
  port,
  tls: 'none',
  tlsOptions: { rejectUnauthorized: true },
  connectTimeoutMs: 5_000,
});




function headers(id: string, subject: string, to = 'alice@example.org'): string {
  return [
    'From: Bob <bob@example.org>',
    `To: <${to}>`,
    `Subject: ${subject}`,
    'Date: Tue, 01 Apr 2025 10:00:00 +0000',
    `Message-ID: <${id}@gateway.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    '',
  ].join('\r\n');
}

/** A recording SMTP server for wire assertions and fault injection. */
interface FakeMta {
  port: number;
  /** Every command line received (without CRLF), in order. */
  lines: string[];
  /** Commands that arrived while a reply to an earlier one was still owed. */
  overlapped: string[];
  /** Each message's content as received (DATA un-stuffed, BDAT chunks joined), latin1. */
  contents: string[];
  close(): Promise<void>;
}

/** stallMs: stop reading for this long when content begins, so the client's writes back up. */
async function fakeMta(o: { ehlo: string[]; delayMs?: number; silent?: boolean; stallMs?: number }): Promise<FakeMta> {
  const lines: string[] = [];
  const overlapped: string[] = [];
  const contents: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write('220 fake.test ESMTP\r\n');
    let buf = '';
    let owed = 0;
    let inData = false;
    /** Bytes of a BDAT chunk still to skip (RFC 3030: they follow the command line at once). */
    let content = '';
    const stall = () => {
      if (!o.stallMs || content !== '') return;
      s.pause();
      setTimeout(() => s.resume(), o.stallMs);
    };
    let chunkLeft = 0;
    let lastChunk = false;
    const endChunks = () => {
      contents.push(content);
      content = '';
      lastChunk = false;
    };
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let i: number;
      for (;;) {
        if (chunkLeft > 0) {
          const take = Math.min(chunkLeft, buf.length);
          content += buf.slice(0, take);
          buf = buf.slice(take);
          chunkLeft -= take;
          if (chunkLeft > 0) break;
          if (lastChunk) endChunks();
        }
        if ((i = buf.indexOf('\r\n')) === -1) break;
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            contents.push(content);
            content = '';
            s.write('250 2.0.0 queued\r\n');
          } else {
            // RFC 5321 §4.5.2: the receiver drops a line's leading dot.
            content += (line.startsWith('.') ? line.slice(1) : line) + '\r\n';
          }
          continue;
        }
        lines.push(line);
        const bdat = /^BDAT (\d+)( LAST)?/i.exec(line);
        if (bdat) {
          stall();
          chunkLeft = Number(bdat[1]);
          lastChunk = bdat[2] !== undefined;
          if (chunkLeft === 0 && lastChunk) endChunks();
        }
        if (o.silent) continue;
        if (owed > 0) overlapped.push(line);
        owed++;
        const verb = line.split(/[ :]/)[0]!.toUpperCase();
        const ehlo = ['fake.test', ...o.ehlo];
        const reply =
          verb === 'EHLO' ? ehlo.map((e, k) => `250${k === ehlo.length - 1 ? ' ' : '-'}${e}`).join('\r\n')
          : verb === 'DATA' ? '354 go ahead'
          : verb === 'QUIT' ? '221 2.0.0 bye'
          : '250 2.1.5 ok';
        setTimeout(() => {
          owed--;
          if (verb === 'DATA') {
            inData = true;
            stall();
          }
          s.write(`${reply}\r\n`);
          if (verb === 'QUIT') s.end();
        }, o.delayMs ?? 0);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    lines,
    overlapped,
    contents,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function histogramCount(mode: string, result: string): Promise<number> {
  const m = await smtpRelayDuration.get();
  return m.values.find((v) => v.metricName === 'lemonade_smtp_relay_duration_seconds_count' && v.labels.mode === mode && v.labels.result === result)?.value ?? 0;
}

t.test('DATA: pipelined envelope, dot-stuffing across writes, a last line without CRLF', async (t) => {
  const before = await stack.messageCount('alice');
  const conn = await UpstreamSmtp.open(upstreamCfg(stack.smtpPort), { ...opts, preferChunking: false });
  t.ok(conn.has('pipelining') && conn.has('CHUNKING'), 'Postfix offers PIPELINING and CHUNKING');
  t.equal(conn.extensions.get('SIZE'), '10240000', 'EHLO parameters kept');
  t.equal(conn.extensions.get('PIPELINING'), '');
  t.equal(conn.usesChunking, false, 'chunking turned off by option');
  const [mail, rcpt] = await Promise.all([
    conn.mail('bob@example.org', [['BODY', '8BITMIME']]),
    conn.rcpt('alice@example.org', []),
  ]);
  t.same(mail, { code: 250, enhanced: '2.1.0', lines: ['Ok'] });
  t.same(rcpt, { code: 250, enhanced: '2.1.5', lines: ['Ok'] });
  const start = await conn.startContent();
  t.equal(start.code, 354);
  t.notOk(conn.usable, 'not reusable mid-content');
  const body = [
    '.leading dot',
    '..two dots',
    '.',
    'a line with . in the middle',
    'caf\u00e9 8-bit',
    '.',
    'last line without CRLF',
  ].join('\r\n');
  const message = Buffer.from(headers('data-' + Date.now(), 'dot stuffing') + body, 'utf8');
  // Cut at awkward places: right before a line-initial dot, between CR and LF, and at a dot.
  const cuts: number[] = [];
  const firstDot = message.indexOf('\r\n.leading') + 2;
  cuts.push(firstDot, message.indexOf('\r\n..two') + 1, message.indexOf('\r\n.\r\n') + 2, message.indexOf('\r\n.\r\nlast') + 3);
  let prev = 0;
  for (const cut of [...cuts.sort((a, b) => a - b), message.length]) {
    conn.writeContent(message.subarray(prev, cut));
    prev = cut;
  }
  const final = await conn.endContent();
  t.equal(final.code, 250, 'queued');
  t.equal(final.enhanced, '2.0.0');
  t.match(final.lines[0], /^Ok: queued as /);
  t.ok(conn.usable, 'usable after the final reply');
  const delivered = await stack.newestMessage('alice', before + 1);
  const expected = Buffer.concat([message, Buffer.from('\r\n')]);
  t.equal(withoutTrace(delivered).toString('latin1'), expected.toString('latin1'), 'delivered byte-identical (CRLF added to the last line)');
  t.ok(withoutTrace(delivered).equals(expected));
  t.ok((await histogramCount('data', 'accepted')) >= 1, 'relay duration observed');
  await conn.quit();
  t.notOk(conn.usable);
});

t.test('BDAT: 8-bit content in coalesced and large chunks', async (t) => {
  const before = await stack.messageCount('alice');
  const conn = await UpstreamSmtp.open(upstreamCfg(stack.smtpPort), opts);
  t.equal(conn.usesChunking, true);
  const mail = conn.mail('bob@example.org', [['BODY', '8BITMIME']]);
  const rcpt = conn.rcpt('alice@example.org', []);
  t.equal((await mail).code, 250);
  t.equal((await rcpt).code, 250);
  t.equal((await conn.startContent()).code, 354);
  // Lines of bytes from every range but CR, LF and NUL, plus dot lines that must stay unstuffed.
  const lines: Buffer[] = [];
  for (let i = 0; i < 1500; i++) {
    const raw = randomBytes(100);
    for (let k = 0; k < raw.length; k++) if (raw[k]! < 0x20) raw[k] = raw[k]! + 0x40;
    lines.push(i % 100 === 0 ? Buffer.from('.') : raw, Buffer.from('\r\n'));
  }
  const message = Buffer.concat([Buffer.from(headers('bdat-' + Date.now(), 'binary-ish')), ...lines]);
  t.ok(message.length > 150_000, 'several chunks worth');
  // Small writes (coalesced), then one larger than a chunk, then the rest.
  let pos = 0;
  for (let i = 0; i < 50; i++, pos += 37) conn.writeContent(message.subarray(pos, pos + 37));
  conn.writeContent(message.subarray(pos, pos + 100_000));
  pos += 100_000;
  if (!conn.writeContent(message.subarray(pos))) await new Promise<void>((r) => conn.onceDrain(r));
  const final = await conn.endContent();
  t.equal(final.code, 250, 'queued');
  t.equal(final.enhanced, '2.0.0');
  const delivered = await stack.newestMessage('alice', before + 1);
  t.ok(withoutTrace(delivered).equals(message), 'delivered byte-identical');
  t.ok((await histogramCount('bdat', 'accepted')) >= 1);
  await conn.quit();
});

/** Short lines (by default about three staging buffers' worth), a third of them dot-led: dots on every buffer edge. */
function dottedMessage(id: string, seed: number, atLeast = 3 * STAGING_SIZE + 12_345): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < atLeast; i++) {
    const n = (i * 7919 + seed) % 97;
    const line = (n % 3 === 0 ? '.' : n % 3 === 1 ? '..' : '') + 'x'.repeat(n) + `${seed}:${i}`;
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.from(headers(id, 'staging') + lines.join('\r\n') + '\r\n');
}

/** One transaction on its own connection, the content written in client-sized pieces as the session does. */
async function relayThrough(port: number, to: string, message: Buffer, preferChunking: boolean): Promise<number> {
  const conn = await UpstreamSmtp.open(upstreamCfg(port), { ...opts, preferChunking });
  const [mail, rcpt] = await Promise.all([conn.mail('bob@example.org', []), conn.rcpt(to, [])]);
  if (mail.code !== 250 || rcpt.code !== 250) throw new Error(`envelope refused: ${mail.code} ${rcpt.code}`);
  if ((await conn.startContent()).code !== 354) throw new Error('content refused');
  for (let pos = 0, step = 1; pos < message.length; pos += step, step = ((step * 31 + 7) % 70_000) + 1) {
    if (!conn.writeContent(message.subarray(pos, pos + step))) await new Promise<void>((r) => conn.onceDrain(r));
  }
  const final = await conn.endContent();
  await conn.quit();
  return final.code;
}

t.test('staging buffers: messages over several of them, sent at once, DATA and BDAT, come out byte-identical', async (t) => {
  // Content is copied into reused staging buffers (src/smtp/content-staging.ts); a stuffed
  // dot lost at a buffer's edge, or a buffer reused by the other transaction, would show
  // here as a corrupted message.
  for (const round of [1, 2]) {
    const forAlice = dottedMessage(`staging-a${round}-${Date.now()}`, round);
    const forCarol = dottedMessage(`staging-c${round}-${Date.now()}`, round + 10);
    const before = [await stack.messageCount('alice'), await stack.messageCount('carol')];
    const codes = await Promise.all([
      relayThrough(stack.smtpPort, 'alice@example.org', forAlice, false),
      relayThrough(stack.smtpPort, 'carol@example.org', forCarol, true),
    ]);
    t.same(codes, [250, 250], `round ${round}: both queued`);
    const gotAlice = withoutTrace(await stack.newestMessage('alice', before[0]! + 1));
    const gotCarol = withoutTrace(await stack.newestMessage('carol', before[1]! + 1));
    t.ok(gotAlice.equals(forAlice), `round ${round}: DATA (dot-stuffed) message byte-identical`);
    t.ok(gotCarol.equals(forCarol), `round ${round}: BDAT message byte-identical`);
  }
});

t.test('staging buffers: an MTA that stops reading makes writes queue, and the queued bytes stay intact', async (t) => {
  // Loopback writes usually reach the kernel at once; a stalled reader makes them wait in
  // the socket's queue, where a staging buffer handed back too early would be overwritten.
  // Bigger than the kernel's socket buffers (tcp_wmem's 4 MiB maximum here), so they do wait.
  for (const chunking of [false, true]) {
    const fake = await fakeMta({ ehlo: ['PIPELINING', ...(chunking ? ['CHUNKING'] : [])], stallMs: 400 });
    const messages = [dottedMessage('stall-1', 3, 6 * 1024 * 1024), dottedMessage('stall-2', 4, 6 * 1024 * 1024)];
    const codes = await Promise.all(messages.map((m) => relayThrough(fake.port, 'b@example.org', m, chunking)));
    t.same(codes, [250, 250]);
    // Compared as a whole (a diff of two 6 MB strings would take tap minutes).
    const intact = messages.map((m) => fake.contents.includes(m.toString('latin1')));
    t.same(intact, [true, true], `${chunking ? 'BDAT' : 'DATA'}: both contents as sent`);
    t.equal(fake.contents.length, 2);
    if (chunking) {
      const sizes = fake.lines.filter((l) => l.startsWith('BDAT')).map((l) => l.split(' ').slice(1).join(' '));
      const full = messages.reduce((n, m) => n + Math.floor(m.length / STAGING_SIZE), 0);
      t.equal(sizes.filter((s) => s === String(STAGING_SIZE)).length, full, 'full chunks are staging-sized');
      t.equal(sizes.filter((s) => s.endsWith('LAST')).length, 2, 'one LAST chunk per message');
    }
    await fake.close();
  }
});

t.test("per-recipient verdicts: Postfix's 5xx for one recipient, 250 for another", async (t) => {
  const conn = await UpstreamSmtp.open(upstreamCfg(stack.smtpPort), opts);
  const mail = conn.mail('bob@example.org', []);
  // The stack's Postfix relays anything for 127.0.0.0/8 (permit_mynetworks), so an
  // unknown domain is accepted here; a malformed address is what it refuses itself.
  const bad = conn.rcpt('a b@example.org', []);
  const good = conn.rcpt('alice@example.org', []);
  t.equal((await mail).code, 250);
  t.same(await bad, { code: 501, enhanced: '5.1.3', lines: ['Bad recipient address syntax'] });
  t.same(await good, { code: 250, enhanced: '2.1.5', lines: ['Ok'] });
  t.same(await conn.rset(), { code: 250, enhanced: '2.0.0', lines: ['Ok'] });
  t.ok(conn.usable);
  t.equal((await conn.noop()).code, 250);
  await t.rejects(conn.rcpt('x@example.org\r\nRSET', []), /line break/, 'no command injection');
  await conn.quit();
});

t.test('per-recipient NOTIFY/ORCPT go upstream exactly as given', async (t) => {
  // On the wire: a recording MTA.
  const fake = await fakeMta({ ehlo: ['PIPELINING', 'DSN', 'SIZE 1000', '8BITMIME'] });
  const conn = await UpstreamSmtp.open(upstreamCfg(fake.port), opts);
  t.equal(conn.usesChunking, false, 'no CHUNKING advertised: DATA');
  await Promise.all([
    conn.mail('carol@example.org', [['RET', 'HDRS'], ['ENVID', 'QQ314159']]),
    conn.rcpt('bob@example.org', [['NOTIFY', 'SUCCESS,DELAY'], ['ORCPT', 'rfc822;bob+2Btag@example.org']]),
    conn.rcpt('alice@example.org', [['NOTIFY', 'NEVER']]),
    conn.rcpt('carol@example.org', []),
  ]);
  t.equal((await conn.startContent()).code, 354);
  conn.writeContent(Buffer.from('Subject: x\r\n\r\n.\r\n'));
  t.equal((await conn.endContent()).code, 250);
  await conn.quit();
  t.same(fake.lines, [
    'EHLO gateway.test',
    'MAIL FROM:<carol@example.org> RET=HDRS ENVID=QQ314159',
    'RCPT TO:<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Btag@example.org',
    'RCPT TO:<alice@example.org> NOTIFY=NEVER',
    'RCPT TO:<carol@example.org>',
    'DATA',
    'QUIT',
  ]);
  t.ok(fake.overlapped.length >= 3, 'the envelope was pipelined');
  await fake.close();

  // And Postfix acts on them per recipient: a success DSN for bob only, ORCPT logged.
  const carolBefore = await stack.messageCount('carol');
  const real = await UpstreamSmtp.open(upstreamCfg(stack.smtpPort), opts);
  const id = `dsn-${Date.now()}`;
  const replies = await Promise.all([
    real.mail('carol@example.org', [['RET', 'HDRS']]),
    real.rcpt('bob@example.org', [['NOTIFY', 'SUCCESS'], ['ORCPT', 'rfc822;bob+2Btag@example.org']]),
    real.rcpt('alice@example.org', [['NOTIFY', 'NEVER']]),
  ]);
  t.same(replies.map((r) => r.code), [250, 250, 250]);
  t.equal((await real.startContent()).code, 354);
  real.writeContent(Buffer.from(headers(id, 'dsn per recipient', 'bob@example.org') + 'hello\r\n'));
  t.equal((await real.endContent()).code, 250);
  await real.quit();
  const dsn = (await stack.newestMessage('carol', carolBefore + 1)).toString('latin1');
  t.match(dsn, /report-type=delivery-status/i, 'carol got a delivery status notification');
  t.match(dsn, /Original-Recipient: rfc822;\s*bob\+tag@example\.org/i, 'carrying the ORCPT');
  t.match(dsn, /Action: (delivered|relayed)/i, 'a success report (relayed: LMTP has no DSN)');
  t.notMatch(dsn, /Final-Recipient: rfc822;\s*alice@example\.org/i, 'nothing for the NOTIFY=NEVER recipient');
  const log = await readFile(path.join(stack.dir, 'postfix', 'postfix.log'), 'latin1');
  const qid = new RegExp(`(\\w+): message-id=<${id}@gateway\\.test>`).exec(log)?.[1];
  t.ok(qid, 'Postfix logged the message');
  t.match(log, new RegExp(`${qid}: sender delivery status notification`), 'Postfix sent the DSN for that message');
});

t.test('without PIPELINING only one command is outstanding', async (t) => {
  const fake = await fakeMta({ ehlo: ['8BITMIME'], delayMs: 30 });
  const conn = await UpstreamSmtp.open(upstreamCfg(fake.port), opts);
  const replies = await Promise.all([conn.mail('a@example.org', []), conn.rcpt('b@example.org', []), conn.rcpt('c@example.org', []), conn.rset()]);
  t.same(replies.map((r) => r.code), [250, 250, 250, 250]);
  t.same(fake.overlapped, [], 'each command waited for its reply');
  t.same(fake.lines.slice(1), ['MAIL FROM:<a@example.org>', 'RCPT TO:<b@example.org>', 'RCPT TO:<c@example.org>', 'RSET']);
  await conn.quit();
  await fake.close();
});

t.test('failures: refused, a silent MTA, a dead connection', async (t) => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const failures = async () =>
    (await upstreamConnectFailures.get()).values.find((v) => v.labels.protocol === 'submission' && v.labels.reason === 'refused')?.value ?? 0;
  const refusedBefore = await failures();
  const err = await UpstreamSmtp.open(upstreamCfg(port), opts).catch((e: unknown) => e);
  t.type(err, UpstreamUnavailable);
  t.equal((err as UpstreamUnavailable).reason, 'refused');
  t.equal(await failures(), refusedBefore + 1, 'counted as a submission connect failure');

  const silent = await fakeMta({ ehlo: [], silent: true });
  const timeout = await UpstreamSmtp.open(upstreamCfg(silent.port), { ...opts, replyTimeoutMs: 200 }).catch((e: unknown) => e);
  t.type(timeout, UpstreamUnavailable);
  t.equal((timeout as UpstreamUnavailable).reason, 'timeout', 'no EHLO reply in time');
  await silent.close();

  const fake = await fakeMta({ ehlo: ['PIPELINING'] });
  const conn = await UpstreamSmtp.open(upstreamCfg(fake.port), opts);
  await fake.close();
  const dead = await conn.mail('a@example.org', []).catch((e: unknown) => e);
  t.type(dead, UpstreamUnavailable, 'a closed connection rejects, never a fake reply');
  t.notOk(conn.usable);
});

t.test('the pool reuses one connection for sequential transactions', async (t) => {
  const before = await stack.messageCount('bob');
  const pool = new RelayPool(upstreamCfg(stack.smtpPort), { ...opts, poolSize: 2, checkAfterMs: 0 });
  const send = async (conn: UpstreamSmtp, n: number) => {
    const [m, r] = await Promise.all([conn.mail('alice@example.org', []), conn.rcpt('bob@example.org', [])]);
    t.same([m.code, r.code], [250, 250]);
    t.equal((await conn.startContent()).code, 354);
    conn.writeContent(Buffer.from(headers(`pool-${n}-${Date.now()}`, `pooled ${n}`, 'bob@example.org') + `message ${n}\r\n`));
    t.equal((await conn.endContent()).code, 250);
  };
  const first = await pool.acquire();
  await send(first, 1);
  pool.release(first, true);
  t.equal(pool.idleCount, 1);
  const second = await pool.acquire();
  t.equal(second, first, 'the same connection (checked with NOOP first)');
  await send(second, 2);
  pool.release(second, true);
  t.equal(await stack.waitForMessageCount('bob', 'INBOX', before + 2, 20_000), before + 2, 'both delivered');

  // A connection that died while idle is not handed out.
  const idle = await pool.acquire();
  pool.release(idle, true);
  idle.destroy();
  const fresh = await pool.acquire();
  t.not(fresh, idle, 'a dead idle connection is replaced');
  pool.release(fresh, false);
  t.equal(pool.idleCount, 0, 'not reusable: closed');
  await pool.close();
});
