/**
 * What every stream framer shares: bytes carried over between pushes, and skipping the rest of a
 * message that was emitted cut. A protocol supplies frame() (emit every complete message) and cut()
 * (the kernel did not copy the bytes after `rest`).
 */

import type { HeaderLines } from '../protocols/sip.js';

/**
 * A message is held whole up to this size (the kernel's per-record cut, and about what one HEP
 * packet carries); a longer one is emitted cut here, flagged, and the rest of it is skipped.
 * With a protocol's header bound this bounds what a stream holds between pushes to about 64 KiB.
 */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** A stream's buffer is kept at up to this size; a larger one is given back once it holds less than a quarter of it. */
const KEEP_BUFFER_BYTES = 4096;
const EMPTY = Buffer.alloc(0);

export interface FramerStats {
  messages: number;
  discardedBytes: number;
  truncatedMessages: number;
}

/**
 * `headerLines`: a SIP message's header line feeds, as its framer found them (for parseSip). `after`: the
 * bytes of this push that follow the message's last byte on the wire (negative: it ends that many bytes
 * past them), which places the message in the stream (src/stream/sent-bytes.ts).
 */
export type FrameSink = (payload: Buffer, size: number, truncated: boolean, headerLines: HeaderLines | undefined, after: number) => void;

/** Frames one direction of one connection. */
export abstract class StreamFramer {
  /** Unframed bytes carried over between pushes, at pending[0..pendingLen). */
  private pending: Buffer = EMPTY;
  private pendingLen = 0;
  /** Bytes of a cut message still to arrive; they are skipped so framing resumes on the next boundary. */
  protected skipping = 0;

  constructor(
    protected readonly stats: FramerStats,
    private readonly sink: FrameSink,
  ) {}

  /** Bytes held for a message not yet complete. */
  get buffered(): number {
    return this.pendingLen;
  }

  /** Bytes allocated to hold them. */
  get allocated(): number {
    return this.pending.length;
  }

  /** Between two messages: the next byte pushed starts one (nothing held, nothing to skip). */
  get atBoundary(): boolean {
    return this.pendingLen === 0 && this.skipping === 0;
  }

  /**
   * Feeds `data`; `missing` is how many bytes followed it on the wire that the kernel did not copy.
   * Emitted payloads are views, valid only during the sink call.
   */
  push(data: Buffer, missing = 0): void {
    data = this.skip(data);
    let buf = data;
    if (this.pendingLen) {
      // Grow by doubling up to a whole message, so one arriving in many small reads costs linear copying.
      const need = this.pendingLen + data.length;
      if (need > this.pending.length) {
        const grown = Buffer.allocUnsafe(Math.max(need, Math.min(2 * this.pending.length, MAX_MESSAGE_BYTES)));
        this.pending.copy(grown, 0, 0, this.pendingLen);
        this.pending = grown;
      }
      this.pending.set(data, this.pendingLen);
      buf = this.pending.subarray(0, need);
    }
    const used = this.frame(buf);
    // The unframed tail is buf[used..]: a view of it is made only for cut() (a view per push was a tenth of framing's time).
    const restLen = buf.length - used;
    if (missing > 0) {
      this.pendingLen = 0;
      // Still inside a message emitted cut: the missing bytes were part of what is to be skipped.
      if (this.skipping > 0) this.skipping = Math.max(0, this.skipping - missing);
      else this.cut(buf.subarray(used), missing);
      this.shrink();
      return;
    }
    if (buf === data) {
      // `data` is a view into a batch that is reused: keep a copy of its unframed tail.
      if (restLen > this.pending.length) this.pending = Buffer.allocUnsafe(Math.max(restLen, KEEP_BUFFER_BYTES));
      if (restLen > 0) buf.copy(this.pending, 0, used);
    } else if (used > 0) this.pending.copyWithin(0, used, buf.length);
    this.pendingLen = restLen;
    if (used > 0) this.shrink();
  }

  /**
   * After a message left: a buffer grown for a large message is given back when it holds much less,
   * so an idle stream (up to 65536 of them) keeps about what it still waits for, not its largest message.
   */
  private shrink(): void {
    if (this.pending.length <= KEEP_BUFFER_BYTES || this.pendingLen * 4 > this.pending.length) return;
    if (this.pendingLen === 0) {
      this.pending = EMPTY;
      return;
    }
    const smaller = Buffer.allocUnsafe(Math.max(this.pendingLen, KEEP_BUFFER_BYTES));
    this.pending.copy(smaller, 0, 0, this.pendingLen);
    this.pending = smaller;
  }

  /** Emits every complete message in buf; returns the bytes consumed. */
  protected abstract frame(buf: Buffer): number;

  /** The kernel cut the stream after `rest`: emit the message it starts, flagged, and find the next boundary. */
  protected abstract cut(rest: Buffer, missing: number): void;

  /** Drops the part of `data` that belongs to a message already emitted cut. */
  protected skip(data: Buffer): Buffer {
    if (this.skipping === 0) return data;
    const n = Math.min(this.skipping, data.length);
    this.skipping -= n;
    this.stats.discardedBytes += n;
    return data.subarray(n);
  }

  /**
   * The message at buf[off..] is `total` bytes, more than MAX_MESSAGE_BYTES: emits its first
   * MAX_MESSAGE_BYTES cut and skips the rest. Returns where framing goes on, or -1 while fewer than
   * MAX_MESSAGE_BYTES have arrived.
   */
  protected emitLong(buf: Buffer, off: number, total: number): number {
    if (buf.length - off < MAX_MESSAGE_BYTES) return -1;
    this.emitCut(buf.subarray(off, off + MAX_MESSAGE_BYTES), total, buf.length - off - total);
    off += MAX_MESSAGE_BYTES;
    this.skipping = total - MAX_MESSAGE_BYTES;
    return off + (buf.length - off - this.skip(buf.subarray(off)).length);
  }

  /** The message at buf[off, off + total): buf itself when it is all of buf, as a message written alone is (a view costs about 100 ns). */
  protected messageAt(buf: Buffer, off: number, total: number): Buffer {
    return off === 0 && total === buf.length ? buf : buf.subarray(off, off + total);
  }

  /** `after`: the bytes of this push that follow the message (see FrameSink). */
  protected emit(payload: Buffer, size: number, after: number, headerLines?: HeaderLines): void {
    this.stats.messages++;
    this.sink(payload, size, false, headerLines, after);
  }

  protected emitCut(part: Buffer, total: number, after: number): void {
    this.stats.messages++;
    this.stats.truncatedMessages++;
    this.sink(part, total, true, undefined, after);
  }
}
