import type { CaptureRecord } from '../capture/record.js';
import { DIR_EGRESS } from '../capture/record.js';
import { LruList } from './lru-list.js';
import type { Message } from './message.js';
import { isLoopback } from '../net/address.js';

/** Memory for receivers' bytes, all flows' buffers together, at most (README "Memory and overload"): past it the least recently written flows go. */
const MAX_KEPT_BYTES = 8 << 20;
/** A flow's first buffer; it doubles as its unread bytes need. */
const FIRST_BUFFER_BYTES = 4096;
/** A flow whose receiver read everything is let go if its buffer grew past this (a large message once), else it keeps it for the next bytes. */
const KEEP_BUFFER_BYTES = 65536;
const EMPTY = Buffer.alloc(0);
/** Runs (and listed messages) read past are taken off the front of a flow's lists once there are this many (numbers) of them, or when the flow is emptied. */
const RUNS_SPLICED_AT = 64;
/**
 * The sender's messages listed, all flows together, at most: each keeps its Message object. Past it a
 * message is not listed, and the receiver's reads up to it are framed from the bytes instead.
 */
const MAX_LISTED = 1 << 15;

/** Sequence number a minus b, as TCP compares them (modulo 2^32). */
const seqDiff = (a: number, b: number) => (a - b) | 0;

/** A flow, as keep() hands it to list(). */
export interface SentFlow {
  readonly key: string;
}

/**
 * A flow's sender's messages, oldest first at [first, count), each with the sequence number its last byte
 * ends before. The arrays are reused, never truncated: a truncated array gives its memory back and
 * allocates it again for the next message (with a reused array for read()'s answer, 190 B more per
 * message of the stream stage, measured on bench/pipeline.ts's SIP/TCP local).
 */
class SentMessages {
  readonly ends: number[] = [];
  readonly messages: Array<Message | undefined> = [];
  first = 0;
  count = 0;

  get last(): number | undefined {
    return this.count > this.first ? this.ends[this.count - 1] : undefined;
  }

  add(end: number, m: Message): void {
    this.ends[this.count] = end;
    this.messages[this.count++] = m;
  }

  /** Drops the messages ending at or before `end`; returns how many. */
  dropTo(end: number): number {
    const from = this.first;
    while (this.first < this.count && seqDiff(this.ends[this.first], end) <= 0) this.messages[this.first++] = undefined;
    const dropped = this.first - from;
    if (this.first === this.count) this.first = this.count = 0;
    else if (this.first >= RUNS_SPLICED_AT) {
      this.ends.copyWithin(0, this.first, this.count);
      this.messages.copyWithin(0, this.first, this.count);
      this.messages.fill(undefined, this.count - this.first, this.count);
      this.count -= this.first;
      this.first = 0;
    }
    return dropped;
  }

  /** Drops them all; returns how many. */
  clear(): number {
    const dropped = this.count - this.first;
    this.messages.fill(undefined, this.first, this.count);
    this.first = this.count = 0;
    return dropped;
  }
}

/** One flow's bytes not yet read, in sequence order, and its place in the order of last writes. */
class Flow implements SentFlow {
  /** The bytes, at buffer[start..end): written at the end, read from the start. */
  buffer = EMPTY;
  start = 0;
  end = 0;
  /**
   * Runs of consecutive sequence numbers in the bytes, oldest first, as pairs (first sequence number,
   * length) from runs[head]: one while no sender's record went missing, whatever the records.
   */
  runs: number[] = [];
  head = 0;
  /** The messages the sender's stream framed from these bytes: a receiver's read is paired with them. */
  readonly sent = new SentMessages();
  /** Dropped (for memory): messages are no longer listed in it. */
  gone = false;
  older?: Flow;
  newer?: Flow;

  constructor(readonly key: string) {}
}

/**
 * The bytes of local TCP connections' sender's records (flagged F_SEQ, bpf/local_copies.bpf.h), and the
 * messages the sender's stream framed from them, kept until the receiver's reads pass them: the kernel
 * sends such a read header only when the sender's records that went out before it carried all its bytes,
 * so they are here, in ring-buffer order, when it arrives. A header-only read that holds listed messages
 * whole, end to end, read by a stream between two messages, is paired with them (read()): framing the
 * same bytes again would find the same messages, and nothing else. Any other is framed from the bytes
 * (take()). A flow is named by flowKey(), once per stream: the sender's and the receiver's
 * stream find the same flow. Each flow copies its sender's bytes into one buffer of its own, reused while
 * the receiver keeps up: no object or allocation per record.
 */
