/**
 * Fuzzing the gateway's IMAP relay and submission front against the real legacy stack
 * (issue 15 §5). Used by bench/fuzz.ts (any count; its CI form, test/fuzz.test.ts, is out of the suite until the defects it still finds are fixed).
 *
 * Inputs are generated from a seed (test/helpers/prng.ts): worker w of a run draws from
 * prng(seed + w), so one seed gives the same inputs on every run (only the interleaving of
 * the workers' connections differs). Each input is real client traffic (transcript lines
 * of imapflow/Thunderbird-style sessions, SMTP transactions), mutated or not, or one of
 * the hand-picked hostile shapes: literals of every form ({n}, {n+}, ~{n}, ~{n+}), sizes
 * that are no announcement at all ({abc}, {-1}) or too large, and commands the upstream
 * rejects before their literal, whose literal holds a valid command `Xk CREATE <prefix>k`.
 *
 * The client side follows the framing of RFC 3501 §4.3/§7.5, RFC 7888 and RFC 3516 on its
 * own (announcement()), not the gateway's lexer, so a framing disagreement shows up as a
 * failure instead of being agreed on. Checks made while running:
 *   - every complete command gets a tagged answer with the tag it sent, or an untagged
 *     BYE and the end of the connection (too many bad commands, a too-large {n+}, LOGOUT);
 *     no tagged line ever carries a tag this client did not send;
 *   - a synchronizing literal is sent only after a "+"; a tagged answer instead ends the command;
 *   - every SMTP command line and every message end gets exactly one reply with a valid
 *     code (2xx-5xx, the same code on every line of a multi-line reply);
 *   - a well-behaved imapflow session and nodemailer client keep working alongside (canaries());
 *   - the gateway's RSS (VmRSS) is sampled throughout.
 * Checks made afterwards (afterChecks()): no mailbox named <prefix><k> exists (LIST at
 * Dovecot directly and the Maildir on disk), neither Dovecot's log nor the gateway's
 * mentions one, the gateway logged no "upstream answered an unknown tag"; the session and
 * upstream gauges return to 0; imapflow and nodemailer still work; only messages whose
 * transaction the fuzzer completed with 250 were delivered, and each of those that had a
 * plain envelope was delivered once.
 */
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { prng } from './prng.js';
import { RawClient, openSocket } from './raw-client.js';
import { RawSmtp, type Reply } from './smtp-raw.js';
import { masterClient, type LegacyStack } from './stack.js';
import { metricValue, type RunningGateway } from './gateway.js';
import { formatSequenceSet } from '../../src/imap/protocol/sequence-set.js';

/** Literal and message size limits the fuzzing gateway runs with (fuzzGatewayConfig); every size up to them is really sent. */
export const FUZZ_MAX_LITERAL = 1024 * 1024;
export const FUZZ_MAX_MESSAGE = 1024 * 1024;

/**
 * The gateway config the fuzzer expects. Warm upstreams off: a client that vanishes
 * without LOGOUT would otherwise keep its upstream connection open for 30 s, and the
 * gauges could not be asked to return to 0 within seconds. Small literal/message limits:
 * so that the fuzzer can send every announced size below them and must see every size
 * above them refused.
 */
export function fuzzGatewayConfig(): Record<string, unknown> {
  return {
    imap: {
      warmUpstream: { seconds: 0 },
      limits: { maxLiteralSize: FUZZ_MAX_LITERAL },
      // Some malformed lines leave Dovecot waiting in silence for a literal; the gateway
      // then ends the session. Within the fuzzer's 10 s answer limit, and short enough that
      // the APPEND lock such a command holds does not make the next commands time out.
      timeouts: { upstreamContinuationSeconds: 3 },
    },
    submission: {
      limits: { maxMessageSize: FUZZ_MAX_MESSAGE },
      // alice@example.org is alice's own sender address, as for any deployment with one mail domain.
      senderPolicy: { mode: 'own', domains: ['example.org'] },
      // Mutated AUTH lines fail; the growing per-address delay would stall every fuzzing session from 127.0.0.1.
      auth: { failureDelayMs: 0 },
    },
    // Debug logs a line per command: 20,000 inputs would write tens of MB and cost CPU.
    log: { level: 'info' },
  };
}

export interface FuzzOptions {
  seed: number;
  imapInputs: number;
  smtpInputs: number;
  /** Concurrent IMAP / SMTP client connections. */
  imapWorkers?: number;
  smtpWorkers?: number;
  /** Inputs on one connection at most; each connection takes a random count up to this. */
  maxInputsPerConnection?: number;
  /** Progress lines (and the seed) go here. */
  log?: (line: string) => void;
  /**
   * SMTP inputs keep pace with the IMAP ones (an SMTP worker waits while its side is
   * further along, as a fraction of its inputs). Long runs need it: SMTP inputs are cheap
   * for the gateway but each accepted message costs Postfix and Dovecot's LMTP a delivery,
   * and unpaced they leave a backlog that starves the IMAP side of CPU for hours.
   */
  paceSmtp?: boolean;
  /**
   * Keeps Dovecot's mailboxes small (mailboxHousekeeping()): long runs need it, or the
   * cost of each input grows with the mailboxes the fuzzer itself fills.
   */
  housekeeping?: boolean;
}

export interface FuzzFailure {
  proto: 'imap' | 'smtp' | 'after';
  /** worker/connection/input, with the seed: enough to find the input again. */
  where: string;
  what: string;
  /** The input's bytes (JSON-escaped, shortened). */
  input: string;
}

export interface FuzzRun {
  seed: number;
  /** Marks this run's mailboxes and messages. */
  runId: string;
  /** Mailboxes named prefix + digits must never exist: only smuggled commands create them. */
  smugglePrefix: string;
  failures: FuzzFailure[];
  /** All failures counted; `failures` keeps the first MAX_KEPT. */
  failureCount: number;
  imap: { inputs: number; connections: number; byes: number; smuggleAttempts: number };
  smtp: {
    inputs: number;
    connections: number;
    /** Markers of messages the gateway answered 250 to. */
    acked: Set<string>;
    /** Acknowledged markers of plain transactions (envelope not mutated, a local recipient accepted): must be delivered. */
    mustDeliver: Map<string, string[]>;
    smuggleAttempts: number;
  };
  /** Marked messages housekeeping took out of the mailboxes ("user:marker" → copies): delivered, and counted by afterChecks. */
  delivered: Map<string, number>;
  /** Work the well-behaved sessions got done meanwhile (canaries()). */
  wellBehaved: { imapRounds: number; messages: number };
  rssStartKiB: number;
  rssMaxKiB: number;
  ms: number;
}

const MAX_KEPT = 50;
const CRLF = Buffer.from('\r\n');
/**
 * Dovecot answers in milliseconds here; 10 s of silence under load means the answer is not
 * coming. FUZZ_IMAP_TIMEOUT_MS raises it for long runs on a machine shared with other work.
 */
const IMAP_TIMEOUT_MS = Number(process.env.FUZZ_IMAP_TIMEOUT_MS ?? 10_000);
const SMTP_TIMEOUT_MS = 30_000;

// ---- shared ------------------------------------------------------------------------

type Rng = () => number;

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)]!;
}

