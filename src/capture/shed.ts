import type { Logger } from 'pino';
import { OFF_SOURCE, RECORD_HEADER_SIZE, SRC_TLS_CONN } from './record.js';

/** Batches processed back to back for this long without the event loop turning, and the ring buffer overflowing: the pipeline is overloaded. */
export const MAX_BUSY_MS = 1000;
/** No shedding for this long ends an overload episode (and its log line). */
const QUIET_MS = 5000;

/**
 * Overload shedding, before a record is decoded (no per-message JS object). The native reader
 * hands batches over while JS returns them, so when JS cannot keep up it works through batch after
 * batch and the event loop never turns: timers (the hold, expiries, the stats line), the HEP
 * senders' flushes and /metrics all wait. Past MAX_BUSY_MS of that, once the kernel also counts
 * records lost to a full ring buffer (so records are being lost anyway), the data records of every
 * batch are dropped and counted (`shed.lag`) until the loop has turned once: the old records that
 * waited in the ring buffer go instead of new ones, and the agent is back to current traffic.
 * Control records (exec, TLS connection, connection events) still go through, since one lost costs
 * more than its own message. A long stretch the ring buffer absorbs (a cold start, a pause) sheds
 * nothing; below overload a batch takes a few ms and the loop turns between batches.
 */
export class Shedder {
  /** Data records dropped, by cause. */
  readonly shed = { lag: 0 };
  private busySinceMs?: number;
  /** The kernel's ring-buffer loss count when this stretch went past maxBusyMs; then whether it grew since. */
  private lostAtThreshold?: number;
  private shedding = false;
  /** Shed count when the episode's first line was logged; undefined outside an episode. */
  private episodeStart?: { count: number; atMs: number };
  private lastShedMs = 0;
  private quietTimer?: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    /** Records the kernel lost to a full ring buffer so far (read only past maxBusyMs). */
    private readonly lostInKernel: () => number,
    private readonly maxBusyMs = MAX_BUSY_MS,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** The batch itself, or, when the pipeline lags, a batch of only its control records (the data records counted as shed). */
  admit(batch: Buffer): Buffer {
    const now = this.nowMs();
    if (this.busySinceMs === undefined) {
      this.busySinceMs = now;
      setImmediate(() => {
        this.busySinceMs = this.lostAtThreshold = undefined;
        this.shedding = false;
      });
    }
    if (!this.shedding && now - this.busySinceMs > this.maxBusyMs) {
      const lost = this.lostInKernel();
      this.lostAtThreshold ??= lost;
      this.shedding = lost > this.lostAtThreshold;
    }
    if (!this.shedding) {
      this.endIfQuiet(now);
      return batch;
    }
    this.lastShedMs = now;
    if (!this.episodeStart) {
      this.episodeStart = { count: this.shed.lag, atMs: now };
      this.log.warn({ busyMs: now - this.busySinceMs! }, 'overload: the pipeline cannot keep up with the kernel; shedding data records until it catches up (capture.shed.lag)');
      // The end is logged even if no traffic follows.
      this.quietTimer = setInterval(() => this.endIfQuiet(this.nowMs()), 1000).unref();
    }
    return this.controlRecords(batch);
  }

  private endIfQuiet(now: number): void {
    if (!this.episodeStart || now - this.lastShedMs < QUIET_MS) return;
    const { count, atMs } = this.episodeStart;
    this.log.warn({ shed: this.shed.lag - count, seconds: Math.round((this.lastShedMs - atMs) / 1000) }, 'overload over: no record shed for 5 s');
    this.episodeStart = undefined;
    clearInterval(this.quietTimer);
  }

  /** Walks the native reader's framing (u32 size, u32 0, record, padding to 8), reading only each record's source. */
  private controlRecords(batch: Buffer): Buffer {
    const kept: Buffer[] = [];
    for (let off = 0; off + 8 <= batch.length; ) {
      const size = batch.readUInt32LE(off);
      const next = off + 8 + ((size + 7) & ~7);
      // A record the decoder would count as malformed goes to it as it is.
      if (next > batch.length || size < RECORD_HEADER_SIZE || batch[off + 8 + OFF_SOURCE] >= SRC_TLS_CONN) kept.push(batch.subarray(off, Math.min(next, batch.length)));
      else this.shed.lag++;
      off = next;
    }
    return kept.length === 1 ? kept[0] : Buffer.concat(kept);
  }
}