export class SentBytes {
  private readonly flows = new Map<string, Flow>();
  /** The flows in order of last write. */
  private readonly byWrite = new LruList<Flow>();
  /** Bytes not yet read, all flows together. */
  private bytes = 0;
  /** Bytes of the flows' buffers, all flows together: bounded by maxBytes. */
  private allocated = 0;
  /** Messages listed, all flows together: bounded by maxListed. */
  private listed = 0;
  /** Receiver's header-only reads whose bytes were not kept (records shed, or flows dropped for memory). */
  missing = 0;
  /** Receiver's header-only reads paired with the sender's messages (read()), not framed again. */
  pairedReads = 0;
  /** Flows dropped, with their unread bytes, to stay under MAX_KEPT_BYTES. */
  evictedForMemory = 0;

  constructor(
    private readonly maxBytes = MAX_KEPT_BYTES,
    private readonly maxListed = MAX_LISTED,
  ) {}

  /**
   * A sender's record of `flow`: keeps a copy of its bytes, from sequence number `seq` (a new connection's
   * first one drops what the flow held). Returns the flow, for list().
   */
  keep(flow: string, seq: number, data: Buffer, streamStart: boolean): SentFlow {
    let f = this.flows.get(flow);
    if (!f) {
      f = new Flow(flow);
      this.flows.set(flow, f);
    } else if (streamStart) this.clear(f);
    const n = data.length;
    if (f.end + n > f.buffer.length) this.makeRoom(f, n);
    f.buffer.set(data, f.end); // a builtin: Buffer's copy() checks its arguments in JS first
    f.end += n;
    this.bytes += n;
    const runs = f.runs;
    const last = runs.length - 2;
    if (last >= f.head && ((runs[last] + runs[last + 1]) | 0) === (seq | 0)) runs[last + 1] += n;
    else runs.push(seq, n);
    this.byWrite.touch(f);
    for (let old = this.byWrite.oldest; this.allocated > this.maxBytes && old; old = this.byWrite.oldest) {
      if (old.end > old.start) this.evictedForMemory++;
      this.remove(old);
    }
    return f;
  }

  /**
   * A message the sender's stream framed from the bytes of flow `sent`, ending before sequence number `end`.
   * One cut, out of order (its framing was lost) or past the bound is not listed: the reads of its bytes
   * find a gap between the listed messages, and are framed.
   */
  list(sent: SentFlow, end: number, m: Message): void {
    const f = sent as Flow;
    const last = f.sent.last;
    if (f.gone || m.truncated || (last !== undefined && seqDiff(end, last) <= 0) || this.listed >= this.maxListed) return;
    f.sent.add(end, m);
    this.listed++;
  }

  /**
   * A receiver's header-only read of `flow`, of `len` bytes from sequence number `seq`, by a stream between
   * two messages: when its bytes are here (one run holds them) and are listed whole messages end to end
   * (none cut), exactly what its stream would frame from them, hands those sender's messages to
   * `completed`, oldest first, and the read passes them: true. Else false, and nothing changed: take()
   * hands out the bytes.
   */
  read(flow: string, seq: number, len: number, completed: (m: Message) => void): boolean {
    const f = this.flows.get(flow);
    const end = (seq + len) >>> 0;
    if (!f || len === 0) return false;
    const { ends, messages, count } = f.sent;
    let from = f.sent.first;
    while (from < count && seqDiff(ends[from], seq) <= 0) from++;
    // The first message starts where the read starts, each next where the one before ended, the last ends with the read.
    let to = from;
    for (let at = seq; ; at = ends[to++]) {
      if (to === count) return false;
      if (((ends[to] - messages[to]!.size) >>> 0) !== at || seqDiff(ends[to], end) > 0) return false;
      if (ends[to] === end) break;
    }
    if (!this.bytesOf(f, seq, len)) return false;
    for (let i = from; i <= to; i++) completed(messages[i]!);
    this.passed(f, end);
    this.pairedReads++;
    return true;
  }