function int(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

/** Picks a generator kind by weight. */
function weighted<K extends string>(rng: Rng, weights: Record<K, number>): K {
  const entries = Object.entries(weights) as Array<[K, number]>;
  let r = rng() * entries.reduce((s, [, w]) => s + w, 0);
  for (const [k, w] of entries) {
    r -= w;
    if (r < 0) return k;
  }
  return entries[entries.length - 1]![0];
}

function show(data: Buffer | Buffer[]): string {
  const b = Array.isArray(data) ? Buffer.concat(data) : data;
  const s = JSON.stringify(b.subarray(0, 400).toString('latin1'));
  return b.length > 400 ? `${s}... (${b.length} bytes)` : s;
}

/** Bytes that mean something to an IMAP or SMTP parser, for insertions. */
const SPECIAL = ['(', ')', '{', '}', '"', '\\', '*', '%', '[', ']', '<', '>', '~', '+', ' ', '\0', '\r', ':', '.', ',', '-', '\x7f', '\xff', '=', '@', '\t'];
const EXTREME_NUMBERS = ['0', '1', '-1', '4294967295', '4294967296', '99999999999999999999', '*', '1:*', '2147483648', ''];

/**
 * Byte-level mutations of one line's text (no CR/LF ends: the caller frames lines).
 * `protect` leading bytes (a tag and its space) are never touched, so the answer's tag
 * stays predictable. `splice` lines are other transcript lines to take pieces from.
 */
export function mutate(rng: Rng, text: Buffer, protect: number, splice: readonly string[]): Buffer {
  let b = Buffer.from(text);
  const rounds = int(rng, 1, 4);
  for (let r = 0; r < rounds; r++) {
    const head = b.subarray(0, protect);
    let s = b.subarray(protect).toString('latin1');
    const at = int(rng, 0, s.length);
    switch (int(rng, 0, 8)) {
      case 0: // flip a byte
        if (s.length > 0) {
          const i = Math.min(at, s.length - 1);
          s = s.slice(0, i) + String.fromCharCode(s.charCodeAt(i) ^ (1 << int(rng, 0, 7))) + s.slice(i + 1);
        }
        break;
      case 1: // insert a meaningful byte
        s = s.slice(0, at) + pick(rng, SPECIAL) + s.slice(at);
        break;
      case 2: // delete a span
        s = s.slice(0, at) + s.slice(at + int(rng, 1, 12));
        break;
      case 3: {
        // duplicate a span
        const len = int(rng, 1, 20);
        s = s.slice(0, at) + s.slice(at, at + len) + s.slice(at);
        break;
      }
      case 4: // a number becomes an extreme one
        s = s.replace(/\d+/, pick(rng, EXTREME_NUMBERS));
        break;
      case 5: {
        // splice in a token of another line
        const other = pick(rng, splice).split(' ');
        s = s.slice(0, at) + ' ' + pick(rng, other) + s.slice(at);
        break;
      }
      case 6: // truncate
        s = s.slice(0, at);
        break;
      case 7: {
        // swap the case of a span (commands and keywords are case-insensitive)
        const len = int(rng, 1, 10);
        const span = s.slice(at, at + len);
        s = s.slice(0, at) + (rng() < 0.5 ? span.toLowerCase() : span.toUpperCase()) + s.slice(at + len);
        break;
      }
      case 8: // repeat a piece many times (long lines, deep nesting)
        s = s.slice(0, at) + pick(rng, ['(', ')', '"', 'A', ' ', '\\', '{1}', '1,']).repeat(int(rng, 10, rng() < 0.1 ? 5000 : 200)) + s.slice(at);
        break;
    }
    // Framing stays the caller's: no line ends inside a line.
    b = Buffer.concat([head, Buffer.from(s.replace(/\n/g, ' '), 'latin1')]);
  }
  return b;
}

// ---- IMAP: framing -------------------------------------------------------------------

export interface Announcement {
  size: number;
  sync: boolean;
  binary: boolean;
}

/**
 * The literal a command segment announces, per RFC 3501 §9 (literal = "{" number "}" CRLF),
 * RFC 7888 §3 ({n+}) and RFC 3516 §4.1 (~{n}): the segment, without its line end (LF, with
 * one CR before it), ends in such a token outside a quoted string. Quoting follows
 * RFC 3501's quoted / quoted-specials (a backslash escapes the next byte inside quotes).
 */
export function announcement(segment: Buffer): Announcement | undefined {
  let end = segment.length;
  if (segment[end - 1] === 0x0a) end--;
  if (segment[end - 1] === 0x0d) end--;
  const s = segment.subarray(0, end).toString('latin1');
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted && c === '\\') i++;
    else if (c === '"') quoted = !quoted;
  }
  if (quoted) return undefined;
  const m = /(~?)\{(\d+)(\+?)\}$/.exec(s);
  if (!m) return undefined;
  return { size: Number(m[2]), sync: m[3] === '', binary: m[1] === '~' };
}

/** A command: line segments (each ending in CRLF) and the data of the literals they announce. */
export interface ImapInput {
  kind: string;
  segments: Buffer[];
  literals: Buffer[];
  /** Sends DONE when the gateway says "+" with no literal pending (IDLE). */
  idle?: boolean;
  smuggle?: boolean;
}

/** A literal in one of its four forms, and the command text before it. */
const LITERAL_FORMS = [
  (n: number) => `{${n}}`,
  (n: number) => `{${n}+}`,
  (n: number) => `~{${n}}`,
  (n: number) => `~{${n}+}`,
];

/** Lines of real client sessions after login (imapflow, Thunderbird, mutt, RFC examples). */
const IMAP_AUTHED = [
  'CAPABILITY',
  'NOOP',
  'ID ("name" "fuzz" "version" "1.0")',
  'ID NIL',
  'NAMESPACE',
  'LIST "" "*"',
  'LIST "" "%"',
  'LIST "" INBOX',
  'LSUB "" "*"',
  'LIST (SPECIAL-USE) "" "*"',
  'STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)',
  'STATUS fzok (MESSAGES RECENT)',
  'STATUS INBOX (HIGHESTMODSEQ)',
  'SELECT INBOX',
  'SELECT INBOX',
  'SELECT INBOX',
  'EXAMINE INBOX',
  'SELECT fzok',
  'SELECT INBOX (CONDSTORE)',
  'SELECT INBOX (QRESYNC (1 1 1:5))',
  'ENABLE QRESYNC',
  'ENABLE CONDSTORE',
  'FETCH 1:* (FLAGS UID)',
  'FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE)])',
  'FETCH 1:3 (UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)',
  'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)',
  'UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE 1 VANISHED)',
  'FETCH 1 BODY.PEEK[]',
  'FETCH 2 BODY[1]<0.100>',
  'FETCH 1:2 (MODSEQ FLAGS)',
  'FETCH 1 BINARY.PEEK[1]',
  'STORE 1 +FLAGS (\\Seen)',
  'STORE 1:2 -FLAGS.SILENT (\\Flagged)',
  'UID STORE 1:* (UNCHANGEDSINCE 1) +FLAGS (\\Answered)',
  'SEARCH ALL',
  'SEARCH UNSEEN SINCE 1-Jan-2020',
  'UID SEARCH MODSEQ 1',
  'SEARCH OR FROM alice SUBJECT fuzz',
  'SEARCH CHARSET UTF-8 TEXT hello',
  'COPY 1 fzok',
  'UID COPY 1:2 fzok',
  'CHECK',
  'CLOSE',
  'UNSELECT',
  'EXPUNGE',
  'CREATE fzok/sub',
  'DELETE fzok/sub',
  'RENAME fzok/sub fzok/sub2',
  'SUBSCRIBE fzok',
  'UNSUBSCRIBE fzok',
  'GENURLAUTH "imap://alice@localhost/INBOX/;uid=1;urlauth=submit+alice" INTERNAL',
  'URLFETCH "imap://alice@localhost/INBOX/;uid=1;urlauth=submit+alice:internal:0123456789abcdef0123456789abcdef"',
  'RESETKEY',
  'IDLE',
  'LOGIN alice password',
  'AUTHENTICATE PLAIN',
  'STARTTLS',
];

/** Lines of real client sessions before login. LOGIN with a wrong password is rare: each costs the gateway's 1 s delay. */
const IMAP_PREAUTH = ['CAPABILITY', 'NOOP', 'ID NIL', 'ID ("name" "fuzz")', 'STARTTLS', 'AUTHENTICATE PLAIN', 'AUTHENTICATE LOGIN', 'AUTHENTICATE XOAUTH2', 'ENABLE QRESYNC', 'SELECT INBOX'];

