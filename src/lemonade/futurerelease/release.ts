/**
 * Relaying one held message to the upstream MTA when it is due: the same SMTP client and
 * pool as immediate mail (smtp/upstream.ts, smtp/relay-pool.ts), with the envelope and
 * DSN parameters recorded at submission. Each recipient ends delivered, failed (a 5xx:
 * RFC 5321 §4.2.1 permanent) or still pending (a 4xx, or the MTA unreachable: retried).
 */
import type { RelayPool } from '../../smtp/relay-pool.js';
import type { SmtpReply, UpstreamSmtp } from '../../smtp/upstream.js';
import type { HeldMessage, HeldRecipient, SpoolIndex } from '../../store/store.js';
import { UpstreamUnavailable } from '../../upstream/connect.js';
import type { HeldContentStore } from './content.js';

export interface ReleaseResult {
  recipients: HeldRecipient[];
  /** The reply (or failure) that left recipients pending, for the retry's log and lastError. */
  temporary?: string;
}

const replyText = (r: SmtpReply): string => `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${r.lines.join(' ')}`.slice(0, 500);

/** Sets the outcome of each recipient still pending from one MTA reply. */
function settle(recipients: HeldRecipient[], which: (r: HeldRecipient) => boolean, answer: SmtpReply): void {
  for (const r of recipients) {
    if (r.status !== 'pending' || !which(r)) continue;
    if (answer.code < 300) r.status = 'delivered';
    else if (answer.code >= 500) {
      r.status = 'failed';
      r.reply = replyText(answer);
    } else r.reply = replyText(answer);
  }
}

export async function releaseMessage(
  message: HeldMessage,
  deps: { pool: RelayPool; content: HeldContentStore; index: SpoolIndex },
): Promise<ReleaseResult> {
  const recipients = message.recipients.map((r) => ({ ...r }));
  let conn: UpstreamSmtp;
  try {
    conn = await deps.pool.acquire();
  } catch (err) {
    if (err instanceof UpstreamUnavailable) return { recipients, temporary: err.message };
    throw err;
  }
  let reusable = false;
  try {
    const mail = await conn.mail(message.sender, message.mailParams);
    if (mail.code >= 300) {
      settle(recipients, () => true, mail);
      reusable = (await conn.rset()).code < 300;
      return { recipients, temporary: mail.code < 500 ? replyText(mail) : undefined };
    }
    // RFC 2920: the RCPTs go out together; their replies come back in order.
    const pending = recipients.filter((r) => r.status === 'pending');
    const verdicts = await Promise.all(pending.map((r) => conn.rcpt(r.address, r.params)));
    const accepted = new Set<HeldRecipient>();
    pending.forEach((r, i) => {
      const verdict = verdicts[i]!;
      if (verdict.code < 300) accepted.add(r);
      else settle(recipients, (x) => x === r, verdict);
    });
    if (accepted.size === 0) {
      reusable = (await conn.rset()).code < 300;
      return { recipients, temporary: firstTemporary(recipients) };
    }
    const start = await conn.startContent();
    if (start.code >= 400) {
      settle(recipients, (r) => accepted.has(r), start);
      reusable = (await conn.rset()).code < 300;
      return { recipients, temporary: firstTemporary(recipients) };
    }
    await streamContent(deps.content, message, conn);
    // Without its end (the final "." of DATA, or BDAT LAST) the MTA drops what it got when
    // the connection closes (RFC 5321 §4.1.1.4, RFC 3030 §2), so up to here a crash
    // cannot deliver the message. The row says "the end may have gone" durably (SQLite
    // synchronous=FULL) before the end is written: from a crash while it says so the
    // message is done again, a possible second copy but never a lost one (scheduler.ts).
    await deps.index.spoolCommitting(message.id);
    const answer = await conn.endContent();
    settle(recipients, (r) => accepted.has(r), answer);
    reusable = true;
    return { recipients, temporary: firstTemporary(recipients) };
  } catch (err) {
    if (!(err instanceof UpstreamUnavailable)) throw err;
    return { recipients, temporary: err.message };
  } finally {
    if (reusable) deps.pool.release(conn, true);
    else conn.destroy();
  }
}

function firstTemporary(recipients: HeldRecipient[]): string | undefined {
  return recipients.find((r) => r.status === 'pending')?.reply ?? (recipients.some((r) => r.status === 'pending') ? 'no reply' : undefined);
}

/**
 * The held content into the MTA's content, with back-pressure both ways. Content that is
 * not the size recorded at acceptance (missing, cut short) throws before the end is sent,
 * so the MTA drops the transaction rather than deliver a truncated message.
 */
async function streamContent(content: HeldContentStore, message: HeldMessage, conn: UpstreamSmtp): Promise<void> {
  let size = 0;
  for await (const chunk of content.read(message.id)) {
    size += chunk.length;
    if (!conn.writeContent(chunk)) await new Promise<void>((resolve) => conn.onceDrain(resolve));
  }
  if (size !== message.size) throw new Error(`held message ${message.id}: its content is ${size} octets, ${message.size} were accepted`);
}
