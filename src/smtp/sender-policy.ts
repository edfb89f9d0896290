/**
 * Which envelope senders an authenticated user may use (RFC 6409 §6.1: the submission
 * server may insist the sender belongs to the user).
 */
import type { Config } from '../config/schema.js';

export function senderAllowed(policy: Config['submission']['senderPolicy'], user: string, sender: string): boolean {
  if (policy.mode === 'any') return true;
  // The null reverse-path is for bounces, never for a user's own submissions.
  if (sender === '') return false;
  const wanted = sender.toLowerCase();
  const login = user.toLowerCase();
  if (login.includes('@') && wanted === login) return true;
  if (policy.domains.some((d) => wanted === `${login}@${d.toLowerCase()}`)) return true;
  return (policy.addresses[user] ?? policy.addresses[login] ?? []).some((a) => a.toLowerCase() === wanted);
}
