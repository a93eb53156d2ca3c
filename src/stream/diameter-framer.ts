/**
 * Diameter framing on a byte stream (RFC 6733 3): a 20-byte header whose 24-bit length covers the
 * whole message. Several messages may share a segment and one may span many. Bytes that cannot
 * start a header (a truncated header followed by something else, a length that is not plausible)
 * are counted as malformed and skipped up to the next plausible header.
 */
import { MAX_MESSAGE_BYTES, StreamFramer } from './framer.js';
import { AvpChains, avpsFit, DIAMETER_HEADER_BYTES, headerAt } from '../protocols/diameter.js';

export interface DiameterFramerStats {
  /** Times the stream held bytes that could not start a message and was resynchronised. */
  malformed: number;
}

/** Frames one direction of one Diameter connection (TCP, TLS plaintext, or SCTP records). */
export class DiameterFramer extends StreamFramer {
  /** Inside a run of bytes that do not frame: counted once. */
  private resyncing = false;

  constructor(
    stats: ConstructorParameters<typeof StreamFramer>[0],
    private readonly diameterStats: DiameterFramerStats,
    sink: ConstructorParameters<typeof StreamFramer>[1],
  ) {
    super(stats, sink);
  }

  /** How far the AVPs of the message waiting at the start of the held bytes were checked: each push walks only new ones. */
  private avpsChecked = DIAMETER_HEADER_BYTES;

  protected frame(buf: Buffer): number {
    let off = 0;
    const checked = this.avpsChecked;
    this.avpsChecked = DIAMETER_HEADER_BYTES;
    // Once a candidate failed, the rest of this buffer is read through shared AVP chains, so that
    // candidates whose chains join do not each walk to the end of the buffer.
    let chains: AvpChains | undefined;
    while (off < buf.length) {
      const at = headerAt(buf, off);
      if (at === 0) return off;
      if (at < 0) {
        const next = this.resync(buf, off + 1);
        this.stats.discardedBytes += next - off;
        off = next;
        continue;
      }
      const total = buf.readUIntBE(off + 1, 3);
      const fit = off === 0 ? avpsFit(buf, off, total, checked) : chains ? chains.fit(off, total) : avpsFit(buf, off, total);
      if (fit < 0) {
        // A header cut short and followed by the next message, or an AVP running past the end.
        chains ??= new AvpChains(buf);
        const next = this.resync(buf, off + 1);
        this.stats.discardedBytes += next - off;
        off = next;
        continue;
      }
      if (total > MAX_MESSAGE_BYTES) {
        const next = this.emitLong(buf, off, total);
        if (next < 0) return this.wait(off, fit);
        off = next;
        continue;
      }
      if (off + total > buf.length) return this.wait(off, fit);
      this.resyncing = false;
      this.emit(this.messageAt(buf, off, total), total, buf.length - off - total);
      off += total;
    }
    return off;
  }

  /** Stops at the incomplete message at buf[off], whose AVPs are checked up to `checked`; returns off. */
  private wait(off: number, checked: number): number {
    this.avpsChecked = checked;
    return off;
  }

  /** Counts a malformed run once and returns where the next plausible (or possibly plausible) header starts. */
  private resync(buf: Buffer, from: number): number {
    if (!this.resyncing) this.diameterStats.malformed++;
    this.resyncing = true;
    for (let p = buf.indexOf(1, from); p >= 0; p = buf.indexOf(1, p + 1)) if (headerAt(buf, p) >= 0) return p;
    return buf.length;
  }

  protected cut(rest: Buffer, missing: number): void {
    this.avpsChecked = DIAMETER_HEADER_BYTES;
    if (rest.length < 4 || headerAt(rest, 0) < 0) {
      this.stats.discardedBytes += rest.length;
      return;
    }
    const total = rest.readUIntBE(1, 3);
    this.emitCut(rest, total, rest.length - total);
    this.skipping = Math.max(0, total - rest.length - missing);
  }
}
