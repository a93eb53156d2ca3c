import { isIP, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Logger } from 'pino';
import { tcpUnacked } from '../bpf/tcp-outq.js';
import { MAX_PACKET } from '../hep/chunks.js';
import { afterTurn } from './after-turn.js';
import type { HepSender, SenderStats } from './hep-sender.js';
import { Slab } from './hep-sender-slab.js';
import type { Spool } from './spool.js';
import type { HepTarget } from './target.js';
import { LogLimiter } from '../failures.js';

/** Part of the agent's memory budget (README "Memory and overload"): beyond it, the spool or dropped. */
const MAX_QUEUE_BYTES = 16 * 1024 * 1024;
/** With a spool, what the memory queue holds before new packets go to disk (the collector is slow). */
const SPILL_BYTES = 4 * 1024 * 1024;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;
/** Past this much in Node's socket buffer the kernel is not draining: queue (bounded) instead. */
const MAX_WRITABLE_BYTES = 4 * 1024 * 1024;
/** Spool replay reads this much at a time, and only while Node's socket buffer holds less. */
const REPLAY_READ_BYTES = 1 << 20;
const CLOSE_WAIT_MS = 3000;
/** Groups: how often acknowledgements are checked and the primary is tried again, and when a silent collector counts as gone. */
const ACK_CHECK_MS = 100;
const PRIMARY_RETRY_MS = 500;
const CONNECT_TIMEOUT_MS = 500;
const STALL_MS = 500;
const RETIRE_WAIT_MS = 2000;

/** Consecutive packets written with one write() call; `done` runs once they are in the kernel. */
interface Run {
  bytes: Buffer;
  packets: number;
  done?: () => void;
}

export interface TcpSenderOptions {
  maxQueueBytes?: number;
  /** Where packets go when the collector is down or slow (README "Spool and failover"). */
  spool?: Spool;
}

/**
 * One connection to one collector, with what was written to it and not yet acknowledged by the
 * collector's TCP (SIOCOUTQ). A HEP collector sends nothing back, so TCP acknowledgements are the
 * only receipt there is: when the connection ends, what was not acknowledged is sent again.
 */
class Connection {
  up = false;
  /** Bytes handed to write(), bytes the kernel took (write callbacks), bytes the peer acknowledged. */
  private submitted = 0;
  private inKernel = 0;
  private acked = 0;
  /** After the peer's FIN or an error the counts are final: a reset empties the send queue. */
  private final = false;
  lastProgressMs = Date.now();
  readonly unacked: Array<{ run: Run; end: number }> = [];

  constructor(
    readonly index: number,
    readonly target: HepTarget,
    readonly sock: Socket,
    private readonly tcp: Socket,
  ) {}

  write(run: Run, onWritten: (err: Error | null | undefined) => void): void {
    if (this.unacked.length === 0) this.lastProgressMs = Date.now();
    this.submitted += run.bytes.length;
    this.unacked.push({ run, end: this.submitted });
    this.sock.write(run.bytes, (err) => {
      if (!err) {
        this.inKernel += run.bytes.length;
        run.done?.();
      }
      onWritten(err);
    });
  }

  /**
   * Reads what the peer acknowledged; returns the packets of runs now fully acknowledged. Over
   * TCP: bytes in the kernel minus the unacknowledged send queue (a write still in progress makes
   * this an underestimate: resent, never lost). Over TLS the queue holds ciphertext: only an empty
   * queue acknowledges, everything at once.
   */
  checkAcks(final = false): number {
    if (this.final) return 0;
    this.final = final;
    const outq = tcpUnacked(this.tcp);
    if (outq === undefined) return 0;
    const acked = this.target.tls ? (outq === 0 && this.inKernel === this.submitted ? this.submitted : this.acked) : this.kernelBytes() - outq;
    if (acked > this.acked) {
      this.acked = acked;
      this.lastProgressMs = Date.now();
    }
    let packets = 0;
    while (this.unacked.length > 0 && this.unacked[0].end <= this.acked) packets += this.unacked.shift()!.run.packets;
    return packets;
  }

  /**
   * Bytes the kernel took: what Node dispatched to libuv minus what libuv still queues (a write in
   * progress is partly in the kernel); the write callbacks' count where Node does not say.
   */
  private kernelBytes(): number {
    const tcp = this.tcp as unknown as { _bytesDispatched?: number; _handle?: { writeQueueSize?: number } | null };
    const queued = tcp._handle?.writeQueueSize;
    return tcp._bytesDispatched === undefined || queued === undefined ? this.inKernel : tcp._bytesDispatched - queued;
  }

