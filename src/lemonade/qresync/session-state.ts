/**
 * A client session's CONDSTORE/QRESYNC state while the gateway emulates them (RFC 7162
 * over an upstream without mod-sequences): what the client enabled, the view of its
 * selected mailbox, and the rewriting of the upstream's untagged responses the client is
 * shown: MODSEQ into FETCH (§3.1.4.2, once CONDSTORE is enabled), VANISHED for EXPUNGE
 * (§3.2.10.2, once QRESYNC is enabled), EXISTS and EXPUNGE kept in the view.
 */
import type { ResponseHead } from '../../imap/protocol/parser.js';
import { untagged } from '../../imap/protocol/writer.js';
import { fetchHeadFlags, insertFetchModseq, parseFetchHead } from './responses.js';
import type { MailboxView } from './view.js';

/** Command words that make a FETCH/STORE/SEARCH a CONDSTORE enabling command (RFC 7162 §3.1). */
const ENABLING_WORDS = /MODSEQ|CHANGEDSINCE|UNCHANGEDSINCE/i;

export class CondstoreSession {
  /** Capabilities the client enabled that the gateway provides (CONDSTORE, QRESYNC). */
  readonly enabled = new Set<string>();
  /** The selected mailbox, while CONDSTORE is enabled and a mailbox is selected. */
  view: MailboxView | undefined;
  /** The mailbox the gateway's SELECT/EXAMINE opened, for a CONDSTORE enabling command later (§3.1). */
  selected: { mailbox: string; uidValidity: number; exists: number } | undefined;

  /** No mailbox is selected any more (CLOSE, UNSELECT, a failed SELECT). */
  deselect(): void {
    this.view = undefined;
    this.selected = undefined;
  }

  get condstore(): boolean {
    return this.enabled.has('CONDSTORE');
  }

  get qresync(): boolean {
    return this.enabled.has('QRESYNC');
  }

  /**
   * Whether a FETCH/STORE/SEARCH must be answered by the emulation: always once CONDSTORE
   * is enabled (MODSEQ in every FETCH response, §3.1.4.2), and for a command that enables
   * it (§3.1: MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE in its first line).
   */
  wants(firstLine: Buffer): boolean {
    return this.condstore || ENABLING_WORDS.test(firstLine.toString('latin1', 0, Math.min(firstLine.length, 8192)));
  }

  /**
   * The upstream untagged response `first` (its first segment) as the client must see it:
   * the same bytes, a rewritten segment, or a promise of one when a change must be
   * recorded before its mod-sequence is known.
   */
  rewriteUntagged(first: Buffer, head: ResponseHead): Buffer | Promise<Buffer> {
    const view = this.view;
    if (view === undefined || head.number === undefined) return first;
    switch (head.kind) {
      case 'EXISTS':
        view.exists(head.number);
        return first;
      case 'EXPUNGE': {
        const uid = view.expunge(head.number);
        // §3.2.10.2: once QRESYNC is enabled, VANISHED replaces EXPUNGE. A message whose
        // UID the gateway never learnt keeps its EXPUNGE (the client has no UID for it either).
        return this.qresync && uid !== 0 ? untagged(`VANISHED ${uid}`) : first;
      }
      case 'FETCH': {
        const info = parseFetchHead(first);
        if (info === undefined) return first;
        // The head is parsed once here for all three uses (this runs for every FETCH response).
        const modseq = view.observe(info.number, info.uid, fetchHeadFlags(first, info));
        const insert = (m: number): Buffer => insertFetchModseq(first, m, info)?.head ?? first;
        return typeof modseq === 'number' ? insert(modseq) : modseq.then(insert);
      }
      default:
        return first;
    }
  }
}
