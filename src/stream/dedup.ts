import { transportIndex, type Endpoint, type Message, type ReceiverCopy, type Transport } from './message.js';
import { isLoopback, isWildcard } from '../net/address.js';

/** How long a message seen on one side waits for its other side. */
const WINDOW_NS = 2_000_000_000n;
const EXPIRE_EVERY_NS = 1_000_000n;
/**
 * Buckets at most: each keeps its messages' objects (about 1 KB) for the window, so this bounds the
 * dedup's memory at about 32 MB (README "Memory and overload"). Past it the oldest go before their
 * window ends (`evictedEarly`); a local message's two copies are microseconds apart, so only a copy
 * coming later than the oldest bucket's age (0.6 s at 50k messages/s) would be forwarded twice.
 */
const MAX_KEYS = 1 << 15;

/**
 * Bytes of a message that identify it, with its size and flow: the start line and the first headers
 * (Via branch, Call-ID, CSeq) differ between any two messages of a flow. One side may see a message
 * whole and the other cut at the 64 KiB capture limit, so only a prefix both sides have is hashed.
 * Hashed in JS a word of four bytes at a time, two words a round, 512 bytes cost about a third of the
 * 0.27 µs of a word a round (0.5 µs read as bytes; byte by byte 0.7-0.8 µs, about what crypto.hash('sha1')
 * does; measured) and allocate nothing.
 */
const HASHED_PREFIX = 512;

/** A header-only copy's payload: the kernel's hash stands for its bytes. */
const EMPTY = Buffer.alloc(0);

/**
 * Views of the memory under the last two payloads hashed from different memory (a batch, a stream's
 * buffer): one view per batch or buffer, not per message, while messages alternate between them.
 */
let view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
let viewBefore = view;

function viewOver(buf: Buffer): DataView {
  const memory = buf.buffer;
  if (view.buffer !== memory) {
    const other = viewBefore.buffer === memory ? viewBefore : new DataView(memory);
    viewBefore = view;
    view = other;
  }
  return view;
}

/**
 * A message's bucket key: two independent 32-bit multiplicative hashes (FNV-1a variants) over the first payload bytes,
 * seeded with what both sides always know (transport, destination port, size), folded into one
 * 53-bit number. A number key costs about 0.6 µs less per message than the string of those four
 * parts (measured: 1.0 vs 1.66 µs per accept()). A UDP copy carries the kernel's hash of its first
 * bytes (msgHash; a header-only copy has nothing else to hash): that stands for the payload bytes.
 */
