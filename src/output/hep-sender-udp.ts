import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { MAX_UDP_PACKET } from '../hep/chunks.js';
import type { HepSender, SenderStats } from './hep-sender.js';
import { Slab } from './hep-sender-slab.js';
import type { HepTarget } from './target.js';

// Sends not yet completed by the kernel; past this the collector (or loopback) is not keeping up: drop and count.
const MAX_UDP_INFLIGHT = 16384;
const ERROR_LOG_INTERVAL_MS = 10_000;
const CLOSE_WAIT_MS = 1000;

/** HEP over UDP: one datagram per packet, never blocks, drops and counts when it cannot send. */
export class UdpHepSender implements HepSender {
  readonly maxPacket = MAX_UDP_PACKET;
  private readonly sock: UdpSocket;
  private readonly slab = new Slab();
  private readonly counters = { sent: 0, dropped: 0, errors: 0 };
  private inflight = 0;
  private inflightBytes = 0;
  private connected = false;
  private lastWarnMs = -Infinity;
  private idle: Array<() => void> = [];

  constructor(
    readonly target: HepTarget,
    private readonly log: Logger,
  ) {
    this.sock = createSocket(isIPv6(target.host) ? 'udp6' : 'udp4');
    // A collector that is down answers with ICMP port unreachable: an error on the next send, counted, never fatal.
    this.sock.on('error', (err) => this.failed(err));
    this.sock.connect(target.port, target.host, () => (this.connected = true));
  }

  send(packet: Buffer): void {
    if (!this.connected || this.inflight >= MAX_UDP_INFLIGHT || packet.length > MAX_UDP_PACKET) {
      this.counters.dropped++;
      return;
    }
    this.inflight++;
    this.inflightBytes += packet.length;
    const size = packet.length;
    this.sock.send(this.slab.copy(packet), (err) => this.onSent(err, size));
  }

  private onSent(err: Error | null, size: number): void {
    this.inflight--;
    this.inflightBytes -= size;
    if (err) this.failed(err);
    else this.counters.sent++;
    if (this.inflight === 0) for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Counts every failure; a collector that stays down gets one log line per ERROR_LOG_INTERVAL_MS, not one per packet. */
  private failed(err: Error): void {
    this.counters.errors++;
    const now = Date.now();
    if (now - this.lastWarnMs < ERROR_LOG_INTERVAL_MS) return;
    this.lastWarnMs = now;
    this.log.warn({ collector: this.target.url, err: err.message, errors: this.counters.errors }, 'HEP UDP sends failing');
  }

  flush(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
    this.counters.dropped += this.inflight;
    await new Promise<void>((resolve) => this.sock.close(() => resolve()));
  }

  stats(): SenderStats {
    return { ...this.counters, queued: this.inflight, queuedBytes: this.inflightBytes };
  }
}