/** Commands the upstream rejects before the literal that ends them ("LIT" is the literal). */
const REJECTED_BEFORE_LITERAL = [
  'APPEND INBOX (\\Bogus\\) LIT',
  'APPEND INBOX (\\Seen \\Bogus\\) LIT',
  'APPEND INBOX "32-Jan-2020 00:00:00 +0000" LIT',
  'APPEND INBOX (\\Seen) "not a date" LIT',
  'APPEND INBOX () "01-Jan-2020 25:61:61 +9999" LIT',
  'APPEND INBOX (\\Seen) "01-Jan-2020 00:00:00 +0000" (\\Bogus\\) LIT',
  'APPEND "no/such/box" LIT',
  'APPEND INBOX (\\Bogus\\) CATENATE (TEXT LIT',
  'STATUS INBOX (BOGUS) LIT',
  'STATUS INBOX (MESSAGES BOGUS) LIT',
  'SEARCH BOGUSKEY LIT',
  'UID SEARCH NOSUCHKEY LIT',
  'SEARCH SINCE 45-Foo-2020 TEXT LIT',
  'FETCH 1 (NOSUCHITEM) LIT',
  'FETCH 1:x FLAGS LIT',
  'STORE 1 +FLAGS (\\Bogus\\) LIT',
  'STORE 1 BOGUS (\\Seen) LIT',
  'COPY x:y LIT',
  'SELECT INBOX (BOGUS) LIT',
  'LIST "" "*" (BOGUS) LIT',
  'EXPUNGE LIT',
  'NOOP LIT',
  'FROBNICATE LIT',
  'LOGIN alice password LIT',
];

/** Things inside braces that are not literal announcements, or sizes the gateway must refuse. */
const BAD_SIZES = ['{abc}', '{}', '{-1}', '{1 }', '{ 1}', '{1+ }', '{+1}', '{0x10}', '{1.5}', '{5}x', '{5} ', '~{}', '{5++}', '{5-}', '"{5}"', '"a {5}', '{5}}', '{{5}', '~~{5}'];
const HUGE_SIZES = [String(FUZZ_MAX_LITERAL + 1), '4294967296', '99999999999', '999999999999999999999999'];

export class ImapGenerator {
  private k = 0;
  constructor(
    private readonly rng: Rng,
    /** Mailbox names this prefix + digits are created only by a command smuggled in a literal. */
    private readonly prefix: string,
    private readonly worker: number,
  ) {}

  /** A valid IMAP command that creates a mailbox nobody may create, as literal content. */
  smugglePayload(): Buffer {
    const k = `${this.worker}x${this.k++}`;
    const cmd = `X${k} CREATE ${this.prefix}${k.replace('x', '0')}`;
    return Buffer.from(
      pick(this.rng, [
        `${cmd}\r\n`,
        cmd,
        `From: a@example.org\r\nSubject: smuggle\r\n\r\n${cmd}\r\n`,
        `${cmd}\r\nX${k}b NOOP\r\n`,
        `\r\n${cmd}\r\n`,
      ]),
    );
  }

  next(tag: string, authed: boolean): ImapInput {
    const rng = this.rng;
    const corpus = authed ? IMAP_AUTHED : [...IMAP_PREAUTH, ...pick(rng, [IMAP_PREAUTH, IMAP_AUTHED])];
    const kind = weighted(rng, {
      plain: authed ? 25 : 20,
      mutated: 30,
      smuggle: 20,
      append: authed ? 10 : 2,
      'literal-in-line': 8,
      'bad-size': 5,
      'huge-size': 1,
      junk: 3,
      login: authed ? 0 : 8,
    });
    const line = (text: string | Buffer) => [Buffer.concat([Buffer.from(`${tag} `), Buffer.from(text), CRLF])];
    switch (kind) {
      case 'plain': {
        const text = pick(rng, corpus);
        return { kind, segments: line(text), literals: [], idle: /IDLE/.test(text) };
      }
      case 'mutated': {
        const text = mutate(rng, Buffer.from(`${tag} ${pick(rng, corpus)}`), tag.length + 1, corpus);
        return { kind, segments: [noAnnouncement(Buffer.concat([text, CRLF]))], literals: [], idle: /IDLE/i.test(text.toString('latin1')) };
      }
      case 'smuggle': {
        // Rejected before its literal: the literal's command must never run (issue 15 §1).
        const template = pick(rng, REJECTED_BEFORE_LITERAL);
        const payload = this.smugglePayload();
        const form = pick(rng, LITERAL_FORMS);
        let size = payload.length;
        if (rng() < 0.15) size = int(rng, 0, payload.length + 20); // the data is still exactly `size` bytes
        const [before, after] = template.split('LIT') as [string, string];
        const mutatedBefore = rng() < 0.3 ? mutate(rng, Buffer.from(before), 0, corpus).toString('latin1') : before;
        const segments = [
          Buffer.from(`${tag} ${mutatedBefore}${form(size)}\r\n`),
          Buffer.from(`${after}${after.includes('(') && !after.includes(')') ? ')' : ''}${template.includes('CATENATE') ? ')' : ''}\r\n`),
        ];
        return { kind, segments, literals: [fit(payload, size)], smuggle: true };
      }
      case 'append': {
        // Valid APPENDs (with MULTIAPPEND's second message sometimes), content that looks like commands.
        const box = pick(rng, ['fzok', 'INBOX', 'fzok']);
        const msgs = rng() < 0.2 ? 2 : 1;
        const segments: Buffer[] = [];
        const literals: Buffer[] = [];
        let head = `${tag} APPEND ${box}`;
        for (let i = 0; i < msgs; i++) {
          const body = Buffer.from(
            `From: fuzz@example.org\r\nSubject: fuzz ${tag}\r\n\r\n` + (rng() < 0.5 ? this.smugglePayload().toString('latin1') : 'hello\r\n'),
          );
          const flags = pick(rng, ['', ' (\\Seen)', ' ()', ' (\\Flagged $Label1)']);
          const date = pick(rng, ['', ' "01-Jan-2020 10:00:00 +0000"']);
          segments.push(Buffer.from(`${head}${flags}${date} ${pick(rng, LITERAL_FORMS.slice(0, 2))(body.length)}\r\n`));
          literals.push(body);
          head = '';
        }
        segments.push(CRLF);
        // A smuggle payload in a message accepted as a message is data: the mailbox check still holds.
        return { kind, segments, literals };
      }
      case 'literal-in-line': {
        // One argument of a real line sent as a literal of any form; sometimes holding a smuggled command.
        const words = pick(rng, corpus).split(' ');
        const i = int(rng, 0, words.length - 1);
        const data = rng() < 0.3 ? this.smugglePayload() : Buffer.from(words[i]!);
        const segments = [
          Buffer.from(`${tag} ${[...words.slice(0, i), ''].join(' ')}${pick(rng, LITERAL_FORMS)(data.length)}\r\n`),
          Buffer.from(`${words.length > i + 1 ? ' ' : ''}${words.slice(i + 1).join(' ')}\r\n`),
        ];
        return { kind, segments, literals: [data], smuggle: data.includes(this.prefix) };
      }
      case 'bad-size': {
        const words = pick(rng, corpus);
        return { kind, segments: line(`${words} ${pick(rng, BAD_SIZES)}`), literals: [] };
      }
      case 'huge-size': {
        // Refused: a synchronizing one with BAD, a non-synchronizing one with BAD and BYE (RFC 7888 §4).
        const sync = rng() < 0.7;
        return { kind, segments: line(`${pick(rng, ['APPEND INBOX', 'LOGIN', 'SEARCH TEXT', 'NOOP'])} ${rng() < 0.5 ? '~' : ''}{${pick(rng, HUGE_SIZES)}${sync ? '' : '+'}}`), literals: [] };
      }
      case 'junk': {
        const n = int(rng, 1, 200);
        const bytes = Buffer.alloc(n);
        for (let j = 0; j < n; j++) bytes[j] = int(rng, 0, 255);
        return { kind, segments: [noAnnouncement(Buffer.concat([Buffer.from(`${tag} `), Buffer.from(bytes.toString('latin1').replace(/\n/g, ' '), 'latin1'), CRLF]))], literals: [] };
      }
      case 'login':
      default: {
        const form = pick(rng, LITERAL_FORMS.slice(0, 2));
        return pick(rng, [
          { kind, segments: line('LOGIN alice password'), literals: [] },
          { kind, segments: line('LOGIN "alice" "password"'), literals: [] },
          {
            kind,
            segments: [Buffer.from(`${tag} LOGIN ${form(5)}\r\n`), Buffer.from(` ${form(8)}\r\n`), CRLF],
            literals: [Buffer.from('alice'), Buffer.from('password')],
          },
          { kind, segments: line(`AUTHENTICATE PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`), literals: [] },
        ]);
      }
    }
  }
}

