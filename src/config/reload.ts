/**
 * SIGHUP: which parts of a re-read config take effect in the running gateway.
 *
 * Reloadable are the parts that are read where they are used, so swapping them in the one
 * shared Config object is enough: the TLS certificate files, the log level, the sender
 * policy (the per-login address list is the part operators edit most), the URLAUTH policy
 * (submit users, anonymous fetch, URLs per command) and the shutdown grace time. Everything
 * else (listeners, upstreams, limits, timeouts, pools, the store, dataDir, hostname) is
 * bound into sockets, pools and timers at start: a change there is logged as needing a
 * restart and not applied, so the running gateway never runs half of an old and half of
 * a new setting.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Config } from './schema.js';

/** Key paths whose whole subtree is reloaded on SIGHUP. */
export const RELOADABLE_KEYS = ['tls', 'log', 'submission.senderPolicy', 'imap.urlauth', 'shutdown'] as const;

export interface ReloadOutcome {
  /** Reloadable key paths that changed and now have their new values. */
  applied: string[];
  /** Changed key paths that only a restart applies (kept at their running values). */
  restartNeeded: string[];
}

/** Copies the reloadable parts of next into running, in place, and says what differs. */
export function applyReload(running: Config, next: Config): ReloadOutcome {
  const applied: string[] = [];
  const restartNeeded: string[] = [];
  for (const key of changedKeys(running, next)) {
    const reloadable = RELOADABLE_KEYS.find((r) => key === r || key.startsWith(`${r}.`));
    (reloadable ? applied : restartNeeded).push(key);
  }
  for (const key of RELOADABLE_KEYS) {
    const parts = key.split('.');
    const last = parts.pop()!;
    const into = parts.reduce<Record<string, unknown>>((o, k) => o[k] as Record<string, unknown>, running as unknown as Record<string, unknown>);
    const from = parts.reduce<Record<string, unknown>>((o, k) => o[k] as Record<string, unknown>, next as unknown as Record<string, unknown>);
    into[last] = from[last];
  }
  return { applied, restartNeeded };
}

/** Key paths (a.b.c) of the leaves, or lists, whose values differ. */
export function changedKeys(a: unknown, b: unknown, prefix = ''): string[] {
  const plain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!plain(a) || !plain(b)) return isDeepStrictEqual(a, b) ? [] : [prefix];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => changedKeys(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
}
