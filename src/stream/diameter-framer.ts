/**
 * Diameter framing on a byte stream (RFC 6733 3): a 20-byte header whose 24-bit length covers the
 * whole message. Several messages may share a segment and one may span many. Bytes that cannot
 * start a header (a truncated header followed by something else, a length that is not plausible)
 * are counted as malformed and skipped up to the next plausible header.
 */
import { MAX_MESSAGE_BYTES, StreamFramer } from './framer.js';

export const DIAMETER_HEADER_BYTES = 20;
/** A length claim beyond this is a lie or an attack (the field allows 16 MiB): resynchronise instead of waiting for it. */
const MAX_PLAUSIBLE_BYTES = 1024 * 1024;
/** Flag bits RFC 6733 reserves: always zero. */
const RESERVED_FLAGS = 0x0f;
const AVP_RESERVED_FLAGS = 0x1f;
/** Command codes of the applications we decode, and 3GPP's range; anything else does not start a message. */
const BASE_COMMANDS = new Set([257, 258, 265, 271, 272, 274, 275, 280, 282]);

export function plausibleCommand(code: number): boolean {
  return BASE_COMMANDS.has(code) || (code >= 300 && code <= 399) || (code >= 8388608 && code < 16777214);
}

/**
 * 1: a plausible Diameter header starts at buf[off]; 0: it may, once more bytes arrive; -1: it does not.
 * The same test as the kernel's inference (bpf/hepbpf.bpf.c looks_like_diameter).
 */
export function headerAt(buf: Buffer, off: number): 1 | 0 | -1 {
  const n = buf.length - off;
  if (n < 1) return 0;
  if (buf[off] !== 1) return -1;
  if (n < 4) return 0;
  const len = buf.readUIntBE(off + 1, 3);
  if (len < DIAMETER_HEADER_BYTES || len % 4 !== 0 || len > MAX_PLAUSIBLE_BYTES) return -1;
  if (n < 5) return 0;
  if (buf[off + 4] & RESERVED_FLAGS) return -1;
  if (n < 8) return 0;
  return plausibleCommand(buf.readUIntBE(off + 5, 3)) ? 1 : -1;
}

/**
 * Could the bytes at buf[off..] be the message whose header claims `total` bytes? Its top-level AVPs
 * must end exactly where it ends; as far as bytes have arrived, each must fit inside it. Checked
 * before waiting for the rest, so a header cut short does not swallow the messages after it.
 * Walks from buf[off + from] (an AVP boundary already checked); returns the boundary it reached,
 * relative to off, or -1 when the bytes cannot be that message.
 */
function avpsFit(buf: Buffer, off: number, total: number, from = DIAMETER_HEADER_BYTES): number {
  const end = off + total;
  const have = Math.min(end, buf.length);
  let p = off + from;
  while (p + 8 <= have) {
    const len = buf.readUIntBE(p + 5, 3);
    if (buf[p + 4] & AVP_RESERVED_FLAGS || len < (buf[p + 4] & 0x80 ? 12 : 8) || p + len > end) return -1;
    p += (len + 3) & ~3;
  }
  return buf.length < end || p === end ? p - off : -1;
}

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
      const fit = avpsFit(buf, off, total, off === 0 ? checked : DIAMETER_HEADER_BYTES);
      if (fit < 0) {
        // A header cut short and followed by the next message, or an AVP running past the end.
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
      this.emit(buf.subarray(off, off + total), total);
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
    this.emitCut(rest, total);
    this.skipping = Math.max(0, total - rest.length - missing);
  }
}