/** Data of exactly `size` bytes: the payload cut or padded. */
function fit(payload: Buffer, size: number): Buffer {
  if (payload.length >= size) return payload.subarray(0, size);
  return Buffer.concat([payload, Buffer.alloc(size - payload.length, 0x20)]);
}

/** A mutated line must not announce a literal by accident (its size could be anything): one byte more ends the token. */
function noAnnouncement(segment: Buffer): Buffer {
  if (announcement(segment) === undefined) return segment;
  return Buffer.concat([segment.subarray(0, segment.length - 2), Buffer.from('x\r\n')]);
}

/** A bare IMAP client that reads whole responses (lines with their literals inlined). */
class FuzzImap extends RawClient {
  /** An untagged BYE arrived: the connection ends (it may come after a tagged answer, e.g. too many bad commands). */
  byeSeen = false;

  static async open(port: number): Promise<FuzzImap> {
    return new FuzzImap(await openSocket(port, { tls: true }));
  }

  /** The next response (latin1, literals inlined), or undefined once the connection closed. */
  response(timeoutMs = IMAP_TIMEOUT_MS): Promise<string | undefined> {
    return this.waitFor(
      () => {
        const buf = this.buffer;
        let pos = 0;
        // Each round takes one line and the literal it announces; a response has few.
        for (let guard = 0; guard < 100_000; guard++) {
          const lf = buf.indexOf(0x0a, pos);
          if (lf < 0) return undefined;
          const tail = buf.subarray(Math.max(pos, lf - 24), lf).toString('latin1');
          const m = /\{(\d+)\}\r?$/.exec(tail);
          if (!m) {
            this.buffer = buf.subarray(lf + 1);
            return buf.subarray(0, lf + 1).toString('latin1');
          }
          const end = lf + 1 + Number(m[1]);
          if (buf.length < end) return undefined;
          pos = end;
        }
        throw new Error('response with too many literals');
      },
      timeoutMs,
      () => `a response; buffered: ${JSON.stringify(this.buffer.subarray(0, 200).toString('latin1'))}`,
    );
  }
}

type ImapOutcome =
  | { end: 'tagged'; status: string }
  | { end: 'bye' }
  | { end: 'fail'; what: string };

/**
 * FUZZ_TRACE_FILE=path appends every IMAP input sent (its tag, segments and the start of
 * its literals, as JSON lines with the time): to find, in the gateway's debug log, what a
 * failing session was sent before the failure.
 */
function traceInput(tag: string, input: ImapInput): void {
  const file = process.env.FUZZ_TRACE_FILE;
  if (!file) return;
  const text = (b: Buffer) => b.subarray(0, 300).toString('latin1');
  appendFileSync(file, `${JSON.stringify({ t: Date.now(), tag, segments: input.segments.map(text), literals: input.literals.map(text) })}\n`);
}

/**
 * Sends one command, literal by literal, as a client following RFC 3501 §7.5 and RFC 7888
 * would, and waits for its end. A "+" with no literal pending gets DONE (IDLE) or "*"
 * (AUTHENTICATE's cancel, RFC 3501 §6.2.2).
 */
async function runImapInput(c: FuzzImap, input: ImapInput, tag: string): Promise<ImapOutcome> {
  traceInput(tag, input);
  let continuations = 0;
  const wait = async (forPlus: boolean): Promise<ImapOutcome | 'plus'> => {
    // A command ends after a bounded number of responses; FETCH 1:* of a small mailbox is the most.
    for (let n = 0; n < 100_000; n++) {
      let r: string | undefined;
      try {
        r = await c.response();
      } catch (err) {
        return { end: 'fail', what: `no answer: ${(err as Error).message}` };
      }
      if (r === undefined) return c.byeSeen ? { end: 'bye' } : { end: 'fail', what: 'connection closed without a tagged answer or BYE' };
      const first = r.slice(0, r.indexOf('\n') + 1);
      if (first.startsWith('+')) {
        if (forPlus) return 'plus';
        if (++continuations > 4) return { end: 'fail', what: `continuation requests without end: ${JSON.stringify(first)}` };
        c.write(input.idle ? 'DONE\r\n' : '*\r\n');
        continue;
      }
      if (first.startsWith('* ')) {
        if (/^\* BYE\b/i.test(first)) c.byeSeen = true;
        continue;
      }
      const m = /^(\S+) (OK|NO|BAD)\b/i.exec(first);
      if (m && m[1] === tag) return { end: 'tagged', status: m[2]!.toUpperCase() };
      return { end: 'fail', what: `tagged line not for ${tag}: ${JSON.stringify(first.slice(0, 200))}` };
    }
    return { end: 'fail', what: 'endless response' };
  };

  let lit = 0;
  for (let i = 0; ; i++) {
    const seg = input.segments[i] ?? CRLF;
    c.write(seg);
    const ann = announcement(seg);
    if (ann === undefined) break;
    if (ann.size > FUZZ_MAX_LITERAL) {
      // Refused; a synchronizing one leaves the next line to us, a non-synchronizing one ends the session.
      break;
    }
    if (ann.sync) {
      const r = await wait(true);
      if (r !== 'plus') return r;
    }
    c.write(fit(input.literals[lit++] ?? Buffer.alloc(0), ann.size));
  }
  const r = await wait(false);
  if (r === 'plus') throw new Error('unreachable');
  return r;
}

// ---- SMTP ----------------------------------------------------------------------------

const SMTP_CORPUS = [
  'EHLO client.example.org',
  'HELO client.example.org',
  'NOOP',
  'RSET',
  'HELP',
  'VRFY alice',
  'EXPN staff',
  'MAIL FROM:<alice@example.org>',
  'MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME',
  'MAIL FROM:<alice@example.org> RET=HDRS ENVID=fuzz',
  'MAIL FROM:<>',
  'MAIL FROM:<alice@example.org> SMTPUTF8',
  'RCPT TO:<carol@example.org>',
  'RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org',
  'RCPT TO:<nobody@elsewhere.test>',
  'RCPT TO:<Postmaster>',
  'DATA',
  'BURL imap://alice@localhost/INBOX/;uid=1;urlauth=submit+alice:internal:0123456789abcdef0123456789abcdef LAST',
  'STARTTLS',
  `AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`,
  'AUTH PLAIN',
  'AUTH LOGIN',
  'AUTH CRAM-MD5',
  'XCANCEL 0123456789',
  'ETRN example.org',
];

/** End-of-data look-alikes a lenient MTA may take for the end (SMTP smuggling); the gateway must not let them split a message. */
const FAKE_ENDS = ['\n.\n', '\n.\r\n', '\r.\r\n', '\r\n.\n', '\r\n.\r', '\n..\n', '\r\n\x00.\r\n'];

/** Dot-stuffing (RFC 5321 §4.5.2) over CRLF lines. */
function dotStuff(body: string): string {
  return body
    .split('\r\n')
    .map((l) => (l.startsWith('.') ? `.${l}` : l))
    .join('\r\n');
}

interface SmtpCtx {
  run: FuzzRun;
  rng: Rng;
  worker: number;
  conn: number;
  seq: number;
  fail(what: string, input: Buffer | Buffer[]): void;
}

class SmtpEnded extends Error {}

/** One reply, checked: a valid code, the same on every line. Throws SmtpEnded when the session is over. */
async function smtpReply(c: RawSmtp, ctx: SmtpCtx, sent: Buffer | Buffer[]): Promise<Reply> {
  let r: Reply | undefined;
  try {
    r = await c.reply(SMTP_TIMEOUT_MS);
  } catch (err) {
    ctx.fail(`no reply: ${(err as Error).message}`, sent);
    throw new SmtpEnded();
  }
  if (r === undefined) {
    ctx.fail('connection closed without a reply', sent);
    throw new SmtpEnded();
  }
  const lines = r.text.split('\n');
  if (r.code < 200 || r.code > 599 || !lines.every((l) => l.startsWith(String(r.code)))) ctx.fail(`malformed reply ${JSON.stringify(r.text)}`, sent);
  if (r.code === 421) throw new SmtpEnded();
  return r;
}

