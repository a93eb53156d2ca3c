import type { CaptureRecord } from '../capture/record.js';
import { DIR_EGRESS } from '../capture/record.js';

/** Bytes kept for receivers, all flows together, at most (README "Memory and overload"): past it the least recently written flows go. */
const MAX_KEPT_BYTES = 8 << 20;

interface Chunk {
  seq: number;
  data: Buffer;
}

/** Sequence number a minus b, as TCP compares them (modulo 2^32). */
const seqDiff = (a: number, b: number) => (a - b) | 0;

/**
 * The bytes of local TCP connections' sender's records (flagged F_SEQ, bpf/local_copies.bpf.h), kept until
 * the receiver's reads pass them: the kernel sends such a read header only when the sender's records that
 * went out before it carried all its bytes, so they are here, in ring-buffer order, when it arrives. A flow
 * is named as its sender sees it, so that the receiver's records (which see it reversed) find it.
 */
export class SentBytes {
  private readonly flows = new Map<string, Chunk[]>();
  private bytes = 0;
  /** Receiver's header-only reads whose bytes were not kept (records shed, or flows dropped for memory). */
  missing = 0;
  /** Flows dropped, with their bytes, to stay under MAX_KEPT_BYTES. */
  evictedForMemory = 0;

  constructor(private readonly maxBytes = MAX_KEPT_BYTES) {}

  /** A sender's record: keeps a copy of its bytes (a new connection's first one drops what the flow held). */
  keep(rec: CaptureRecord, streamStart: boolean): void {
    const key = flowKey(rec);
    let chunks = this.flows.get(key);
    if (chunks && streamStart) this.drop(key, chunks);
    else if (chunks) this.flows.delete(key); // re-inserted at the back: flows stay in order of last write
    if (!chunks || streamStart) chunks = [];
    this.flows.set(key, chunks);
    chunks.push({ seq: rec.msgHash, data: Buffer.from(rec.data) });
    this.bytes += rec.dataLen;
    while (this.bytes > this.maxBytes && this.flows.size) {
      const [oldest, held] = this.flows.entries().next().value!;
      this.drop(oldest, held);
      this.evictedForMemory++;
    }
  }

  /**
   * A receiver's read of `rec.origLen` bytes from sequence number rec.msgHash: the bytes of a header-only
   * record (undefined: they were not kept), else undefined. What it read is dropped from the flow.
   */
  take(rec: CaptureRecord, headerOnly: boolean): Buffer | undefined {
    const chunks = this.flows.get(flowKey(rec));
    const bytes = headerOnly && chunks ? this.copyOut(chunks, rec.msgHash, rec.origLen) : undefined;
    if (chunks) this.passed(chunks, (rec.msgHash + rec.origLen) >>> 0);
    if (headerOnly && !bytes) this.missing++;
    return bytes;
  }

  private copyOut(chunks: Chunk[], seq: number, len: number): Buffer | undefined {
    const parts: Buffer[] = [];
    let at = seq;
    let left = len;
    while (left > 0) {
      const c = chunks.find((k) => seqDiff(at, k.seq) >= 0 && seqDiff(at, k.seq) < k.data.length);
      if (!c) return undefined;
      const off = seqDiff(at, c.seq);
      const n = Math.min(c.data.length - off, left);
      parts.push(c.data.subarray(off, off + n));
      at = (at + n) >>> 0;
      left -= n;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** The receiver read up to `end`: the chunks before it are not needed again. */
  private passed(chunks: Chunk[], end: number): void {
    let i = 0;
    while (i < chunks.length && seqDiff(end, chunks[i].seq + chunks[i].data.length) >= 0) this.bytes -= chunks[i++].data.length;
    if (i) chunks.splice(0, i);
  }

  /** A new connection's first record, not kept: what its flow held was another connection's. */
  forget(rec: CaptureRecord): void {
    const key = flowKey(rec);
    const chunks = this.flows.get(key);
    if (chunks) this.drop(key, chunks);
  }

  private drop(key: string, chunks: Chunk[]): void {
    for (const c of chunks) this.bytes -= c.data.length;
    this.flows.delete(key);
  }

  stats() {
    return { flows: this.flows.size, bytes: this.bytes, missing: this.missing, evictedForMemory: this.evictedForMemory };
  }
}

/** The flow a record's bytes travel, as its sender names it; a loopback address is one per network namespace. */
function flowKey(rec: CaptureRecord): string {
  const local = `${rec.localAddr()} ${rec.localPort}`;
  const remote = `${rec.remoteAddr()} ${rec.remotePort}`;
  const ip = rec.localAddr();
  const ns = ip.startsWith('127.') || ip === '::1' ? rec.netns : 0;
  return rec.direction === DIR_EGRESS ? `${local}>${remote}@${ns}` : `${remote}>${local}@${ns}`;
}