function bucketKey(size: number, dstPort: number, transport: Transport, msgHash: number, buf: Buffer): number {
  let a = Math.imul(0x811c9dc5 ^ size, 0x01000193) ^ dstPort;
  let b = (transportIndex(transport) + 1) << 24;
  if (msgHash) {
    a = Math.imul(a ^ msgHash, 0x01000193);
    b = Math.imul(b ^ msgHash ^ 0x6b, 0x5bd1e995);
  } else {
    const n = Math.min(buf.length, HASHED_PREFIX);
    b ^= 0x01000193 ^ n;
    // A word of four bytes at a time: a quarter of the multiplications, which were most of accept()'s
    // time; each word one load from the buffer's memory, at any offset (four byte loads were half the
    // time). Two words a round, the second into chains of their own (a2, b2) folded in after: four chains
    // that do not wait on each other's multiplications (2-3 times faster than two). Then the last word and bytes.
    const memory = viewOver(buf);
    const at = buf.byteOffset;
    // Seeds of their own: folding in chains that read nothing (under 8 bytes) keeps all of a and b.
    let a2 = 0x5bd1e995;
    let b2 = 0x811c9dc5;
    let i = 0;
    for (; i + 8 <= n; i += 8) {
      const w = memory.getInt32(at + i, true);
      const v = memory.getInt32(at + i + 4, true);
      a = Math.imul(a ^ w, 0x01000193) ^ (a >>> 17);
      b = Math.imul(b ^ w, 0x5bd1e995) ^ (b >>> 15);
      a2 = Math.imul(a2 ^ v, 0x01000193) ^ (a2 >>> 17);
      b2 = Math.imul(b2 ^ v, 0x5bd1e995) ^ (b2 >>> 15);
    }
    a = Math.imul(a ^ a2, 0x01000193) ^ (a >>> 17);
    b = Math.imul(b ^ b2, 0x5bd1e995) ^ (b >>> 15);
    for (; i + 4 <= n; i += 4) {
      const w = memory.getInt32(at + i, true);
      a = Math.imul(a ^ w, 0x01000193) ^ (a >>> 17);
      b = Math.imul(b ^ w, 0x5bd1e995) ^ (b >>> 15);
    }
    for (; i < n; i++) {
      a = Math.imul(a ^ buf[i], 0x01000193);
      b = Math.imul(b ^ buf[i], 0x5bd1e995) ^ (b >>> 15);
    }
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}

/** Copies of one message seen on one side, not yet matched by the other side. */
interface Pending {
  direction: 'egress' | 'ingress';
  src: Endpoint;
  dst: Endpoint;
  /** The accepted copies, oldest first, each waiting for its counterpart. */
  copies: Message[];
}

interface Bucket {
  key: number;
  tsNs: bigint;
  entries: Pending[];
}

/**
 * Buckets in order of last use, the newest held apart from the Map. A local datagram's two copies
 * usually arrive one after the other: its bucket then comes and goes without touching the Map, whose
 * table V8 reallocates each time it empties (150 B per message, and the costliest line of accept()).
 */
class Buckets {
  private readonly older = new Map<number, Bucket>();
  private newestKey = 0;
  private newest?: Bucket;

  get size(): number {
    return this.older.size + (this.newest ? 1 : 0);
  }

  get(key: number): Bucket | undefined {
    return this.newest && key === this.newestKey ? this.newest : this.older.get(key);
  }

  /** Makes `bucket` the most recently used: added, or moved to the back. */
  use(key: number, bucket: Bucket): void {
    if (bucket === this.newest) return;
    this.older.delete(key);
    if (this.newest) this.older.set(this.newestKey, this.newest);
    this.newest = bucket;
    this.newestKey = key;
  }

  delete(key: number): void {
    if (this.newest && key === this.newestKey) this.newest = undefined;
    else this.older.delete(key);
  }

  /**
   * Drops from the oldest every bucket of `windowNs` ago or more, and any beyond `maxKeys`; stops at the
   * first kept. Returns how many it dropped for room while still inside the window.
   */
  expire(nowNs: bigint, windowNs: bigint, maxKeys: number): number {
    let early = 0;
    for (const [key, b] of this.older) {
      if (nowNs - b.tsNs < windowNs) {
        if (this.size < maxKeys) return early;
        early++;
      }
      this.older.delete(key);
    }
    if (this.newest && (nowNs - this.newest.tsNs >= windowNs || this.size >= maxKeys)) {
      if (nowNs - this.newest.tsNs < windowNs) early++;
      this.newest = undefined;
    }
    return early;
  }
}

/**
 * Could two address views be the same wire address? A side may not know an address: a socket bound
 * to the wildcard reports 0.0.0.0 / :: as its own, a receiver that passed no address buffer reports
 * its peer as 0.0.0.0:0. Loopback addresses match each other, because the local side of a
 * wildcard-bound socket talking over loopback is named 127.0.0.1 / ::1 (src/stream/assembler.ts).
 */
function sameIp(a: string, b: string): boolean {
  return a === b || isWildcard(a) || isWildcard(b) || (isLoopback(a) && isLoopback(b));
}

function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return (a.port === b.port || a.port === 0 || b.port === 0) && sameIp(a.ip, b.ip);
}

/**
 * A message between two processes on this host is seen twice: leaving one (egress) and entering
 * the other (ingress). Keep the first copy, drop its counterpart from the other side. Two copies
 * from the same side are distinct wire messages (UDP retransmissions) and are both kept.
 * Messages are bucketed by what both sides always know (transport, destination port, size, payload
 * hash); addresses are then compared allowing for what a side does not know. For a local UDP datagram
 * whose sender's copy went out, the kernel sends the receiver's copy header only (a ReceiverCopy, paired
 * by the kernel's hash in pairReceiverCopy, bpf/local_copies.bpf.h); whole copies of the rest are paired as before.
 */
export class LocalDedup {
  private readonly buckets = new Buckets();
  dropped = 0;
  /** Header-only receiver's copies whose sender's copy was not here: the receiver stays unnamed. */
  unpaired = 0;
  /** Buckets dropped before their window ended, the table being full. */
  evictedEarly = 0;
  /** After accept() returned false: the accepted copy it was paired with (its counterpart names the other end). */
  matched?: Message;
  private nextExpireNs = 0n;

  constructor(
    private readonly windowNs = WINDOW_NS,
    private readonly maxKeys = MAX_KEYS,
  ) {}