  /**
   * A receiver's read of `flow`, of `len` bytes from sequence number `seq`: the bytes of a header-only
   * read (undefined: they were not kept), else undefined. What it read is dropped from the flow. The
   * bytes are a view, valid until the next keep().
   */
  take(flow: string, seq: number, len: number, headerOnly: boolean): Buffer | undefined {
    const f = this.flows.get(flow);
    const bytes = headerOnly && f ? this.bytesOf(f, seq, len) : undefined;
    if (f) this.passed(f, (seq + len) >>> 0);
    if (headerOnly && !bytes) this.missing++;
    return bytes;
  }

  /** A new connection's first record, not kept: what its flow held was another connection's. */
  forget(flow: string): void {
    const f = this.flows.get(flow);
    if (f) this.clear(f);
  }

  stats() {
    return { flows: this.flows.size, bytes: this.bytes, allocatedBytes: this.allocated, listed: this.listed, pairedReads: this.pairedReads, missing: this.missing, evictedForMemory: this.evictedForMemory };
  }

  /** The bytes [seq, seq + len), when one run holds them all. */
  private bytesOf(f: Flow, seq: number, len: number): Buffer | undefined {
    if (len === 0) return EMPTY;
    let at = f.start;
    for (let i = f.head; i < f.runs.length; i += 2) {
      const off = seqDiff(seq, f.runs[i]);
      const runLen = f.runs[i + 1];
      if (off >= 0 && off + len <= runLen) return f.buffer.subarray(at + off, at + off + len);
      at += runLen;
    }
    return undefined;
  }

  /** The receiver read up to `end`: the bytes, and the messages, before it are not needed again. */
  private passed(f: Flow, end: number): void {
    this.listed -= f.sent.dropTo(end);
    const runs = f.runs;
    while (f.head < runs.length) {
      const before = seqDiff(end, runs[f.head]);
      if (before <= 0) break;
      const n = Math.min(before, runs[f.head + 1]);
      f.start += n;
      this.bytes -= n;
      if (n < runs[f.head + 1]) {
        runs[f.head] = (runs[f.head] + n) >>> 0;
        runs[f.head + 1] -= n;
        break;
      }
      f.head += 2;
    }
    if (f.head === runs.length) this.emptied(f);
    else if (f.head >= RUNS_SPLICED_AT) {
      runs.splice(0, f.head);
      f.head = 0;
    }
  }

  /** Drops what a flow holds. */
  private clear(f: Flow): void {
    this.bytes -= f.end - f.start;
    f.start = f.end = 0;
    f.runs.length = f.head = 0;
    this.listed -= f.sent.clear();
  }

  /** Every byte read: the flow's buffer is written from its start again; a buffer grown for a large message goes, with the flow. */
  private emptied(f: Flow): void {
    f.start = f.end = 0;
    f.runs.length = f.head = 0;
    if (f.buffer.length > KEEP_BUFFER_BYTES) this.remove(f);
  }

  /** Room for n more bytes at the end: the unread bytes moved to the front, or a larger buffer. */
  private makeRoom(f: Flow, n: number): void {
    const unread = f.end - f.start;
    // Moved only into at most half the buffer, so that moving costs at most about what was written since.
    if (unread + n <= f.buffer.length >> 1) {
      f.buffer.copy(f.buffer, 0, f.start, f.end);
    } else {
      const grown = Buffer.allocUnsafeSlow(Math.max(FIRST_BUFFER_BYTES, 2 * f.buffer.length, unread + n));
      f.buffer.copy(grown, 0, f.start, f.end);
      this.allocated += grown.length - f.buffer.length;
      f.buffer = grown;
    }
    f.start = 0;
    f.end = unread;
  }

  private remove(f: Flow): void {
    this.clear(f);
    f.gone = true;
    this.allocated -= f.buffer.length;
    this.byWrite.remove(f);
    this.flows.delete(f.key);
  }
}

/** The flow a record's bytes travel, as its sender names it; a loopback address is one per network namespace. */
export function flowKey(rec: CaptureRecord): string {
  const local = `${rec.localAddr()} ${rec.localPort}`;
  const remote = `${rec.remoteAddr()} ${rec.remotePort}`;
  const ip = rec.localAddr();
  const ns = isLoopback(ip) ? rec.netns : 0;
  return rec.direction === DIR_EGRESS ? `${local}>${remote}@${ns}` : `${remote}>${local}@${ns}`;
}
