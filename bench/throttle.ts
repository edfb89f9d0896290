/**
 * A slow client link for the benchmarks: a TCP relay on 127.0.0.1 that passes each
 * direction through a token bucket (the link's rate) and then delays it by half the
 * round-trip time (its latency), counting the bytes it carries each way.
 *
 *   const link = new SlowLink({ bitsPerSecond: 1_000_000, rttMs: 50 });
 *   const imapPort = await link.forward(gw.imapsPort);      // the client connects here
 *   const smtpPort = await link.forward(gw.submissionsPort);
 *   ... link.bytes.up, link.bytes.down ...
 *   await link.close();
 *
 * One link may forward several ports: all their connections share its two buckets, as a
 * phone's IMAP and SMTP connections share its radio. The bytes counted are TCP payload
 * (TLS records when the client speaks TLS), neither TCP/IP headers nor retransmissions.
 */
import net from 'node:net';

export interface LinkOptions {
  /** Rate of each direction, in bits per second. */
  bitsPerSecond: number;
  /** Round-trip time the link adds; each direction delays every byte by half of it. */
  rttMs: number;
}

/**
 * Largest piece that leaves the bucket at once, and the bucket's depth: one TCP segment's
 * payload on Ethernet. A deeper bucket would let every short command or reply through at
 * no cost in time and the big transfers in bursts; a real access link serializes each packet.
 */
const SLICE = 1460;
/** Bytes of one connection's direction held here before its sender is paused (and resumed below LOW). */
const HIGH = 64 * 1024;
const LOW = 16 * 1024;

interface Piece {
  data: Buffer;
  from: net.Socket;
  to: net.Socket;
  /** The sender has finished: end `to` once everything before this piece is delivered. */
  end?: boolean;
}

/**
 * One direction of the link, shared by all connections: a FIFO through a token bucket, then
 * a fixed delay. Tokens accrue at the rate up to SLICE; a slice leaves as soon as the
 * bucket holds any token, which may leave it in debt, so a late timer costs no rate.
 */
class Direction {
  private waiting: Piece[] = [];
  private inFlight: Array<Piece & { at: number }> = [];
  private tokens = SLICE;
  private refilled = performance.now();
  private pumpTimer: NodeJS.Timeout | undefined;
  private deliverTimer: NodeJS.Timeout | undefined;
  /** A destination refused more (write() returned false): deliveries wait for its 'drain'. */
  private blocked = false;
  /** Bytes taken from each sender and not yet delivered, for pause/resume. */
  private held = new WeakMap<net.Socket, number>();
  carried = 0;

  constructor(
    private readonly bytesPerMs: number,
    private readonly delayMs: number,
  ) {}

