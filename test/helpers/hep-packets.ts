/** HEP-shaped test packets that carry a sequence number, to check order and duplicates at the collector. */

/** A HEP-shaped packet carrying `n` (offset 6) and `size` bytes in all. */
export const numberedPacket = (n: number, size = 100): Buffer => {
  const b = Buffer.alloc(size, n & 0xff);
  b.write('HEP3', 0, 'latin1');
  b.writeUInt16BE(size, 4);
  b.writeUInt32BE(n, 6);
  return b;
};

/** The sequence numbers `numberedPacket` wrote. */
export const ids = (packets: Buffer[]): number[] => packets.map((p) => p.readUInt32BE(6));

export const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