  /** True if the message should be forwarded. */
  accept(m: Message): boolean {
    this.expire(m.tsNs);
    const key = bucketKey(m.size, m.dst.port, m.transport, m.msgHash ?? 0, m.payload);
    const bucket = this.buckets.get(key);
    if (!bucket) {
      m.dedupBucket = { key, tsNs: m.tsNs, entries: [{ direction: m.direction, src: m.src, dst: m.dst, copies: [m] }] };
      this.buckets.use(key, m.dedupBucket as Bucket);
      return true;
    }
    this.matched = this.take(key, bucket, m);
    if (this.matched) return false;
    const { entries } = bucket;
    const same = entries.find((e) => e.direction === m.direction && e.src.ip === m.src.ip && e.src.port === m.src.port && e.dst.ip === m.dst.ip);
    if (same) same.copies.push(m);
    else entries.push({ direction: m.direction, src: m.src, dst: m.dst, copies: [m] });
    m.dedupBucket = bucket;
    // Move the bucket to the back: buckets stay in order of last use, which expire() relies on.
    bucket.tsNs = m.tsNs;
    this.buckets.use(key, bucket);
    return true;
  }

  /**
   * The sender's copy a header-only receiver's copy belongs to (the kernel's hash names it, or the
   * assembler found it by sequence number), taken out of its bucket; undefined when it is not here
   * (counted in `unpaired`: the receiver stays unnamed). The copy itself is never forwarded nor kept.
   */
  pairReceiverCopy(c: ReceiverCopy): Message | undefined {
    this.expire(c.tsNs);
    const matched = c.sent ? this.takeSent(c.sent) : this.takeByHash(c);
    if (!matched) this.unpaired++;
    return matched;
  }

  private takeByHash(c: ReceiverCopy): Message | undefined {
    const key = bucketKey(c.size, c.dst.port, c.transport, c.msgHash, EMPTY);
    const bucket = this.buckets.get(key);
    return bucket && this.take(key, bucket, c);
  }

  /** `m` taken out of its bucket if it still waits there (accepted, not yet paired, not expired). */
  private takeSent(m: Message): Message | undefined {
    const bucket = m.dedupBucket as Bucket | undefined;
    if (!bucket || this.buckets.get(bucket.key) !== bucket) return undefined;
    const { entries } = bucket;
    for (let i = 0; i < entries.length; i++) {
      const at = entries[i].copies.indexOf(m);
      if (at >= 0) return this.takeOut(bucket.key, bucket, i, at);
    }
    return undefined;
  }

  /** The oldest copy in `bucket` of the other side of `m`'s flow, taken out (the bucket with it when it was the last); undefined if none. */
  private take(key: number, bucket: Bucket, m: Pick<Message, 'direction' | 'src' | 'dst'>): Message | undefined {
    const { entries } = bucket;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.direction !== m.direction && sameEndpoint(e.src, m.src) && sameEndpoint(e.dst, m.dst)) return this.takeOut(key, bucket, i, 0);
    }
    return undefined;
  }

  /** Copy `at` of entry `i` of `bucket`, taken out (the entry with it when it was its last, the bucket when it was its last entry's). */
  private takeOut(key: number, bucket: Bucket, i: number, at: number): Message {
    const { copies } = bucket.entries[i];
    const taken = at === 0 ? copies.shift()! : copies.splice(at, 1)[0];
    // The last copy of the last entry (the usual case) takes its bucket with it: no splice (it allocates).
    if (copies.length === 0 && bucket.entries.length === 1) this.buckets.delete(key);
    else if (copies.length === 0) bucket.entries.splice(i, 1);
    this.dropped++;
    return taken;
  }

  /**
   * Buckets are in order of last use: drop from the front. Looked at once per EXPIRE_EVERY_NS of capture
   * time (and whenever the table is full): walking the table's front for every copy cost an iterator and
   * a BigInt per copy, and a bucket that stays up to 1 ms past its 2 s window changes nothing.
   */
  private expire(nowNs: bigint): void {
    if (nowNs < this.nextExpireNs && this.buckets.size < this.maxKeys) return;
    this.nextExpireNs = nowNs + EXPIRE_EVERY_NS;
    this.evictedEarly += this.buckets.expire(nowNs, this.windowNs, this.maxKeys);
  }

  /** Buckets held (each one message, or a few copies of it). */
  get size(): number {
    return this.buckets.size;
  }
}