  push(from: net.Socket, to: net.Socket, chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i += SLICE) this.waiting.push({ data: chunk.subarray(i, i + SLICE), from, to });
    const held = (this.held.get(from) ?? 0) + chunk.length;
    this.held.set(from, held);
    // Back-pressure: the sender's own socket buffers fill and TCP slows the sender down.
    if (held > HIGH) from.pause();
    this.pump();
  }

  /** The sender ended its half: pass the FIN on after its data, in order. */
  pushEnd(from: net.Socket, to: net.Socket): void {
    this.waiting.push({ data: Buffer.alloc(0), from, to, end: true });
    this.pump();
  }

  /** Drops what can no longer be delivered to a socket that is gone (what it sent still goes). */
  forget(socket: net.Socket): void {
    const keep = (p: Piece) => p.to !== socket;
    this.waiting = this.waiting.filter(keep);
    this.inFlight = this.inFlight.filter(keep);
  }

  private pump(): void {
    if (this.pumpTimer) return;
    const now = performance.now();
    this.tokens = Math.min(SLICE, this.tokens + (now - this.refilled) * this.bytesPerMs);
    this.refilled = now;
    while (this.waiting.length > 0 && this.tokens > 0) {
      const piece = this.waiting.shift()!;
      this.tokens -= piece.data.length;
      this.inFlight.push({ ...piece, at: now + this.delayMs });
    }
    if (this.waiting.length > 0) {
      // Wait until the debt is paid and a token more has accrued.
      const ms = Math.max(1, Math.ceil((1 - this.tokens) / this.bytesPerMs));
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = undefined;
        this.pump();
      }, ms);
    }
    this.deliver();
  }

  private deliver(): void {
    if (this.deliverTimer || this.blocked) return;
    const now = performance.now();
    // Every piece gets the same delay after leaving the bucket, so inFlight is in time order.
    while (this.inFlight.length > 0 && this.inFlight[0]!.at <= now) {
      const piece = this.inFlight.shift()!;
      if (piece.to.destroyed) continue;
      if (piece.end) {
        piece.to.end();
        continue;
      }
      this.carried += piece.data.length;
      const left = (this.held.get(piece.from) ?? 0) - piece.data.length;
      this.held.set(piece.from, left);
      if (left < LOW && piece.from.isPaused()) piece.from.resume();
      if (!piece.to.write(piece.data)) {
        this.blocked = true;
        const go = () => {
          piece.to.off('close', go);
          piece.to.off('drain', go);
          this.blocked = false;
          this.deliver();
        };
        piece.to.once('drain', go);
        piece.to.once('close', go);
        return;
      }
    }
    if (this.inFlight.length > 0) {
      this.deliverTimer = setTimeout(() => {
        this.deliverTimer = undefined;
        this.deliver();
      }, Math.max(1, Math.ceil(this.inFlight[0]!.at - now)));
    }
  }

  stop(): void {
    clearTimeout(this.pumpTimer);
    clearTimeout(this.deliverTimer);
  }
}

export class SlowLink {
  private readonly upward: Direction;
  private readonly downward: Direction;
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: LinkOptions) {
    const bytesPerMs = opts.bitsPerSecond / 8 / 1000;
    this.upward = new Direction(bytesPerMs, opts.rttMs / 2);
    this.downward = new Direction(bytesPerMs, opts.rttMs / 2);
  }

  /** TCP payload bytes the link delivered: up = client to server, down = server to client. */
  get bytes(): { up: number; down: number } {
    return { up: this.upward.carried, down: this.downward.carried };
  }

  /** Listens on an ephemeral port of 127.0.0.1 and relays every connection to 127.0.0.1:upstreamPort through the link. */
  async forward(upstreamPort: number): Promise<number> {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => this.relay(client, upstreamPort));
    this.servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as net.AddressInfo).port;
  }

  private relay(client: net.Socket, upstreamPort: number): void {
    this.sockets.add(client);
    client.setNoDelay(true);
    client.on('error', () => undefined);
    // The kernel completed the client's TCP handshake locally; on a real link the client's
    // first bytes could only leave one round trip after its SYN, so hold them that long.
    setTimeout(() => {
      if (client.destroyed) return;
      // Half-open both ways: a FIN is relayed after the data before it (pushEnd), not at once.
      const server = net.connect({ host: '127.0.0.1', port: upstreamPort, allowHalfOpen: true });
      this.sockets.add(server);
      server.setNoDelay(true);
      server.on('error', () => undefined);
      const closed = (socket: net.Socket, peer: net.Socket) => (hadError: boolean) => {
        this.sockets.delete(socket);
        this.upward.forget(socket);
        this.downward.forget(socket);
        // An aborted connection aborts its peer; a clean close leaves the peer to finish
        // receiving what is still on the link, after which its FIN arrives too.
        if (hadError) peer.destroy();
      };
      client.once('close', closed(client, server));
      server.once('close', closed(server, client));
      server.once('connect', () => {
        client.on('data', (chunk: Buffer) => this.upward.push(client, server, chunk));
        server.on('data', (chunk: Buffer) => this.downward.push(server, client, chunk));
        client.once('end', () => this.upward.pushEnd(client, server));
        server.once('end', () => this.downward.pushEnd(server, client));
        client.resume();
      });
    }, this.opts.rttMs);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.upward.stop();
    this.downward.stop();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