  /**
   * Drops the connection now, after a last reading of what was acknowledged: over TCP with a reset,
   * so the kernel does not go on sending what is then sent again elsewhere.
   */
  abort(): void {
    this.checkAcks(true);
    if (this.target.tls) this.sock.destroy();
    else this.tcp.resetAndDestroy();
  }

  /**
   * Unacknowledged runs, oldest first; the connection keeps none. The packets of the first run that
   * the peer acknowledged whole are left out (it read them); one it got only part of is sent again whole.
   */
  takeUnacked(): Run[] {
    this.final = true;
    const runs = this.unacked.splice(0);
    if (runs.length === 0) return [];
    const first = runs[0];
    let at = 0;
    let skipped = 0;
    const ackedInRun = this.acked - (first.end - first.run.bytes.length);
    for (let len = 0; at + 6 <= first.run.bytes.length && at + (len = first.run.bytes.readUInt16BE(at + 4)) <= ackedInRun; at += len) skipped++;
    const out = runs.map((u) => u.run);
    if (skipped > 0) out[0] = { bytes: first.run.bytes.subarray(at), packets: first.run.packets - skipped, done: first.run.done };
    return out.filter((r) => r.packets > 0);
  }
}

/**
 * HEP over TCP or TLS to one collector, or to a failover group (primary first, then backups):
 * packets are appended to slabs and written after each event-loop turn, and a full slab at once
 * (one write per slab run, corked); reconnects with backoff. While the collector is away a bounded
 * memory queue keeps packets, or with a spool the disk does; what does not fit is dropped and
 * counted. What the collector did not acknowledge when its connection ends is sent again, first, on
 * the next one. TLS verifies the collector's certificate and name unless the target says insecure.
 */
export class TcpHepSender implements HepSender {
  readonly maxPacket = MAX_PACKET;
  readonly target: HepTarget;
  readonly name: string;
  private readonly targets: HepTarget[];
  private conn?: Connection;
  /** Switching back to the primary: the backup's connection ends first, and nothing is written until it has. */
  private retiring?: Connection;
  private probe?: Connection;
  private lastProbeMs = 0;
  private closing = false;
  private backoffMs = RECONNECT_MIN_MS;
  private failedInRow = 0;
  private lastUp = -1;
  private reconnectTimer?: NodeJS.Timeout;
  private readonly checkTimer?: NodeJS.Timeout;
  private readonly slab = new Slab();
  /** Sealed runs waiting for the connection (unacknowledged ones of a lost connection first), then the open run in the slab. */
  private runs: Run[] = [];
  private openFrom = 0;
  private openPackets = 0;
  private queuedBytes = 0;
  private queuedPackets = 0;
  private readonly scheduleFlush = afterTurn(() => this.write());
  private waitingDrain = false;
  private replaying = false;
  /** Writes handed to the socket whose callback has not run yet. */
  private writing = 0;
  private idle: Array<() => void> = [];
  private readonly counters = { sent: 0, dropped: 0, errors: 0, resent: 0, failovers: 0 };
  private readonly maxQueueBytes: number;
  /** A collector that stays down fails every reconnect: one line per interval, with how many. */
  private readonly warnings = new LogLimiter(10_000);
  private readonly spool?: Spool;

  constructor(
    targets: HepTarget | HepTarget[],
    private readonly log: Logger,
    opts: TcpSenderOptions = {},
  ) {
    this.targets = Array.isArray(targets) ? targets : [targets];
    this.target = this.targets[0];
    this.name = this.targets.map((t) => t.url).join('|');
    this.maxQueueBytes = opts.maxQueueBytes ?? MAX_QUEUE_BYTES;
    this.spool = opts.spool;
    if (this.targets.length > 1) {
      this.checkTimer = setInterval(() => this.check(), ACK_CHECK_MS);
      this.checkTimer.unref();
    }
    this.connect(0);
  }

  private get group(): boolean {
    return this.targets.length > 1;
  }

