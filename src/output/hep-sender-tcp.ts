import { isIP, Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { MAX_PACKET } from '../hep/chunks.js';
import { afterTurn } from './after-turn.js';
import type { HepSender, SenderStats } from './hep-sender.js';
import { Slab } from './hep-sender-slab.js';
import type { HepTarget } from './target.js';
import { LogLimiter } from '../failures.js';

const MAX_QUEUE_BYTES = 64 * 1024 * 1024;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;
/** Past this much in Node's socket buffer the kernel is not draining: queue (bounded) instead. */
const MAX_WRITABLE_BYTES = 4 * 1024 * 1024;
const CLOSE_WAIT_MS = 3000;

/** Consecutive packets in one slab, written with one write() call. */
interface Run {
  bytes: Buffer;
  packets: number;
}

export interface TcpSenderOptions {
  maxQueueBytes?: number;
}

/**
 * HEP over TCP or TLS: packets are appended to slabs and written once per event-loop turn (one
 * write per slab run, corked); reconnects with backoff; while the collector is away a bounded
 * queue keeps packets, and what does not fit is dropped and counted. TLS verifies the collector's
 * certificate and name unless the target says insecure.
 */
export class TcpHepSender implements HepSender {
  readonly maxPacket = MAX_PACKET;
  private sock?: Socket | TLSSocket;
  private up = false;
  /** A connection attempt is under way: flush() waits for its outcome. */
  private connecting = false;
  private closing = false;
  private backoffMs = RECONNECT_MIN_MS;
  private reconnectTimer?: NodeJS.Timeout;
  private readonly slab = new Slab();
  /** Sealed runs waiting for the connection, then the open run in the slab. */
  private runs: Run[] = [];
  private openFrom = 0;
  private openPackets = 0;
  private queuedBytes = 0;
  private queuedPackets = 0;
  private readonly scheduleFlush = afterTurn(() => this.write());
  /** Writes handed to the socket whose callback has not run yet. */
  private writing = 0;
  private idle: Array<() => void> = [];
  private readonly counters = { sent: 0, dropped: 0, errors: 0 };
  private readonly maxQueueBytes: number;
  /** A collector that stays down fails every reconnect: one line per interval, with how many. */
  private readonly warnings = new LogLimiter(10_000);

  constructor(
    readonly target: HepTarget,
    private readonly log: Logger,
    opts: TcpSenderOptions = {},
  ) {
    this.maxQueueBytes = opts.maxQueueBytes ?? MAX_QUEUE_BYTES;
    this.connect();
  }

  private connect(): void {
    const { host, port, tls } = this.target;
    const sock = tls
      ? tlsConnect({ host, port, servername: isIP(host) ? undefined : host, ca: tls.ca, rejectUnauthorized: !tls.insecure })
      : new Socket();
    this.sock = sock;
    this.connecting = true;
    sock.setNoDelay(true);
    sock.on(tls ? 'secureConnect' : 'connect', () => {
      this.up = true;
      this.connecting = false;
      this.backoffMs = RECONNECT_MIN_MS;
      this.log.info({ collector: this.target.url }, 'HEP TCP connected');
      this.scheduleFlush();
    });
    sock.on('error', (err) => {
      const since = this.warnings.due('error', ++this.counters.errors);
      if (since) this.log.warn({ collector: this.target.url, err: err.message, errors: since }, 'HEP TCP error');
    });
    sock.on('close', () => {
      this.up = false;
      this.connecting = false;
      this.settle();
      if (this.closing) return;
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS);
    });
    if (!tls) sock.connect(port, host);
  }

  send(packet: Buffer): void {
    if (this.closing || this.queuedBytes + packet.length > this.maxQueueBytes || packet.length > MAX_PACKET) {
      this.counters.dropped++;
      return;
    }
    if (!this.slab.fits(packet.length)) {
      this.seal();
      this.slab.renew(packet.length);
      this.openFrom = 0;
    }
    this.slab.copy(packet);
    this.openPackets++;
    this.queuedBytes += packet.length;
    this.queuedPackets++;
    this.scheduleFlush();
  }

  /** Closes the open run: what the slab holds since the last seal becomes one queued write. */
  private seal(): void {
    if (this.openPackets === 0) return;
    this.runs.push({ bytes: this.slab.view(this.openFrom), packets: this.openPackets });
    this.openFrom = this.slab.offset;
    this.openPackets = 0;
  }

  private write(): void {
    this.seal();
    const sock = this.sock;
    if (!this.up || !sock || this.runs.length === 0) return this.settle();
    if (sock.writableLength > MAX_WRITABLE_BYTES) {
      sock.once('drain', () => this.scheduleFlush());
      return;
    }
    const runs = this.runs;
    this.runs = [];
    this.queuedBytes = 0;
    this.queuedPackets = 0;
    sock.cork();
    for (const run of runs) {
      this.writing++;
      sock.write(run.bytes, (err) => {
        this.writing--;
        if (err) this.counters.dropped += run.packets;
        else this.counters.sent += run.packets;
        this.settle();
      });
    }
    sock.uncork();
  }

  /** Wakes flush() waiters once nothing is in flight and nothing can be written now. */
  private settle(): void {
    if (this.writing > 0 || ((this.up || this.connecting) && this.queuedPackets > 0)) return;
    for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Resolves once the queue is written, or at once if the collector is down (the queue stays for the next connection). */
  flush(): Promise<void> {
    this.write();
    if (this.writing === 0 && (this.queuedPackets === 0 || !(this.up || this.connecting))) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  async close(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)));
    await Promise.race([this.flush(), timeout]);
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    this.counters.dropped += this.queuedPackets;
    this.runs = [];
    this.openPackets = this.queuedPackets = this.queuedBytes = 0;
    const sock = this.sock;
    if (sock && this.up) await Promise.race([new Promise<void>((r) => sock.end(r)), timeout]);
    sock?.destroy();
    clearTimeout(timer);
  }

  stats(): SenderStats {
    return { ...this.counters, queued: this.queuedPackets, queuedBytes: this.queuedBytes, up: this.up ? 1 : 0 };
  }
}
