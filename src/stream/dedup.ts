import type { Message } from './message.js';

/** How long a message seen on one side waits for its other side. */
const WINDOW_NS = 2_000_000_000n;
const MAX_ENTRIES = 1 << 20;

interface Pending {
  direction: 'egress' | 'ingress';
  /** Copies seen on that side not yet matched by the other side. */
  count: number;
  tsNs: bigint;
}

/**
 * Bytes of a message that identify it, with its size and flow: the start line and the first headers
 * (Via branch, Call-ID, CSeq) differ between any two messages of a flow. One side may see a message
 * whole and the other cut at the 64 KiB capture limit, so only a prefix both sides have is hashed.
 */
const HASHED_PREFIX = 512;

/** Two independent 32-bit FNV-1a variants over the first bytes, folded into one 53-bit number. */
function hashPayload(buf: Buffer, seed: number): number {
  const n = Math.min(buf.length, HASHED_PREFIX);
  let a = 0x811c9dc5 ^ seed;
  let b = 0x01000193 ^ n;
  for (let i = 0; i < n; i++) {
    a = Math.imul(a ^ buf[i], 0x01000193);
    b = Math.imul(b ^ buf[i], 0x5bd1e995) ^ (b >>> 15);
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}

/**
 * A message between two processes on this host is seen twice: leaving one (egress) and entering
 * the other (ingress). Keep the first copy, drop its counterpart from the other side. Two copies
 * from the same side are distinct wire messages (UDP retransmissions) and are both kept.
 */
export class LocalDedup {
  private readonly pending = new Map<string, Pending>();
  dropped = 0;

  /**
   * True if the message should be forwarded. Each message is filed under its full flow and under
   * its destination alone: a receiver on an unconnected UDP socket that passed no address buffer
   * does not know the sender, and its copy can only be paired by destination.
   */
  accept(m: Message): boolean {
    this.expire(m.tsNs);
    const tail = `${m.dst.ip}|${m.dst.port}|${m.size}|${hashPayload(m.payload, m.dst.port)}`;
    const byDst = `${m.transport}|?|${tail}`;
    const keys = m.peerUnknown ? [byDst] : [`${m.transport}|${m.src.ip}|${m.src.port}|${tail}`, byDst];
    const counterparts = keys.filter((k) => this.pending.get(k)?.direction === (m.direction === 'egress' ? 'ingress' : 'egress'));
    if (counterparts.length) {
      for (const k of counterparts) if (--this.pending.get(k)!.count === 0) this.pending.delete(k);
      this.dropped++;
      return false;
    }
    for (const key of keys) {
      const seen = this.pending.get(key);
      if (seen && seen.direction === m.direction) seen.count++;
      else this.pending.set(key, { direction: m.direction, count: 1, tsNs: m.tsNs });
    }
    return true;
  }

  /** Entries are in insertion order, which is time order: drop from the front. */
  private expire(nowNs: bigint): void {
    for (const [key, p] of this.pending) {
      if (nowNs - p.tsNs < WINDOW_NS && this.pending.size < MAX_ENTRIES) break;
      this.pending.delete(key);
    }
  }

  get size(): number {
    return this.pending.size;
  }
}