  /** Opens a connection to targets[index]; `onUp` runs once it can carry HEP. */
  private open(index: number, onUp: (c: Connection) => void, onClose: (c: Connection) => void): Connection {
    const target = this.targets[index];
    const { host, port, tls } = target;
    const tcp = new Socket();
    tcp.setNoDelay(true);
    const sock = tls ? tlsConnect({ socket: tcp, host, servername: isIP(host) ? undefined : host, ca: tls.ca, rejectUnauthorized: !tls.insecure }) : tcp;
    const conn = new Connection(index, target, sock, tcp);
    const timeout = this.group ? setTimeout(() => sock.destroy(new Error('connect timeout')), CONNECT_TIMEOUT_MS) : undefined;
    sock.on(tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timeout);
      conn.up = true;
      onUp(conn);
    });
    // The collector closed its end: what it acknowledged until now is what it read (it would have reset otherwise).
    sock.on('end', () => conn.checkAcks(true));
    sock.on('error', (err) => {
      conn.checkAcks(true);
      const since = this.warnings.due('error', ++this.counters.errors);
      if (since && conn !== this.probe) this.log.warn({ collector: target.url, err: err.message, errors: since }, 'HEP TCP error');
    });
    sock.on('close', () => {
      clearTimeout(timeout);
      onClose(conn);
    });
    tcp.connect(port, host);
    return conn;
  }

  private connect(index: number): void {
    this.conn = this.open(index, (c) => this.connected(c), (c) => this.lost(c));
  }

  private connected(conn: Connection): void {
    this.backoffMs = RECONNECT_MIN_MS;
    this.failedInRow = 0;
    if (this.lastUp >= 0 && this.lastUp !== conn.index) this.counters.failovers++;
    this.lastUp = conn.index;
    this.log.info({ collector: conn.target.url, ...(this.group ? { group: this.name } : {}) }, 'HEP TCP connected');
    this.scheduleFlush();
  }

  /** A connection ended: its unacknowledged runs go first in the queue; then the next collector of the group, or the same one after a backoff. */
  private lost(conn: Connection): void {
    if (conn === this.probe) {
      this.probe = undefined;
      return;
    }
    this.requeue(conn.takeUnacked());
    if (conn === this.retiring) {
      this.retiring = undefined;
      this.scheduleFlush();
      return;
    }
    if (conn !== this.conn) return;
    this.conn = undefined;
    this.settle();
    if (this.closing) return;
    if (conn.up) this.log.warn({ collector: conn.target.url, resent: this.counters.resent }, 'HEP TCP collector lost');
    this.failedInRow++;
    const next = (conn.index + 1) % this.targets.length;
    // Every collector of the group was tried once: wait before starting over with the primary.
    if (this.failedInRow < this.targets.length) return this.connect(next);
    this.failedInRow = 0;
    this.reconnectTimer = setTimeout(() => this.connect(0), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS);
  }

  private requeue(runs: Run[]): void {
    if (runs.length === 0) return;
    this.seal();
    for (const r of runs) {
      this.counters.resent += r.packets;
      this.queuedBytes += r.bytes.length;
      this.queuedPackets += r.packets;
    }
    this.runs = [...runs, ...this.runs];
  }

  /** Groups only: acknowledgements, a collector that went silent, and the primary's return. */
  private check(): void {
    if (this.closing) return;
    const conn = this.conn;
    if (conn?.up) {
      conn.checkAcks();
      if (conn.unacked.length > 0 && Date.now() - conn.lastProgressMs > STALL_MS) {
        this.log.warn({ collector: conn.target.url, ms: STALL_MS }, 'HEP TCP collector acknowledges nothing: failing over');
        conn.abort();
        return;
      }
    }
    this.retiring?.checkAcks();
    if (conn?.up && conn.index > 0 && !this.probe && !this.retiring && Date.now() - this.lastProbeMs >= PRIMARY_RETRY_MS) {
      this.lastProbeMs = Date.now();
      this.probe = this.open(0, (p) => this.switchBack(p), (p) => this.lost(p));
    }
  }

  /** The primary answers again: the backup's connection is ended (it gets what was written to it), then writing goes on to the primary. */
  private switchBack(primary: Connection): void {
    this.probe = undefined;
    const backup = this.conn;
    this.conn = primary;
    if (backup) {
      this.retiring = backup;
      backup.sock.end();
      setTimeout(() => backup.sock.destroyed || backup.abort(), RETIRE_WAIT_MS).unref();
    }
    this.connected(primary);
  }

  send(packet: Buffer, length = packet.length): void {
    if (this.closing || length > MAX_PACKET) {
      this.counters.dropped++;
      return;
    }
    const spool = this.spool;
    // With a spool: once anything is on disk everything goes there (order), and so does what the collector cannot take now.
    if (spool && (spool.records > 0 || !this.conn?.up || this.retiring || this.queuedBytes + length > SPILL_BYTES)) {
      if (!spool.append(packet.subarray(0, length))) this.counters.dropped++;
      this.scheduleFlush();
      return;
    }
    if (this.queuedBytes + length > this.maxQueueBytes) {
      this.counters.dropped++;
      return;
    }
    if (!this.slab.fits(length)) {
      // A full slab goes to the socket now, not after the turn: a backlog of kernel records is worked
      // through in one long turn, and at tens of MB/s of HEP the queue would fill before it ends.
      this.write();
      this.slab.renew(length);
      this.openFrom = 0;
    }
    this.slab.copy(packet, length);
    this.openPackets++;
    this.queuedBytes += length;
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
    const conn = this.conn;
    if (!conn?.up || this.retiring) return this.settle();
    conn.checkAcks();
    const sock = conn.sock;
    if (sock.writableLength > MAX_WRITABLE_BYTES) {
      if (!this.waitingDrain) {
        this.waitingDrain = true;
        sock.once('drain', () => {
          this.waitingDrain = false;
          this.scheduleFlush();
        });
      }
      return;
    }
    if (this.runs.length > 0) {
      const runs = this.runs;
      this.runs = [];
      this.queuedBytes = 0;
      this.queuedPackets = 0;
      sock.cork();
      for (const run of runs) this.writeRun(conn, run);
      sock.uncork();
    }
    if (this.spool && this.spool.records > 0 && !this.replaying && sock.writableLength < REPLAY_READ_BYTES) this.replay(conn);
    this.settle();
  }

  private writeRun(conn: Connection, run: Run): void {
    this.writing++;
    conn.write(run, (err) => {
      this.writing--;
      if (!err) this.counters.sent += run.packets;
      this.settle();
      if (this.spool?.records) this.scheduleFlush();
    });
  }

  /** The spool's oldest packets, to the collector once the memory queue is written. */
  private replay(conn: Connection): void {
    this.replaying = true;
    this.spool!.read(REPLAY_READ_BYTES).then(
      (r) => {
        this.replaying = false;
        if (!r) return;
        const run: Run = { bytes: r.packets, packets: r.records, done: r.done };
        if (this.conn === conn && conn.up && !this.retiring && this.runs.length === 0 && this.openPackets === 0) this.writeRun(conn, run);
        else {
          this.seal();
          this.runs.push(run);
          this.queuedBytes += run.bytes.length;
          this.queuedPackets += run.packets;
        }
        this.scheduleFlush();
      },
      (err: Error) => {
        this.replaying = false;
        this.log.error({ collector: this.name, err: err.message }, 'HEP spool read failed');
      },
    );
  }

  /** Wakes flush() waiters once nothing is in flight and nothing can be written now. */
  private settle(): void {
    if (this.writing > 0 || (this.conn && !this.retiring && this.queuedPackets > 0)) return;
    for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Resolves once the memory queue is written, or at once if the collector is down (the queue stays for the next connection). */
  flush(): Promise<void> {
    this.write();
    if (this.writing === 0 && (this.queuedPackets === 0 || !this.conn || this.retiring)) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  /** Flushes, waits (bounded) for the collector's acknowledgements; what is left goes to the spool, or is counted as dropped. */
  async close(): Promise<void> {
    const deadline = Date.now() + CLOSE_WAIT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)));
    await Promise.race([this.flush(), timeout]);
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.checkTimer);
    this.probe?.sock.destroy();
    const conn = this.conn;
    while (conn?.up && conn.unacked.length > 0 && Date.now() < deadline) {
      conn.checkAcks();
      await new Promise((r) => setTimeout(r, 10));
    }
    this.seal();
    const left = [...(conn?.takeUnacked() ?? []), ...this.runs];
    this.runs = [];
    this.openPackets = this.queuedPackets = this.queuedBytes = 0;
    for (const run of left) {
      if (!this.spool) this.counters.dropped += run.packets;
      else forEachPacket(run.bytes, (p) => this.spool!.append(p) || this.counters.dropped++);
    }
    await this.spool?.close();
    const sock = conn?.sock;
    // What was not acknowledged is in the spool (or counted dropped): the connection must not deliver it after all.
    if (left.length > 0) conn?.abort();
    else if (sock && conn.up) await Promise.race([new Promise<void>((r) => sock.end(r)), timeout]);
    sock?.destroy();
    this.retiring?.abort();
    clearTimeout(timer);
  }

  stats(): SenderStats {
    return {
      ...this.counters,
      queued: this.queuedPackets,
      queuedBytes: this.queuedBytes,
      up: this.conn?.up ? 1 : 0,
      active: this.conn?.up ? this.conn.target.url : null,
      ...(this.spool ? { spool: this.spool.stats() } : {}),
    };
  }
}

/** The HEP packets laid end to end in `bytes` (each says its length at offset 4). */
function forEachPacket(bytes: Buffer, fn: (packet: Buffer) => unknown): void {
  for (let at = 0; at + 6 <= bytes.length; ) {
    const len = bytes.readUInt16BE(at + 4);
    fn(bytes.subarray(at, at + len));
    at += len;
  }
}