/**
 * One command line and its reply. A 334 (AUTH challenge) is cancelled (RFC 4954 §4); a 354
 * gets `body` (or a short marked message) and the end of data, whose reply is `end`.
 */
async function smtpCommand(c: RawSmtp, ctx: SmtpCtx, line: Buffer, body?: { text: string; marker: string }): Promise<Reply & { end?: Reply }> {
  c.write(Buffer.concat([line, CRLF]));
  let r: Reply & { end?: Reply } = await smtpReply(c, ctx, line);
  for (let i = 0; r.code === 334 && i < 3; i++) {
    c.write('*\r\n');
    r = await smtpReply(c, ctx, line);
  }
  if (r.code === 354) {
    // A marked message, so that a delivery can be matched with its acknowledgement.
    const marker = body?.marker ?? `${ctx.run.runId}-c${ctx.worker}-${ctx.conn}-${ctx.seq}`;
    let text = body?.text ?? `X-Fuzz: ${marker}\r\nSubject: corpus\r\n\r\nhello\r\n`;
    if (!text.endsWith('\r\n')) text += '\r\n';
    const data = Buffer.from(`${text}.\r\n`, 'latin1');
    c.write(data);
    r.end = await smtpReply(c, ctx, data);
    if (r.end.code === 250) ctx.run.smtp.acked.add(marker);
  }
  return r;
}

async function smtpTransaction(c: RawSmtp, ctx: SmtpCtx): Promise<void> {
  const { rng, run } = ctx;
  const marker = `${run.runId}-t${ctx.worker}-${ctx.conn}-${ctx.seq}`;
  const mutateEnvelope = rng() < 0.2;
  const env = (s: string) => (mutateEnvelope && rng() < 0.5 ? mutate(rng, Buffer.from(s), 5, SMTP_CORPUS) : Buffer.from(s));
  const rset = await smtpCommand(c, ctx, Buffer.from('RSET'));
  const mail = await smtpCommand(c, ctx, env(pick(rng, ['MAIL FROM:<alice@example.org>', 'MAIL FROM:<alice@example.org> BODY=8BITMIME', 'MAIL FROM:<alice@example.org> SIZE=2000'])));
  const rcpts = pick(rng, [['carol@example.org'], ['carol@example.org', 'bob@example.org'], ['nobody@elsewhere.test', 'carol@example.org'], ['bob@example.org']]);
  const local: string[] = [];
  for (const to of rcpts) {
    const r = await smtpCommand(c, ctx, env(`RCPT TO:<${to}>`));
    if (r.code === 250 && to.endsWith('@example.org')) local.push(to.split('@')[0]!);
  }
  // The body: a marked header, then text that may be mutated and may hide a second transaction.
  let text = `line one ${marker}\r\n.starts with a dot\r\n..two dots\r\n${'x'.repeat(int(rng, 0, 300))}\r\n`;
  if (rng() < 0.3) text = mutate(rng, Buffer.from(text), 0, SMTP_CORPUS).toString('latin1') + '\r\n';
  let body = dotStuff(`X-Fuzz: ${marker}\r\nSubject: fuzz\r\n\r\n${text}`);
  let smuggled = false;
  if (rng() < 0.25) {
    // SMTP smuggling: an end-of-data look-alike, then a whole transaction; the real end follows it.
    smuggled = true;
    run.smtp.smuggleAttempts++;
    const fake = `${run.runId}-smug${ctx.worker}-${ctx.conn}-${ctx.seq}`;
    body +=
      pick(rng, FAKE_ENDS) +
      `MAIL FROM:<alice@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\nX-Fuzz: ${fake}\r\nSubject: smuggled\r\n\r\nsmuggled`;
  }
  const useBdat = !smuggled && rng() < 0.3;
  let end: Reply;
  if (useBdat) {
    // CHUNKING (RFC 3030): the body in one to three chunks, the last with LAST.
    const raw = Buffer.from(`${body}\r\n`, 'latin1');
    const cuts = [0, ...Array.from({ length: int(rng, 0, 2) }, () => int(rng, 0, raw.length)).sort((a, b) => a - b), raw.length];
    end = { code: 0, text: '' };
    for (let i = 1; i < cuts.length; i++) {
      const chunk = raw.subarray(cuts[i - 1], cuts[i]);
      const last = i === cuts.length - 1;
      c.write(Buffer.concat([Buffer.from(`BDAT ${chunk.length}${last ? ' LAST' : ''}\r\n`), chunk]));
      end = await smtpReply(c, ctx, Buffer.from(`BDAT ${chunk.length}`));
      if (!last && end.code !== 250) break;
    }
  } else {
    const data = await smtpCommand(c, ctx, Buffer.from('DATA'), { text: body, marker });
    end = data.end ?? data;
  }
  if (end.code === 250) {
    run.smtp.acked.add(marker);
    if (!mutateEnvelope && rset.code === 250 && mail.code === 250 && local.length > 0) run.smtp.mustDeliver.set(marker, local);
  }
}

// ---- well-behaved sessions alongside -------------------------------------------------

/**
 * A well-behaved IMAP session (imapflow, as bob) and submission client (nodemailer) doing
 * real work while the fuzzer runs: other sessions must not suffer from the fuzzed ones.
 * Runs until stop() and reports the first error of each.
 */
function canaries(gw: RunningGateway, run: FuzzRun, record: (f: FuzzFailure) => void): { stop(): Promise<{ imapRounds: number; messages: number }> } {
  let stopped = false;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const imap = (async () => {
    const client = new ImapFlow({ host: '127.0.0.1', port: gw.imapsPort, secure: true, tls: { rejectUnauthorized: false }, auth: { user: 'bob', pass: 'password' }, logger: false, disableAutoIdle: true });
    client.on('error', () => undefined);
    let rounds = 0;
    try {
      await client.connect();
      while (!stopped) {
        await client.noop();
        const st = await client.status('INBOX', { messages: true });
        if (!st || typeof st.messages !== 'number') throw new Error(`STATUS gave ${JSON.stringify(st)}`);
        rounds++;
        await sleep(100);
      }
      await client.logout();
    } catch (err) {
      record({ proto: 'imap', where: `seed ${run.seed} well-behaved imapflow session after ${rounds} rounds`, what: (err as Error).message, input: '' });
      client.close();
    }
    return rounds;
  })();
  const smtp = (async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.submissionsPort, secure: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice', pass: 'password' } });
    let n = 0;
    try {
      while (!stopped) {
        const marker = `${run.runId}-canary-${n}`;
        await transport.sendMail({ envelope: { from: 'alice@example.org', to: ['carol@example.org'] }, raw: `X-Fuzz: ${marker}\r\nSubject: canary\r\n\r\nhello\r\n` });
        run.smtp.acked.add(marker);
        run.smtp.mustDeliver.set(marker, ['carol']);
        n++;
        await sleep(500);
      }
    } catch (err) {
      record({ proto: 'smtp', where: `seed ${run.seed} well-behaved nodemailer client after ${n} messages`, what: (err as Error).message, input: '' });
    } finally {
      transport.close();
    }
    return n;
  })();
  return {
    async stop() {
      stopped = true;
      return { imapRounds: await imap, messages: await smtp };
    },
  };
}

// ---- housekeeping for long runs -----------------------------------------------------

/** Messages of alice's INBOX housekeeping leaves: the first ones (the corpus FETCHes 1 and 2) and the newest. */
const ALICE_KEEP_FIRST = 3;
const ALICE_KEEP_NEWEST = 500;
const HOUSEKEEPING_EVERY_MS = 20_000;

/**
 * Every 20 s, directly at Dovecot (master login, not through the gateway): alice's INBOX,
 * which the fuzzed APPENDs and COPYs fill, is cut back to its first and newest messages,
 * and bob's and carol's INBOXes, which the fuzzed submissions fill, are emptied, with the
 * marked messages taken out counted in run.delivered for afterChecks.
 *
 * Why: Dovecot's cost grows with a mailbox (a maildir sync reads all of new/ on each LMTP
 * delivery, and the corpus has FETCH 1:*, SEARCH ALL and UID STORE 1:*), so without it a
 * 10^6-input run slows to a crawl on a mailbox of tens of thousands of messages the fuzzer
 * made. To the gateway these are another client's expunges, which its sessions must take
 * as they come (EXPUNGE / VANISHED, the CONDSTORE emulation): real work, not a shortcut.
 */
