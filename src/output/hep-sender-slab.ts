/**
 * Packets are copied into large slabs, so a send costs no allocation of its own. A slab is only
 * written forward: bytes handed to a socket are never overwritten; a full slab is replaced and
 * freed by the GC once the kernel is done with its last packet.
 */
export class Slab {
  private buf: Buffer;
  private used = 0;

  constructor(private readonly size = 1 << 20) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Copies `packet[0..length)` in. */
  copy(packet: Buffer, length = packet.length): void {
    if (!this.fits(length)) this.renew(length);
    packet.copy(this.buf, this.used, 0, length);
    this.used += length;
  }

  fits(length: number): boolean {
    return this.used + length <= this.buf.length;
  }

  /** Starts a fresh slab (large enough for `length`). */
  renew(length = 0): void {
    this.buf = Buffer.allocUnsafe(Math.max(this.size, length));
    this.used = 0;
  }

  /** Where the next copy goes; with `copy` this lets a caller take one view of several consecutive packets. */
  get offset(): number {
    return this.used;
  }

  view(from: number): Buffer {
    return this.buf.subarray(from, this.used);
  }
}
