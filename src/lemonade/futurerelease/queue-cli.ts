/**
 * `lemonade-gateway queue list | show ID | release ID | cancel ID --config FILE`: the
 * operator's view of the FUTURERELEASE spool, like Postfix's mailq / postsuper. It opens
 * the same store and spool as the running gateway (SQLite in WAL mode takes a second
 * process), so it works while the gateway runs; `release` makes a message due now and the
 * gateway's scheduler, which looks at least once a second, relays it. With the PostgreSQL
 * store it works from any instance's host on every held message (the content is in the
 * database), and any running instance relays a released one.
 */
import type { Config } from '../../config/schema.js';
import { openStore } from '../../store/index.js';
import type { HeldMessage } from '../../store/store.js';
import { heldContentStore } from './open-content.js';
import { isSpoolId } from './spool.js';

export const QUEUE_USAGE = 'lemonade-gateway queue list|show ID|release ID|cancel ID --config FILE';

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

function line(m: HeldMessage): string {
  const pending = m.recipients.filter((r) => r.status === 'pending').length;
  return [m.id, m.state.padEnd(10), iso(m.releaseAt), iso(m.nextAttemptAt), String(m.attempts).padStart(3), String(m.size).padStart(10), `<${m.sender}>`, `${pending}/${m.recipients.length}`].join('  ');
}

/** Runs one queue command; returns the exit status (sysexits.h). */
export async function runQueueCommand(config: Config, args: string[], out: (text: string) => void, err: (text: string) => void): Promise<number> {
  const [verb, id] = args;
  if (verb === 'list' ? args.length !== 1 : args.length !== 2 || !['show', 'release', 'cancel'].includes(verb ?? '')) {
    err(`usage: ${QUEUE_USAGE}`);
    return 64;
  }
  if (id !== undefined && !isSpoolId(id)) {
    err(`${id}: not a queue id`);
    return 65;
  }
  const store = await openStore(config);
  const content = heldContentStore(config, store);
  try {
    if (verb === 'list') {
      const page = 1000;
      let total = 0;
      out('id                        state       release               next attempt          try       size  sender  pending/rcpts');
      for (let offset = 0; ; offset += page) {
        const rows = await store.spoolList(page, offset);
        for (const m of rows) out(line(m));
        total += rows.length;
        if (rows.length < page) break;
      }
      out(`-- ${total} held message${total === 1 ? '' : 's'}`);
      return 0;
    }
    const message = await store.spoolGet(id!);
    if (message === undefined) {
      err(`${id}: no such held message`);
      return 67;
    }
    if (verb === 'show') {
      out(`id: ${message.id}`);
      out(`state: ${message.state}`);
      out(`submitted by: ${message.user || '(the gateway: a delivery status notification)'}`);
      out(`received: ${iso(message.createdAt)}`);
      out(`release at: ${iso(message.releaseAt)}`);
      out(`next attempt: ${iso(message.nextAttemptAt)} (attempts so far: ${message.attempts})`);
      out(`size: ${message.size}`);
      out(`sender: <${message.sender}>${message.mailParams.map(([k, v]) => ` ${k}${v === true ? '' : `=${v}`}`).join('')}`);
      for (const r of message.recipients) {
        out(`recipient: <${r.address}>${r.params.map(([k, v]) => ` ${k}${v === true ? '' : `=${v}`}`).join('')} ${r.status}${r.reply ? ` (${r.reply})` : ''}`);
      }
      if (message.lastError !== undefined) out(`last error: ${message.lastError}`);
      out(`content: ${content.where(message.id)}`);
      return 0;
    }
    if (verb === 'release') {
      if (!(await store.spoolReleaseNow(message.id, Date.now()))) {
        err(`${id}: is being released already`);
        return 75;
      }
      out(`${id}: due now; the running gateway relays it within a second`);
      return 0;
    }
    const cancelled = await store.spoolCancel(message.id);
    if (cancelled === undefined) {
      err(`${id}: is being released, too late to cancel`);
      return 75;
    }
    await content.remove(message.id);
    out(`${id}: cancelled`);
    return 0;
  } finally {
    await store.close();
  }
}
