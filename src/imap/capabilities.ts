/**
 * What the client is told the server can do: exactly what the upstream advertises, minus
 * what cannot cross the gateway, plus what the gateway itself provides (DESIGN.md: "never
 * send the upstream a command it did not advertise").
 */

/** Upstream capabilities the gateway never relays: they describe the upstream's own link or login. */
function isUpstreamOnly(cap: string): boolean {
  const upper = cap.toUpperCase();
  return (
    upper === 'STARTTLS' ||
    upper === 'LOGINDISABLED' ||
    upper === 'SASL-IR' ||
    upper.startsWith('AUTH=') ||
    // COMPRESS (RFC 4978) would compress the stream the gateway must read to map tags.
    upper.startsWith('COMPRESS=') ||
    // LITERAL+ / LITERAL- are provided by the gateway's own tokenizer (RFC 7888) whatever the upstream does.
    upper === 'LITERAL+' ||
    upper === 'LITERAL-' ||
    // Referrals would send the client around the gateway.
    upper === 'LOGIN-REFERRALS' ||
    upper === 'MAILBOX-REFERRALS'
  );
}

export interface CapabilityContext {
  /** Capabilities the gateway emulates over this upstream (URLAUTH, CATENATE, ...). */
  emulated: readonly string[];
  /** Before authentication. */
  preAuth: boolean;
  /** The client's link is protected by TLS. */
  tlsActive: boolean;
  /** The listener offers STARTTLS. */
  starttlsOffered: boolean;
  /** Plaintext authentication is allowed on this connection without TLS. */
  plaintextAllowed: boolean;
}

/** Split an upstream capability list into unique atoms, keeping the upstream's order. */
export function parseCapabilityList(text: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const atom of text.trim().split(/\s+/)) {
    if (atom === '' || seen.has(atom.toUpperCase())) continue;
    seen.add(atom.toUpperCase());
    out.push(atom);
  }
  return out;
}

export function hasCapability(caps: readonly string[], name: string): boolean {
  const wanted = name.toUpperCase();
  return caps.some((c) => c.toUpperCase() === wanted);
}

/** The list shown to a client (RFC 3501 §7.2.1; IMAP4rev1 first). */
export function advertisedCapabilities(upstream: readonly string[], ctx: CapabilityContext): string[] {
  const out = ['IMAP4rev1'];
  for (const cap of upstream) {
    if (cap.toUpperCase() === 'IMAP4REV1' || isUpstreamOnly(cap)) continue;
    out.push(cap);
  }
  out.push('LITERAL+');
  for (const cap of ctx.emulated) if (!hasCapability(out, cap)) out.push(cap);
  if (ctx.preAuth) {
    out.push('SASL-IR');
    if (ctx.starttlsOffered && !ctx.tlsActive) out.push('STARTTLS');
    // RFC 3501 §6.2.3: LOGINDISABLED, and no AUTH= mechanism that would expose the password.
    if (ctx.tlsActive || ctx.plaintextAllowed) out.push('AUTH=PLAIN');
    else out.push('LOGINDISABLED');
  }
  return out;
}
