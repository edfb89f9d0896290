/**
 * answerAsUpstream: a command the gateway ran upstream for the client is answered with the
 * upstream's own status, code and text, byte for byte, under the client's tag.
 */
import t from 'tap';
import { answerAsUpstream } from '../src/imap/commands/upstream-answer.js';
import type { CommandContext } from '../src/imap/commands/context.js';
import { tagged, type TaggedStatus } from '../src/imap/protocol/writer.js';

/** What the client would be sent: ctx.tagged through the real writer. */
function answer(line: Buffer, code?: string, dropCode?: RegExp): string {
  let out = '';
  const ctx = { tagged: (tag: string, status: TaggedStatus, text: string, c?: string) => (out = tagged(tag, status, text, c).toString('utf8')) };
  // internalCommand hands the line over as the relay read it: latin1, one char per byte.
  answerAsUpstream(ctx as unknown as CommandContext, 'c1', { status: 'X', line: line.toString('latin1') }, code, dropCode);
  return out;
}

t.test('status, code and text as the upstream sent them', async (t) => {
  t.equal(answer(Buffer.from('I3 NO [TRYCREATE] Mailbox does not exist\r\n')), 'c1 NO [TRYCREATE] Mailbox does not exist\r\n');
  t.equal(answer(Buffer.from('I3 OK [COPYUID 7 1 2] Copied\r\n'), undefined, /^COPYUID\b/), 'c1 OK Copied\r\n', 'a dropped code');
  t.equal(answer(Buffer.from('I3 OK [COPYUID 7 1 2] Copied\r\n'), 'COPYUID 7 1 5'), 'c1 OK [COPYUID 7 1 5] Copied\r\n', 'ours instead');
  t.equal(answer(Buffer.from('I3 OK\r\n')), 'c1 OK done\r\n', 'text is never empty');
});

t.test("the upstream's UTF-8 text is not encoded twice", async (t) => {
  t.equal(answer(Buffer.from('I3 NO Postfach „Entwürfe“ existiert nicht\r\n', 'utf8')), 'c1 NO Postfach „Entwürfe“ existiert nicht\r\n');
  t.equal(answer(Buffer.from('I3 NO [ALERT Überlauf] voll\r\n', 'utf8')), 'c1 NO [ALERT Überlauf] voll\r\n', 'in a code too');
});

t.test('no line, BYE or PREAUTH: NO [UNAVAILABLE]', async (t) => {
  t.match(answer(Buffer.from('')), /^c1 NO \[UNAVAILABLE\] /);
  t.match(answer(Buffer.from('* BYE going away\r\n')), /^c1 NO \[UNAVAILABLE\] /);
});