function mailboxHousekeeping(stack: LegacyStack, run: FuzzRun, log: (l: string) => void): { stop(): Promise<void> } {
  let stopped = false;
  let wake: () => void = () => undefined;
  const loop = (async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, HOUSEKEEPING_EVERY_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (stopped) break;
      const taken: string[] = [];
      for (const user of ['alice', 'bob', 'carol']) {
        try {
          taken.push(`${user} ${await takeOut(stack, run, user, user === 'alice' ? ALICE_KEEP_FIRST : 0, user === 'alice' ? ALICE_KEEP_NEWEST : 0)}`);
        } catch (err) {
          // Not the gateway's doing (this is a direct connection): the next round tries again.
          taken.push(`${user} failed (${(err as Error).message})`);
        }
      }
      log(`housekeeping: messages taken out of INBOX: ${taken.join(', ')}`);
    }
  })();
  return {
    async stop() {
      stopped = true;
      wake();
      await loop;
    },
  };
}

/** The X-Fuzz marker of one of this run's messages, from its fetched header; undefined for any other message. */
function runMarker(run: FuzzRun, headers: Buffer | undefined): string | undefined {
  const m = /X-Fuzz:\s*(\S+)/i.exec(headers?.toString('latin1') ?? '');
  return m && m[1]!.startsWith(run.runId) ? m[1] : undefined;
}

/** Expunges user's INBOX but its first keepFirst and newest keepNewest messages, counting the marked ones in run.delivered. */
async function takeOut(stack: LegacyStack, run: FuzzRun, user: string, keepFirst: number, keepNewest: number): Promise<number> {
  const c = await masterClient(stack, user);
  try {
    const box = await c.mailboxOpen('INBOX');
    const last = box.exists - keepNewest;
    if (last <= keepFirst) return 0;
    const uids: number[] = [];
    const markers: string[] = [];
    for await (const msg of c.fetch(`${keepFirst + 1}:${last}`, { uid: true, headers: ['x-fuzz'] })) {
      uids.push(msg.uid);
      const marker = runMarker(run, msg.headers);
      if (marker !== undefined) markers.push(`${user}:${marker}`);
    }
    if (uids.length === 0) return 0;
    // By UID, as ranges: a sequence number can move under us (the fuzzed sessions EXPUNGE alice's INBOX).
    if (!(await c.messageDelete(formatSequenceSet(uids.sort((a, b) => a - b)), { uid: true }))) throw new Error('EXPUNGE refused');
    for (const key of markers) run.delivered.set(key, (run.delivered.get(key) ?? 0) + 1);
    return uids.length;
  } finally {
    await c.logout().catch(() => c.close());
  }
}

// ---- the run -------------------------------------------------------------------------

