/**
 * Copies of payloads that must outlive their ring-buffer batch, in one preallocated ring. Held
 * messages leave in the order they came (src/enrich/attribution.ts), so space is freed from the
 * front: no allocation and no garbage per held message.
 */
export class HeldPayloads {
  private readonly ring: Buffer;
  /** Offset of the oldest live copy, where the next copy goes, and the end of the data before a wrap. */
  private head = 0;
  private tail = 0;
  private wrapAt = -1;
  private live = 0;

  constructor(bytes: number) {
    this.ring = Buffer.allocUnsafe(bytes);
  }

  /** A copy of `src` in the ring, or undefined when there is no room (the caller releases the oldest first). */
  copy(src: Buffer): Buffer | undefined {
    const n = src.length;
    if (n > this.ring.length) return undefined;
    let at: number;
    if (this.live === 0) {
      this.head = this.tail = 0;
      this.wrapAt = -1;
    }
    if (this.wrapAt < 0) {
      // data runs head..tail; room after tail, else wrap to the front (room up to head)
      if (this.tail + n <= this.ring.length) at = this.tail;
      else if (n <= this.head) {
        this.wrapAt = this.tail;
        at = 0;
      } else return undefined;
    } else {
      // data runs head..wrapAt and 0..tail
      if (this.tail + n <= this.head) at = this.tail;
      else return undefined;
    }
    src.copy(this.ring, at);
    this.tail = at + n;
    this.live++;
    return this.ring.subarray(at, at + n);
  }

  /** Frees the oldest copy, which must be `buf`. */
  release(buf: Buffer): void {
    this.live--;
    this.head = buf.byteOffset - this.ring.byteOffset + buf.length;
    if (this.wrapAt >= 0 && this.head >= this.wrapAt) {
      this.head = 0;
      this.wrapAt = -1;
    }
  }

  get count(): number {
    return this.live;
  }
}
