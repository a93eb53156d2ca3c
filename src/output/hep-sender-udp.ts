import { lookup } from 'node:dns';
import { isIP } from 'node:net';
import { getSystemErrorName } from 'node:util';
import type { Logger } from 'pino';
import { SENDMMSG_MAX, UdpBatchSocket, type UdpBatchResult } from '../bpf/udp-batch.js';
import { MAX_UDP_PACKET } from '../hep/chunks.js';
import { afterTurn } from './after-turn.js';
import type { HepSender, SenderStats } from './hep-sender.js';
import type { HepTarget } from './target.js';

/** Packets queued between two sendmmsg() calls: a ring-buffer batch's worth at high rates. */
const QUEUE_BYTES = 1 << 20;
const ERROR_LOG_INTERVAL_MS = 10_000;
const UP_AFTER_MS = 10_000;

/**
 * HEP over UDP: packets sent while the agent works through one ring-buffer batch (one event-loop
 * turn) are queued in one reused buffer and leave together, in one sendmmsg() per 1024, right after
 * the batch (setImmediate) or as soon as the queue is full. Never blocks; what cannot be sent is
 * counted, never thrown.
 */
export class UdpHepSender implements HepSender {
  readonly maxPacket = MAX_UDP_PACKET;
  readonly name: string;
  private sock?: UdpBatchSocket;
  private closed = false;
  private readonly queue = Buffer.allocUnsafe(QUEUE_BYTES);
  private readonly lengths = new Uint32Array(SENDMMSG_MAX);
  private queued = 0;
  private queuedBytes = 0;
  private readonly scheduleSend = afterTurn(() => this.sendQueued());
  private readonly counters = { sent: 0, dropped: 0, errors: 0 };
  private lastWarnMs = -Infinity;
  /** When a datagram was last refused (the collector's ICMP port unreachable): up is no refusal within UP_AFTER_MS. */
  private lastRefusedMs = -Infinity;

  constructor(
    readonly target: HepTarget,
    private readonly log: Logger,
  ) {
    this.name = target.url;
    if (isIP(target.host)) this.connect(target.host);
    else lookup(target.host, (err, address) => (err ? this.connectFailed(err) : this.connect(address)));
  }

  /** Until connected (a name being resolved) or when connecting failed, packets are dropped and counted. */
  private connect(ip: string): void {
    if (this.closed) return;
    try {
      this.sock = new UdpBatchSocket(ip, this.target.port);
    } catch (err) {
      this.connectFailed(err as Error);
    }
  }

  private connectFailed(err: Error): void {
    this.counters.errors++;
    this.log.error({ collector: this.target.url, err: err.message }, 'HEP UDP collector unreachable: its packets are dropped');
  }

  send(packet: Buffer, length = packet.length): void {
    if (!this.sock || length > MAX_UDP_PACKET) {
      this.counters.dropped++;
      return;
    }
    if (this.queued === SENDMMSG_MAX || this.queuedBytes + length > QUEUE_BYTES) this.sendQueued();
    packet.copy(this.queue, this.queuedBytes, 0, length);
    this.lengths[this.queued++] = length;
    this.queuedBytes += length;
    this.scheduleSend();
  }

  private sendQueued(): void {
    if (this.queued === 0 || !this.sock) return;
    const r: UdpBatchResult = this.sock.send(this.queue, this.lengths, this.queued);
    this.queued = this.queuedBytes = 0;
    this.counters.sent += r.sent;
    // A send error (the collector's ICMP port unreachable) is an error; a full socket buffer drops what was left.
    this.counters.errors += r.failed;
    this.counters.dropped += r.unsent;
    if (r.failed) this.lastRefusedMs = Date.now();
    if (r.errno) this.warn(getSystemErrorName(-r.errno));
  }

  /** A collector that stays down gets one log line per ERROR_LOG_INTERVAL_MS, not one per packet. */
  private warn(err: string): void {
    const now = Date.now();
    if (now - this.lastWarnMs < ERROR_LOG_INTERVAL_MS) return;
    this.lastWarnMs = now;
    this.log.warn({ collector: this.target.url, err, ...this.counters }, 'HEP UDP sends failing');
  }

  /** Hands the queue to the kernel now: once it resolves, every packet is sent or counted. */
  flush(): Promise<void> {
    this.sendQueued();
    return Promise.resolve();
  }

  async close(): Promise<void> {
    this.sendQueued();
    this.closed = true;
    this.sock?.close();
    this.sock = undefined;
  }

  stats(): SenderStats {
    return { ...this.counters, queued: this.queued, queuedBytes: this.queuedBytes, up: this.sock && Date.now() - this.lastRefusedMs > UP_AFTER_MS ? 1 : 0 };
  }
}