export async function runFuzz(stack: LegacyStack, gw: RunningGateway, opts: FuzzOptions): Promise<FuzzRun> {
  const log = opts.log ?? (() => undefined);
  const runId = `fz${(opts.seed >>> 0).toString(36)}r`;
  const run: FuzzRun = {
    seed: opts.seed,
    runId,
    smugglePrefix: `fzs${(opts.seed >>> 0).toString(36)}n`,
    failures: [],
    failureCount: 0,
    imap: { inputs: 0, connections: 0, byes: 0, smuggleAttempts: 0 },
    smtp: { inputs: 0, connections: 0, acked: new Set(), mustDeliver: new Map(), smuggleAttempts: 0 },
    delivered: new Map(),
    wellBehaved: { imapRounds: 0, messages: 0 },
    rssStartKiB: gw.rssKiB(),
    rssMaxKiB: 0,
    ms: 0,
  };
  log(`fuzz seed=${opts.seed} (FUZZ_SEED / BENCH_FUZZ_SEED=${opts.seed} repeats these inputs) imap=${opts.imapInputs} smtp=${opts.smtpInputs} smuggle prefix ${run.smugglePrefix}`);
  const started = Date.now();
  // Mailboxes the corpus works with; INBOX gets a few messages to FETCH, STORE and COPY.
  const setup = await masterClient(stack, 'alice');
  try {
    await setup.mailboxCreate('fzok').catch(() => undefined);
  } finally {
    await setup.logout().catch(() => setup.close());
  }
  for (let i = 0; i < 3; i++) await stack.append('alice', 'INBOX', Buffer.from(`From: a@example.org\r\nSubject: seed ${i}\r\n\r\nbody ${i}\r\n`));

  const rssTimer = setInterval(() => {
    try {
      run.rssMaxKiB = Math.max(run.rssMaxKiB, gw.rssKiB());
    } catch {
      // The process is gone: the checks after the run say so.
    }
  }, 250);
  const perConn = opts.maxInputsPerConnection ?? 200;
  const record = (f: FuzzFailure) => {
    run.failureCount++;
    if (run.failures.length < MAX_KEPT) run.failures.push(f);
  };
  const imapWorkers = opts.imapWorkers ?? 4;
  const smtpWorkers = opts.smtpWorkers ?? 2;
  const share = (total: number, n: number, i: number) => Math.floor(total / n) + (i < total % n ? 1 : 0);
  const lastProgress = { at: Date.now() };
  const progress = () => {
    if (Date.now() - lastProgress.at < 10_000) return;
    lastProgress.at = Date.now();
    const line = `fuzz progress: imap ${run.imap.inputs}/${opts.imapInputs} smtp ${run.smtp.inputs}/${opts.smtpInputs} failures ${run.failureCount} rss max ${run.rssMaxKiB} KiB`;
    // The JS heap beside the RSS: a heap that keeps growing is a leak, an RSS that does may be the allocator.
    gw.metrics().then(
      (text) => log(`${line} heap used ${Math.round(metricValue(text, 'lemonade_nodejs_heap_size_used_bytes', {}) / 1024)} KiB`),
      () => log(line),
    );
  };
  /** Resolves once the SMTP side is no further along than the IMAP side (opts.paceSmtp). */
  const smtpTurn = async () => {
    const ahead = () => opts.paceSmtp && opts.imapInputs > 0 && run.imap.inputs < opts.imapInputs && run.smtp.inputs / opts.smtpInputs > run.imap.inputs / opts.imapInputs;
    while (ahead()) await new Promise((r) => setTimeout(r, 50));
  };

  const imapWorker = async (w: number, count: number) => {
    const rng = prng(opts.seed * 31 + w);
    const gen = new ImapGenerator(rng, run.smugglePrefix, w);
    let done = 0;
    for (let conn = 0; done < count; conn++) {
      run.imap.connections++;
      let c: FuzzImap;
      try {
        c = await FuzzImap.open(gw.imapsPort);
      } catch (err) {
        record({ proto: 'imap', where: `seed ${opts.seed} imap worker ${w} conn ${conn}`, what: `connect failed: ${(err as Error).message}`, input: '' });
        await new Promise((r) => setTimeout(r, 1000));
        done++;
        continue;
      }
      try {
        const greeting = await c.response().catch(() => undefined);
        if (!greeting?.startsWith('* OK')) {
          record({ proto: 'imap', where: `seed ${opts.seed} imap worker ${w} conn ${conn}`, what: `greeting ${JSON.stringify(greeting)}`, input: '' });
          done++;
          continue;
        }
        let authed = false;
        if (rng() < 0.8) {
          // Most of the surface is after login.
          const r = await runImapInput(c, { kind: 'login', segments: [Buffer.from('L LOGIN alice password\r\n')], literals: [] }, 'L').catch(() => undefined);
          authed = r?.end === 'tagged' && r.status === 'OK';
          if (!authed) record({ proto: 'imap', where: `seed ${opts.seed} imap worker ${w} conn ${conn}`, what: `login: ${JSON.stringify(r)}`, input: '' });
        }
        const n = Math.min(count - done, int(rng, 1, perConn));
        for (let i = 0; i < n; i++) {
          const tag = `F${w}n${conn}i${i}`;
          const input = gen.next(tag, authed);
          if (input.smuggle) run.imap.smuggleAttempts++;
          done++;
          run.imap.inputs++;
          const out = await runImapInput(c, input, tag);
          if (out.end === 'fail') {
            record({ proto: 'imap', where: `seed ${opts.seed} imap worker ${w} conn ${conn} input ${i} (${input.kind}, ${authed ? 'after' : 'before'} login)`, what: out.what, input: show(input.segments) + (input.literals.length ? ` literals ${show(input.literals)}` : '') });
            break;
          }
          if (out.end === 'bye' || c.byeSeen) {
            run.imap.byes++;
            break;
          }
          if (out.status === 'OK' && /^\S+ (LOGIN|AUTHENTICATE)\b/i.test(input.segments[0]!.toString('latin1'))) authed = true;
          progress();
        }
      } finally {
        // Half the connections just vanish, half say LOGOUT: both must leave nothing behind.
        if (!c.closed && rng() < 0.5) {
          await runImapInput(c, { kind: 'logout', segments: [Buffer.from('Z LOGOUT\r\n')], literals: [] }, 'Z').catch(() => undefined);
        }
        c.close();
      }
    }
  };

  const smtpWorker = async (w: number, count: number) => {
    const rng = prng(opts.seed * 31 + 1000 + w);
    let done = 0;
    for (let conn = 0; done < count; conn++) {
      run.smtp.connections++;
      const ctx: SmtpCtx = {
        run,
        rng,
        worker: w,
        conn,
        seq: 0,
        fail: (what, input) => record({ proto: 'smtp', where: `seed ${opts.seed} smtp worker ${w} conn ${conn} input ${ctx.seq}`, what, input: show(input) }),
      };
      let c: RawSmtp;
      try {
        c = await RawSmtp.connect(gw.submissionsPort, { tls: true });
      } catch (err) {
        ctx.fail(`connect failed: ${(err as Error).message}`, []);
        await new Promise((r) => setTimeout(r, 1000));
        done++;
        continue;
      }
      try {
        const greeting = await smtpReply(c, ctx, []);
        if (greeting.code !== 220) ctx.fail(`greeting ${greeting.text}`, []);
        await smtpCommand(c, ctx, Buffer.from('EHLO fuzz.example.org'));
        if (rng() < 0.85) {
          const a = await smtpCommand(c, ctx, Buffer.from(`AUTH PLAIN ${Buffer.from('\0alice\0password').toString('base64')}`));
          if (a.code !== 235) ctx.fail(`AUTH: ${a.text}`, []);
        }
        const n = Math.min(count - done, int(rng, 1, perConn));
        for (let i = 0; i < n; i++) {
          await smtpTurn();
          ctx.seq = i;
          done++;
          run.smtp.inputs++;
          const kind = weighted(rng, { transaction: 35, plain: 20, mutated: 35, long: 2, junk: 4, bdat: 4 });
          if (kind === 'transaction') {
            await smtpTransaction(c, ctx);
          } else if (kind === 'bdat') {
            // BDAT shapes the reader must frame exactly as RFC 3030 §2 says.
            const [line, data, closes] = pick(rng, [
              ['BDAT 5 LAST', 'hello', false],
              ['BDAT 0 LAST', '', false],
              ['BDAT 00003', 'abc', false],
              ['bdat 3 last', 'abc', false],
              ['BDAT abc', '', true],
              ['BDAT -1', '', true],
              ['BDAT 1234567890123456 LAST', '', true],
              ['BDAT 5 LAST EXTRA', '', true],
            ] as Array<[string, string, boolean]>);
            c.write(`${line}\r\n${data}`);
            const r = await smtpReply(c, ctx, Buffer.from(line));
            if (closes) throw new SmtpEnded();
            void r;
          } else {
            let line: Buffer;
            if (kind === 'plain') line = Buffer.from(pick(rng, SMTP_CORPUS));
            else if (kind === 'long') line = Buffer.from(`NOOP ${'a'.repeat(int(rng, 4000, 70_000))}`);
            else if (kind === 'junk') line = Buffer.from(Array.from({ length: int(rng, 0, 100) }, () => int(rng, 0, 255)).filter((b) => b !== 0x0a && b !== 0x0d));
            else line = mutate(rng, Buffer.from(pick(rng, SMTP_CORPUS)), 0, SMTP_CORPUS);
            // A BDAT line the fuzzer did not build would need its chunk sent: keep those to the 'bdat' kind.
            if (/^bdat(\s|$)/i.test(line.toString('latin1'))) line = Buffer.from('NOOP');
            // A QUIT ends the connection: expected, and a new one starts.
            const r = await smtpCommand(c, ctx, line);
            if (r.code === 221) throw new SmtpEnded();
          }
          progress();
        }
        c.write('QUIT\r\n');
        const q = await smtpReply(c, ctx, Buffer.from('QUIT'));
        // Exactly one reply per command: QUIT's must be the next one.
        if (q.code !== 221) ctx.fail(`QUIT answered ${q.text} (a reply too many earlier?)`, Buffer.from('QUIT'));
      } catch (err) {
        if (!(err instanceof SmtpEnded)) throw err;
      } finally {
        c.close();
      }
    }
  };

  const alongside = canaries(gw, run, record);
  const keeper = opts.housekeeping ? mailboxHousekeeping(stack, run, log) : undefined;
  try {
    await Promise.all([
      ...Array.from({ length: imapWorkers }, (_, w) => imapWorker(w, share(opts.imapInputs, imapWorkers, w))),
      ...Array.from({ length: smtpWorkers }, (_, w) => smtpWorker(w, share(opts.smtpInputs, smtpWorkers, w))),
    ]);
  } finally {
    clearInterval(rssTimer);
    await keeper?.stop();
    const done = await alongside.stop();
    run.wellBehaved = done;
  }
  try {
    run.rssMaxKiB = Math.max(run.rssMaxKiB, gw.rssKiB());
  } catch {
    // gone; reported by the checks
  }
  run.ms = Date.now() - started;
  log(`fuzz done in ${(run.ms / 1000).toFixed(1)} s: imap ${run.imap.inputs} inputs on ${run.imap.connections} connections (${run.imap.byes} BYE), smtp ${run.smtp.inputs} on ${run.smtp.connections}, ${run.smtp.acked.size} messages acknowledged, well-behaved sessions meanwhile: ${run.wellBehaved.imapRounds} imapflow rounds and ${run.wellBehaved.messages} nodemailer messages, failures ${run.failureCount}, rss ${run.rssStartKiB} -> max ${run.rssMaxKiB} KiB`);
  return run;
}

// ---- after the run -------------------------------------------------------------------

export interface AfterResult {
  failures: FuzzFailure[];
  /** Mailboxes a smuggled command created. */
  smuggledMailboxes: string[];
  /** Messages delivered that no acknowledged transaction sent. */
  unackedDeliveries: string[];
  lostMessages: string[];
  duplicates: string[];
  /** Gauges as last read. */
  gauges: Record<string, number>;
}

async function gauges(gw: RunningGateway): Promise<Record<string, number>> {
  const text = await gw.metrics();
  return {
    imapSessions: metricValue(text, 'lemonade_sessions_open', { protocol: 'imap' }),
    submissionSessions: metricValue(text, 'lemonade_sessions_open', { protocol: 'submission' }),
    imapUpstream: metricValue(text, 'lemonade_upstream_connections_open', { protocol: 'imap' }),
    submissionUpstream: metricValue(text, 'lemonade_upstream_connections_open', { protocol: 'submission' }),
    relayIdle: metricValue(text, 'lemonade_smtp_relay_connections_open', { state: 'idle' }),
    relayInUse: metricValue(text, 'lemonade_smtp_relay_connections_open', { state: 'in_use' }),
    sideInUse: metricValue(text, 'lemonade_imap_side_connections_open', { state: 'in_use' }),
    sideIdle: metricValue(text, 'lemonade_imap_side_connections_open', { state: 'idle' }),
  };
}

/**
 * Whether the gauges say nothing is left of the clients. Pooled idle connections may stay:
 * side connections (APPENDUID, URLFETCH; imap.sideConnections.idleSeconds, 60 s) are
 * upstream IMAP connections too, and the relay keeps idle connections to the MTA.
 */
function gaugesAtRest(g: Record<string, number>): boolean {
  return (
    g.imapSessions === 0 &&
    g.submissionSessions === 0 &&
    g.imapUpstream === g.sideIdle &&
    g.sideInUse === 0 &&
    g.relayInUse === 0 &&
    g.submissionUpstream === g.relayIdle
  );
}

