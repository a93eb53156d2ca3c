import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { HepTarget } from './target.js';
import { MAX_PACKET, MAX_UDP_PACKET } from '../hep/chunks.js';

export interface SenderStats {
  sent: number;
  dropped: number;
  errors: number;
  queuedBytes: number;
}

export interface HepSender {
  readonly target: HepTarget;
  /** Largest packet this transport carries. */
  readonly maxPacket: number;
  /** Takes a copy of `packet`: the caller may reuse its buffer as soon as this returns. Never throws, never blocks. */
  send(packet: Buffer): void;
  close(): Promise<void>;
  stats(): SenderStats;
}

/** Packets are copied into slabs, so a send costs no allocation of its own; a slab is dropped when full. */
const SLAB_BYTES = 1 << 20;
class Slab {
  private buf = Buffer.allocUnsafe(SLAB_BYTES);
  private used = 0;

  copy(packet: Buffer): Buffer {
    if (this.used + packet.length > this.buf.length) {
      this.buf = Buffer.allocUnsafe(Math.max(SLAB_BYTES, packet.length));
      this.used = 0;
    }
    const out = this.buf.subarray(this.used, this.used + packet.length);
    packet.copy(out);
    this.used += (packet.length + 7) & ~7;
    return out;
  }
}

// Sends not yet completed by the kernel; past this the collector (or loopback) is not keeping up: drop and count.
const MAX_UDP_INFLIGHT = 16384;
const ERROR_LOG_INTERVAL_MS = 10_000;

export class UdpHepSender implements HepSender {
  readonly maxPacket = MAX_UDP_PACKET;
  private readonly sock: UdpSocket;
  private readonly slab = new Slab();
  private readonly counters: SenderStats = { sent: 0, dropped: 0, errors: 0, queuedBytes: 0 };
  private inflight = 0;
  private connected = false;
  private lastWarnMs = -Infinity;
  private readonly onSent = (err: Error | null) => {
    this.inflight--;
    if (err) this.failed(err);
    else this.counters.sent++;
  };

  /** Counts every failure; a collector that stays down gets one log line per ERROR_LOG_INTERVAL_MS, not one per packet. */
  private failed(err: Error): void {
    this.counters.errors++;
    const now = Date.now();
    if (now - this.lastWarnMs < ERROR_LOG_INTERVAL_MS) return;
    this.lastWarnMs = now;
    this.log.warn({ collector: this.target.url, err: err.message, errors: this.counters.errors }, 'HEP UDP sends failing');
  }

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
    if (!this.connected || this.inflight >= MAX_UDP_INFLIGHT) {
      this.counters.dropped++;
      return;
    }
    this.inflight++;
    this.sock.send(this.slab.copy(packet), this.onSent);
  }

  async close(): Promise<void> {
    for (let i = 0; i < 200 && this.inflight > 0; i++) await new Promise((r) => setTimeout(r, 5));
    await new Promise<void>((resolve) => this.sock.close(() => resolve()));
  }

  stats(): SenderStats {
    return { ...this.counters };
  }
}

const MAX_TCP_QUEUE_BYTES = 64 * 1024 * 1024;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;

/** HEP over TCP: one write per event-loop turn, reconnect with backoff, bounded queue while the collector is away. */
export class TcpHepSender implements HepSender {
  readonly maxPacket = MAX_PACKET;
  private sock?: Socket;
  private up = false;
  private closing = false;
  private backoffMs = RECONNECT_MIN_MS;
  private reconnectTimer?: NodeJS.Timeout;
  /** Packets waiting for the next write (this turn) or for the connection, back to back: one copy per packet. */
  private queue = Buffer.allocUnsafe(64 << 10);
  private queuedBytes = 0;
  private queuedPackets = 0;
  private flushScheduled = false;
  private readonly counters: SenderStats = { sent: 0, dropped: 0, errors: 0, queuedBytes: 0 };

  constructor(
    readonly target: HepTarget,
    private readonly log: Logger,
  ) {
    this.connect();
  }

  private connect(): void {
    const sock = new Socket();
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on('connect', () => {
      this.up = true;
      this.backoffMs = RECONNECT_MIN_MS;
      this.log.info({ collector: this.target.url }, 'HEP TCP connected');
      this.scheduleFlush();
    });
    sock.on('error', (err) => {
      this.counters.errors++;
      this.log.warn({ collector: this.target.url, err: err.message }, 'HEP TCP error');
    });
    sock.on('close', () => {
      this.up = false;
      if (this.closing) return;
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS);
    });
    sock.connect(this.target.port, this.target.host);
  }

  send(packet: Buffer): void {
    const need = this.queuedBytes + packet.length;
    if (need > MAX_TCP_QUEUE_BYTES) {
      this.counters.dropped++;
      return;
    }
    if (need > this.queue.length) {
      const bigger = Buffer.allocUnsafe(Math.min(MAX_TCP_QUEUE_BYTES, Math.max(need, this.queue.length * 2)));
      this.queue.copy(bigger, 0, 0, this.queuedBytes);
      this.queue = bigger;
    }
    packet.copy(this.queue, this.queuedBytes);
    this.queuedBytes = need;
    this.queuedPackets++;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (!this.up || !this.sock || this.queuedPackets === 0) return;
    // The kernel buffer is full: keep queueing (bounded) rather than growing Node's write buffer.
    if (this.sock.writableLength > 4 * 1024 * 1024) {
      this.sock.once('drain', () => this.scheduleFlush());
      return;
    }
    // The socket keeps the written buffer until it is sent: hand it over and start a new one.
    const batch = this.queue.subarray(0, this.queuedBytes);
    const count = this.queuedPackets;
    this.queue = Buffer.allocUnsafe(Math.max(64 << 10, batch.length)); // sized to the traffic, grows on demand
    this.queuedBytes = 0;
    this.queuedPackets = 0;
    this.sock.write(batch, (err) => {
      if (err) this.counters.dropped += count;
      else this.counters.sent += count;
    });
  }

  async close(): Promise<void> {
    this.flush();
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    const sock = this.sock;
    if (!sock || !this.up) {
      this.counters.dropped += this.queuedPackets;
      sock?.destroy();
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        sock.destroy();
        resolve();
      }, 3000);
      sock.end(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  stats(): SenderStats {
    return { ...this.counters, queuedBytes: this.queuedBytes };
  }
}

export function createSender(target: HepTarget, log: Logger): HepSender {
  return target.transport === 'udp' ? new UdpHepSender(target, log) : new TcpHepSender(target, log);
}
