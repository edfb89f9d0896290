/**
 * Relay ordering through the real gateway (dist/main.js) against a scripted upstream
 * (helpers/scripted-upstream.ts), issue 17 §7: what the upstream sends, and when, is fixed
 * by the script, so these paths are tested without timing luck.
 *
 *   - a tagged line held while its rewrite waits (EXPUNGE with the emulated HIGHESTMODSEQ,
 *     RFC 7162 §3.2.7), with the upstream's next responses arriving behind it in the same
 *     write: they reach the client after it, in order;
 *   - a handler that owns the upstream (UID EXPUNGE emulated over an upstream without
 *     UIDPLUS, RFC 4315 §2.1): its internal commands and their data never reach the client,
 *     untagged responses the upstream sends meanwhile do, before the handler's tagged OK,
 *     and a pipelined relayed command waits for the handler to finish;
 *   - a response the client must not see (an unknown tag's) that carries a literal: none
 *     of it, literal and text after it included, reaches the client;
 *   - back-pressure: a client that does not read while the upstream streams a large FETCH
 *     literal: the gateway stops reading the upstream (its socket stalls), its memory stays
 *     bounded, and everything arrives intact once the client reads again.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import { startGateway, type RunningGateway } from './helpers/gateway.js';
import { ScriptedUpstream, scriptedUpstreamInfo, type ScriptedSession } from './helpers/scripted-upstream.js';

let upstream: ScriptedUpstream;
let gw: RunningGateway;

t.before(async () => {
  upstream = await ScriptedUpstream.start();
  // UIDPLUS is emulated; no side connection is opened by what these tests send (no APPEND, no COPY).
  gw = await startGateway(scriptedUpstreamInfo(upstream), { plaintext: true, config: { imap: { warmUpstream: { seconds: 0 } } } });
});

t.teardown(async () => {
  await gw?.stop();
  await upstream?.close();
});

/** A plain-TCP client that reads line by line, literals whole (small ones only). */
class Client {
  private buf = '';
  private waiter: (() => void) | undefined;
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number): Promise<Client> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new Client(socket);
  }

  async line(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nl = this.buf.indexOf('\r\n');
      if (nl >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 2);
        return line;
      }
      if (this.closed) throw new Error(`closed; buffered: ${JSON.stringify(this.buf)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for a line; buffered: ${JSON.stringify(this.buf.slice(0, 200))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Lines up to and including the tagged one for `tag`. */
  async until(tag: string): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line();
      lines.push(l);
      if (l.startsWith(`${tag} `)) return lines;
    }
  }

  send(text: string): void {
    this.socket.write(text);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A client logged in through the gateway, and the upstream connection that login opened. */
async function session(t: Test, user: string): Promise<{ c: Client; up: ScriptedSession }> {
  const c = await Client.connect(gw.imapPort);
  t.match(await c.line(), /^\* OK /);
  c.send(`L LOGIN ${user} secret\r\n`);
  const up = await upstream.nextSession();
  t.equal(up.user, user, 'the upstream login is the client’s');
  const login = await c.until('L');
  t.match(login.at(-1), /^L OK /);
  return { c, up };
}

/**
 * A client logged in and with INBOX selected through the gateway's SELECT (CONDSTORE
 * emulation): 3 messages, UIDs 1-3. With qresync, QRESYNC is enabled first and the SELECT
 * is followed by the session's rescan of the mailbox. Returns the SELECT's lines.
 */
async function selectedSession(t: Test, user: string, qresync: boolean): Promise<{ c: Client; up: ScriptedSession; selected: string[] }> {
  const { c, up } = await session(t, user);
  if (qresync) {
    c.send('E ENABLE QRESYNC\r\n');
    t.same(await c.until('E'), ['* ENABLED QRESYNC', 'E OK ENABLE completed'], 'ENABLE is the gateway’s own (the upstream has no ENABLE)');
  }
  c.send('S SELECT INBOX\r\n');
  const sel = await up.expect(/^SELECT "INBOX"$/);
  await up.send('* 3 EXISTS', '* 0 RECENT', '* OK [UIDVALIDITY 42] UIDs valid', '* OK [UIDNEXT 4] Predicted next UID', `${sel.tag} OK [READ-WRITE] Select completed`);
  if (qresync) {
    // The CONDSTORE session's rescan of the mailbox (condstore-sync.ts), on the same connection.
    const scan = await up.expect(/^UID FETCH 1:\* \(FLAGS\)$/);
    await up.send('* 1 FETCH (UID 1 FLAGS (\\Deleted))', '* 2 FETCH (UID 2 FLAGS ())', '* 3 FETCH (UID 3 FLAGS (\\Deleted))', `${scan.tag} OK Fetch completed`);
  }
  const selected = await c.until('S');
  t.match(selected.at(-1), /^S OK \[READ-WRITE\]/);
  return { c, up, selected };
}

/** The client leaves; resolves once the gateway has closed its upstream connection. */
async function hangUp(c: Client, up: ScriptedSession): Promise<void> {
  c.close();
  await up.closedPromise;
}

const highestModseq = (lines: string[]): number | undefined => {
  for (const l of lines) {
    const m = /\[HIGHESTMODSEQ (\d+)\]/.exec(l);
    if (m) return Number(m[1]);
  }
  return undefined;
};

t.test('a tagged line held for its rewrite: what the upstream sent behind it follows it, in order', async (t) => {
  const { c, up, selected } = await selectedSession(t, 'alice', true);
  const before = highestModseq(selected);
  t.type(before, 'number', 'SELECT reports a HIGHESTMODSEQ');

  // EXPUNGE and a NOOP pipelined: both reach the upstream before anything is answered.
  c.send('X EXPUNGE\r\nN NOOP\r\n');
  const expunge = await up.expect(/^EXPUNGE$/);
  const noop = await up.expect(/^NOOP$/);
  // One write: the EXPUNGE's responses, its tagged OK (held by the gateway until the
  // store has the new mod-sequence), then the NOOP's untagged and tagged responses.
  await up.send('* 3 EXPUNGE', '* 1 EXPUNGE', `${expunge.tag} OK Expunge completed`, '* 1 FETCH (FLAGS (\\Seen))', '* OK [ALERT] behind the held line', `${noop.tag} OK NOOP completed`);
  const lines = await c.until('N');
  t.equal(lines.length, 6, `six lines: ${lines.join(' | ')}`);
  // RFC 7162 §3.2.10: a QRESYNC client gets VANISHED for EXPUNGE (UIDs 3 then 1).
  t.equal(lines[0], '* VANISHED 3');
  t.equal(lines[1], '* VANISHED 1');
  t.match(lines[2], /^X OK \[HIGHESTMODSEQ (\d+)\] Expunge completed$/, 'the tagged OK carries the emulated HIGHESTMODSEQ');
  const after = Number(/HIGHESTMODSEQ (\d+)/.exec(lines[2]!)?.[1]);
  t.ok(after > before!, `HIGHESTMODSEQ moved past the expunges (${before} -> ${after})`);
  // UID 2 is now message 1; its flag change gets the next MODSEQ in a CONDSTORE session (RFC 7162 §3.1.4.1).
  const fetched = /^\* 1 FETCH \(MODSEQ \((\d+)\) FLAGS \(\\Seen\)\)$/.exec(lines[3]!);
  t.ok(fetched, `the FETCH behind the held line comes after it, with a MODSEQ: ${lines[3]}`);
  t.ok(Number(fetched?.[1]) > after, 'its MODSEQ is newer than the EXPUNGE’s HIGHESTMODSEQ');
  t.equal(lines[4], '* OK [ALERT] behind the held line');
  t.equal(lines[5], 'N OK NOOP completed');
  t.same(up.unread, [], 'nothing else went upstream');
  await hangUp(c, up);
});

t.test('an unknown tag’s response with a literal: skipped whole, the next responses relayed', async (t) => {
  const { c, up } = await session(t, 'carol');
  c.send('N NOOP\r\n');
  const noop = await up.expect(/^NOOP$/);
  await up.write(Buffer.from(`ZZ9 OK [ALERT] quoted {11}\r\nhello world and after it\r\n* 2 EXISTS\r\n${noop.tag} OK NOOP completed\r\n`, 'latin1'));
  const lines = await c.until('N');
  t.same(lines, ['* 2 EXISTS', 'N OK NOOP completed'], 'only the responses meant for the client');
  await hangUp(c, up);
});

t.test('a handler owning the upstream: internal commands hidden, untagged data relayed in order, a pipelined command waits', async (t) => {
  const { c, up } = await selectedSession(t, 'bob', false);

  // UID EXPUNGE (emulated: no UIDPLUS upstream) and a relayed CHECK pipelined behind it.
  c.send('U UID EXPUNGE 3\r\nK CHECK\r\n');
  const search = await up.expect(/^UID SEARCH DELETED NOT UID 3$/);
  // The search result is the handler's; an EXISTS that arrives meanwhile is the client's.
  await up.send('* SEARCH 1', '* 4 EXISTS', `${search.tag} OK Search completed`);
  const protect = await up.expect(/^UID STORE 1 -FLAGS\.SILENT \(\\Deleted\)$/);
  await up.send(`${protect.tag} OK Store completed`);
  const exp = await up.expect(/^EXPUNGE$/);
  await up.send('* 3 EXPUNGE', `${exp.tag} OK Expunge completed`);
  const restore = await up.expect(/^UID STORE 1 \+FLAGS\.SILENT \(\\Deleted\)$/);
  // Until the handler is done, the pipelined CHECK has not been sent upstream.
  t.same(up.unread, [], 'CHECK waits while the handler owns the upstream');
  await up.send(`${restore.tag} OK Store completed`);
  const check = await up.expect(/^CHECK$/);
  await up.send(`${check.tag} OK Check completed`);

  const lines = await c.until('K');
  t.same(lines, ['* 4 EXISTS', '* 3 EXPUNGE', 'U OK UID EXPUNGE completed', 'K OK Check completed'], 'only the client’s data, in the upstream’s order, then the two tagged lines in command order');
  t.notOk(lines.some((l) => /SEARCH|^I\d/.test(l)), 'no internal tag or SEARCH result reached the client');
  await hangUp(c, up);
});

t.test('back-pressure: a client that does not read stalls the upstream; memory stays bounded', async (t) => {
  const { c, up } = await selectedSession(t, 'carol', false);

  const total = 128 * 1024 * 1024;
  const rssBefore = gw.rssKiB();
  // The client stops reading, then asks for a large message.
  c.socket.pause();
  c.send('F FETCH 1 BODY[]\r\n');
  const fetch = await up.expect(/^FETCH 1 BODY\[\]$/);
  await up.send(`* 1 FETCH (BODY[] {${total}}`);
  const { firstStall, finished } = up.stream(total, { stallMs: 1500 });
  const stall = await firstStall;
  t.ok(stall.stalled, 'the upstream socket stopped draining: the gateway paused its reads');
  // Kernel socket buffers on both hops and one socket chunk in the gateway: a few MiB each.
  t.ok(stall.written < 48 * 1024 * 1024, `at most 48 MiB of ${total >> 20} MiB got past the upstream socket (${(stall.written / 1048576).toFixed(1)} MiB)`);
  const rssStalled = gw.rssKiB();
  t.ok(rssStalled - rssBefore < 64 * 1024, `gateway RSS grew by ${((rssStalled - rssBefore) / 1024).toFixed(1)} MiB, under 64 MiB, while holding a stalled ${total >> 20} MiB literal`);

  // The client reads again: the whole literal arrives, then the tagged OK after it.
  let received = 0;
  let tail = '';
  const done = new Promise<void>((resolve) => {
    c.socket.removeAllListeners('data');
    c.socket.on('data', (d: string) => {
      received += Buffer.byteLength(d, 'latin1');
      tail = (tail + d).slice(-200);
      if (tail.includes('F OK Fetch completed\r\n')) resolve();
    });
  });
  c.socket.resume();
  await finished;
  await up.send(')', `${fetch.tag} OK Fetch completed`);
  await done;
  const header = `* 1 FETCH (BODY[] {${total}}\r\n`.length;
  t.equal(received, header + total + ')\r\nF OK Fetch completed\r\n'.length, 'every byte of the literal, and nothing else, reached the client');
  await hangUp(c, up);
});