export async function afterChecks(stack: LegacyStack, gw: RunningGateway, run: FuzzRun, log: (l: string) => void = () => undefined): Promise<AfterResult> {
  const failures: FuzzFailure[] = [];
  const fail = (what: string) => failures.push({ proto: 'after', where: `seed ${run.seed}`, what, input: '' });
  const res: AfterResult = { failures, smuggledMailboxes: [], unackedDeliveries: [], lostMessages: [], duplicates: [], gauges: {} };
  if (gw.proc.exitCode !== null || gw.proc.signalCode !== null) fail(`gateway exited (${gw.proc.exitCode ?? gw.proc.signalCode})`);

  // The gauges come back to rest within seconds of the last client leaving.
  const deadline = Date.now() + 10_000;
  for (;;) {
    res.gauges = await gauges(gw);
    if (gaugesAtRest(res.gauges) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!gaugesAtRest(res.gauges)) {
    // For the report: slow (some internal time-out) or never?
    const atTen = JSON.stringify(res.gauges);
    const longer = Date.now() + 50_000;
    let g = res.gauges;
    while (!gaugesAtRest(g) && Date.now() < longer) {
      await new Promise((r) => setTimeout(r, 1000));
      g = await gauges(gw);
    }
    const later = gaugesAtRest(g) ? `at rest after ${Math.round((Date.now() - deadline + 10_000) / 1000)} s` : `still ${JSON.stringify(g)} after 60 s`;
    fail(`gauges not at rest 10 s after the clients left: ${atTen}; ${later}`);
  }

  // No smuggled command ran upstream: no mailbox prefix+digits, at Dovecot (LIST) and on disk.
  const smuggled = new RegExp(`^${run.smugglePrefix}\\d+$`, 'i');
  const direct = await masterClient(stack, 'alice');
  try {
    const boxes = await direct.list();
    res.smuggledMailboxes = boxes.map((b) => b.path).filter((p) => smuggled.test(p));
  } finally {
    await direct.logout().catch(() => direct.close());
  }
  try {
    const onDisk = readdirSync(path.join(stack.dir, 'mail', 'alice', 'Maildir')).filter((d) => smuggled.test(d.replace(/^\./, '')));
    for (const d of onDisk) if (!res.smuggledMailboxes.includes(d.replace(/^\./, ''))) res.smuggledMailboxes.push(d.replace(/^\./, ''));
  } catch {
    // Not readable by this user: LIST above still says it.
  }
  if (res.smuggledMailboxes.length > 0) fail(`commands smuggled in literals ran upstream: mailboxes ${res.smuggledMailboxes.slice(0, 20).join(' ')} (${res.smuggledMailboxes.length})`);
  const logMention = new RegExp(`${run.smugglePrefix}\\d`, 'i');
  try {
    // A login name is not a command: a mutated LOGIN whose user name is a literal holding
    // the smuggled text reaches Dovecot's auth inside SASL PLAIN, and Dovecot logs the name.
    const withoutUserNames = (l: string) => l.replace(/user=<[^>]*>/g, '').replace(/\(username: [^)]*\)/g, '');
    const dovecotLog = readFileSync(path.join(stack.dir, 'dovecot', 'dovecot.log'), 'latin1')
      .split('\n')
      .filter((l) => logMention.test(withoutUserNames(l)));
    if (dovecotLog.length > 0) fail(`Dovecot's log names smuggled mailboxes: ${dovecotLog.slice(0, 3).join(' | ')}`);
  } catch {
    // no log file: nothing logged
  }
  const unknownTags = gw.logs.filter((l) => l.includes('upstream answered an unknown tag'));
  if (unknownTags.length > 0) fail(`the gateway logged "upstream answered an unknown tag" ${unknownTags.length} times (commands ran upstream that the client never sent as commands): ${unknownTags.slice(0, 3).join(' | ')}`);

  // Well-behaved clients still work: imapflow through the gateway, nodemailer through submission.
  const client = new ImapFlow({ host: '127.0.0.1', port: gw.imapsPort, secure: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice', pass: 'password' }, logger: false, disableAutoIdle: true });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const box = await client.mailboxOpen('INBOX');
    const appended = await client.append('INBOX', Buffer.from(`From: a@example.org\r\nSubject: after ${run.runId}\r\n\r\nstill works\r\n`));
    if (!appended) throw new Error('APPEND failed');
    const found = await client.search({ subject: `after ${run.runId}` });
    if (!found || found.length !== 1) throw new Error(`SEARCH found ${JSON.stringify(found)} (mailbox had ${box.exists})`);
    await client.logout();
  } catch (err) {
    fail(`imapflow after the fuzz: ${(err as Error).message}`);
    client.close();
  }
  const wellMarker = `${run.runId}-well`;
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.submissionsPort, secure: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice', pass: 'password' } });
  try {
    await transport.sendMail({ envelope: { from: 'alice@example.org', to: ['carol@example.org'] }, raw: `X-Fuzz: ${wellMarker}\r\nSubject: well-behaved\r\n\r\nhello\r\n` });
    run.smtp.acked.add(wellMarker);
    run.smtp.mustDeliver.set(wellMarker, ['carol']);
  } catch (err) {
    fail(`nodemailer after the fuzz: ${(err as Error).message}`);
  } finally {
    transport.close();
  }

  // Deliveries: each marked message that arrived was acknowledged; each plain acknowledged one arrived, once.
  const expected = new Map<string, number>();
  for (const [marker, users] of run.smtp.mustDeliver) for (const u of users) expected.set(`${u}:${marker}`, 0);
  const users = ['alice', 'bob', 'carol'];
  const read = async () => {
    // What housekeeping took out during the run was delivered too.
    const seen = new Map(run.delivered);
    for (const user of users) {
      const c = await masterClient(stack, user);
      try {
        const box = await c.mailboxOpen('INBOX');
        // All of them, not a UID list: 100,000 inputs deliver more UIDs than one command line may hold.
        if (box.exists > 0) {
          for await (const msg of c.fetch('1:*', { headers: ['x-fuzz'] })) {
            const marker = runMarker(run, msg.headers);
            if (marker !== undefined) seen.set(`${user}:${marker}`, (seen.get(`${user}:${marker}`) ?? 0) + 1);
          }
        }
      } finally {
        await c.logout().catch(() => c.close());
      }
    }
    return seen;
  };
  let seen = new Map<string, number>();
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      seen = await read();
    } catch (err) {
      // A check that cannot run is a failure too, but the other checks still report.
      fail(`reading the delivered messages failed: ${(err as Error).message}`);
      break;
    }
    if ([...expected.keys()].every((k) => seen.has(k)) || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  log(`deliveries: ${seen.size} marked messages seen, ${expected.size} expected, ${run.smtp.acked.size} acknowledged`);
  for (const [key, count] of seen) {
    const marker = key.slice(key.indexOf(':') + 1);
    if (!run.smtp.acked.has(marker)) res.unackedDeliveries.push(key);
    if (count > 1) res.duplicates.push(`${key} x${count}`);
  }
  for (const key of expected.keys()) if (!seen.has(key)) res.lostMessages.push(key);
  if (res.unackedDeliveries.length > 0) fail(`delivered without a 250 to the fuzzer: ${res.unackedDeliveries.slice(0, 10).join(' ')} (${res.unackedDeliveries.length})`);
  if (res.lostMessages.length > 0) fail(`acknowledged but not delivered within 30 s: ${res.lostMessages.slice(0, 10).join(' ')} (${res.lostMessages.length})`);
  if (res.duplicates.length > 0) fail(`delivered more than once: ${res.duplicates.slice(0, 10).join(' ')}`);
  log(`after checks: ${failures.length} failures; gauges ${JSON.stringify(res.gauges)}`);
  return res;
}

/** Every failure of a run, one per line, for a test's diagnostic or the benchmark's output. */
export function describeFailures(failures: FuzzFailure[]): string {
  return failures.map((f) => `[${f.proto}] ${f.where}: ${f.what}${f.input ? `\n    input: ${f.input}` : ''}`).join('\n');
}
