import { chmodSync, close, closeSync, fdatasync, fdatasyncSync, ftruncateSync, lstatSync, mkdirSync, openSync, read, readdirSync, readSync, unlinkSync, writev, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { Logger } from 'pino';
import { MAX_PACKET } from '../hep/chunks.js';
import { afterTurn } from './after-turn.js';

/**
 * A bounded on-disk queue of HEP packets, one per collector group (README "Spool and failover").
 *
 * Format: append-only segment files `NNNNNNNNNNNNNNNN.seg`, each a run of records
 * `u32 length | u32 crc32(packet) | packet` (big endian). A segment is never appended to after the
 * agent that wrote it stops: at start every segment is scanned, a torn tail (a record cut short or
 * whose CRC does not match: the agent or the machine died mid-write) is cut off and counted, and new
 * records go to a new segment. When the bound is reached the oldest segment is deleted, its records
 * counted as dropped.
 *
 * Durability: appends are copied to memory and written (one writev per event-loop turn) by a single
 * writer in the background, so the hot path never waits for the disk; a written record survives the
 * agent being killed. fdatasync runs on each full segment and every SYNC_INTERVAL_MS: a power loss
 * loses at most that last second (whose torn tail the next start detects).
 */
export interface SpoolOptions {
  dir: string;
  maxBytes: number;
}

export interface SpoolStats {
  /** Bytes and records waiting in the spool (on disk or being written). */
  bytes: number;
  records: number;
  /** Records appended, and read back for sending. */
  spooled: number;
  replayed: number;
  /** Records deleted unsent because the spool was full (oldest first). */
  droppedOldest: number;
  /** Records lost to the disk: torn tails found at start, failed writes, or appends the disk was too slow for. */
  torn: number;
  writeFailed: number;
  droppedDiskSlow: number;
}

const HEADER = 8;
const CHUNK_BYTES = 1 << 20;
/** Appended but not yet written: past this the disk is not keeping up and new packets are dropped (counted). */
const MAX_UNWRITTEN_BYTES = 32 << 20;
const SYNC_INTERVAL_MS = 1000;
const SEGMENT_NAME = /^(\d{16})\.seg$/;

interface Segment {
  id: number;
  path: string;
  /** Write descriptor; -1 once the segment is complete (or was found at start). */
  fd: number;
  /** Bytes and records appended (including those still in memory), and those on disk. */
  bytes: number;
  records: number;
  diskBytes: number;
  /** Read position: bytes and records handed out by read(). */
  readBytes: number;
  readRecords: number;
  /** No more appends: a newer segment exists. */
  full: boolean;
  dropped: boolean;
  /** Reads handed out whose done() has not been called. */
  inFlight: number;
}

/** Packets appended but not yet written, in append order. */
interface Chunk {
  seg: Segment;
  buf: Buffer;
  used: number;
  records: number;
}

export interface SpoolRead {
  /** Consecutive HEP packets, without the spool's record headers. */
  packets: Buffer;
  records: number;
  /** Call once the packets are in the kernel: a segment read to its end is then deleted. */
  done(): void;
}

/** Creates `dir` as 0700 if missing; refuses a symbolic link, a non-directory or a directory another user owns. */
export function ensurePrivateDir(dir: string, what = '--spool-dir'): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) throw new Error(`${what} ${dir} is a symbolic link: give the real directory (captured traffic is kept there)`);
  if (!st.isDirectory()) throw new Error(`${what} ${dir} is not a directory`);
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid) throw new Error(`${what} ${dir} is owned by uid ${st.uid}, not by this agent (uid ${uid}): refusing to keep captured traffic there`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

export class Spool {
  private readonly segments: Segment[] = [];
  private readonly chunks: Chunk[] = [];
  private readonly segmentBytes: number;
  private nextId = 0;
  private writing = false;
  private unwritten = 0;
  private dirty = false;
  private readonly syncTimer: NodeJS.Timeout;
  private readonly scheduleWrite = afterTurn(() => this.writeChunks());
  /** Resolves pending read()s waiting for the writer. */
  private written: Array<() => void> = [];
  private readFd = -1;
  private readFdSeg?: Segment;
  private closed = false;
  private readonly counters = { spooled: 0, replayed: 0, droppedOldest: 0, torn: 0, writeFailed: 0, droppedDiskSlow: 0 };

  constructor(
    readonly dir: string,
    private readonly maxBytes: number,
    private readonly log?: Logger,
  ) {
    ensurePrivateDir(dir);
    // Several segments fit in the bound, so dropping the oldest frees a fraction of it, never all.
    this.segmentBytes = Math.max(64 << 10, Math.min(16 << 20, Math.floor(maxBytes / 8)));
    this.recover();
    this.syncTimer = setInterval(() => this.sync(), SYNC_INTERVAL_MS);
    this.syncTimer.unref();
  }

  /** Records not read yet. */
  get records(): number {
    let n = 0;
    for (const s of this.segments) n += s.records - s.readRecords;
    return n;
  }

  get bytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.bytes - s.readBytes;
    return n;
  }

  /** Segments left by an earlier run: torn tails cut off (counted), empty ones deleted. */
  private recover(): void {
    const ids = readdirSync(this.dir)
      .map((n) => SEGMENT_NAME.exec(n))
      .filter((m): m is RegExpExecArray => !!m)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    for (const id of ids) {
      const path = this.path(id);
      const { bytes, records, torn } = scanSegment(path);
      this.counters.torn += torn;
      if (records === 0) unlinkSync(path);
      else this.segments.push({ id, path, fd: -1, bytes, records, diskBytes: bytes, readBytes: 0, readRecords: 0, full: true, dropped: false, inFlight: 0 });
      this.nextId = id + 1;
    }
    while (this.segments.length > 1 && this.totalBytes() > this.maxBytes) this.dropOldest();
    if (this.segments.length > 0) this.log?.info({ spool: this.dir, records: this.records, bytes: this.bytes, torn: this.counters.torn }, 'HEP spool: sending what an earlier run kept');
  }

  private path(id: number): string {
    return join(this.dir, `${String(id).padStart(16, '0')}.seg`);
  }

  private totalBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.bytes;
    return n;
  }

  /** Copies `packet` to the spool; never blocks on the disk. Returns false when it was dropped (counted). */
  append(packet: Buffer): boolean {
    const size = HEADER + packet.length;
    if (this.closed || this.unwritten + size > MAX_UNWRITTEN_BYTES) {
      this.counters.droppedDiskSlow++;
      return false;
    }
    let seg = this.segments[this.segments.length - 1];
    if (!seg || seg.full || seg.bytes + size > this.segmentBytes) seg = this.newSegment();
    while (this.totalBytes() + size > this.maxBytes && this.segments[0] !== seg) this.dropOldest();
    let chunk = this.chunks[this.chunks.length - 1];
    if (!chunk || chunk.seg !== seg || chunk.used + size > chunk.buf.length) {
      chunk = { seg, buf: Buffer.allocUnsafe(Math.max(CHUNK_BYTES, size)), used: 0, records: 0 };
      this.chunks.push(chunk);
    }
    const at = chunk.used;
    chunk.buf.writeUInt32BE(packet.length, at);
    chunk.buf.writeUInt32BE(crc32(packet), at + 4);
    packet.copy(chunk.buf, at + HEADER);
    chunk.used += size;
    chunk.records++;
    seg.bytes += size;
    seg.records++;
    this.unwritten += size;
    this.counters.spooled++;
    this.scheduleWrite();
    return true;
  }

  private newSegment(): Segment {
    const last = this.segments[this.segments.length - 1];
    if (last) last.full = true;
    const id = this.nextId++;
    const path = this.path(id);
    const seg: Segment = { id, path, fd: openSync(path, 'wx', 0o600), bytes: 0, records: 0, diskBytes: 0, readBytes: 0, readRecords: 0, full: false, dropped: false, inFlight: 0 };
    this.segments.push(seg);
    if (last) {
      this.finishSegment(last);
      this.maybeRelease(last);
    }
    return seg;
  }

  /** A full segment whose records are all written gets its fdatasync and its descriptor closed. */
  private finishSegment(seg: Segment): void {
    if (seg.fd < 0 || !seg.full || seg.diskBytes < seg.bytes) return;
    const fd = seg.fd;
    seg.fd = -1;
    fdatasync(fd, () => close(fd, () => {}));
  }

  private dropOldest(): void {
    const seg = this.segments.shift()!;
    seg.dropped = true;
    this.counters.droppedOldest += seg.records - seg.readRecords;
    this.log?.warn({ spool: this.dir, records: seg.records - seg.readRecords, droppedOldest: this.counters.droppedOldest }, 'HEP spool full: oldest segment dropped');
    if (seg.fd >= 0) closeSync(seg.fd);
    seg.fd = -1;
    if (this.readFdSeg === seg) this.closeReader();
    unlinkSync(seg.path);
    for (let i = this.chunks.length - 1; i >= 0; i--) {
      if (this.chunks[i].seg !== seg) continue;
      this.unwritten -= this.chunks[i].used;
      this.chunks.splice(i, 1);
    }
  }

  /** The single writer: every chunk of the turn in one writev per segment, one call in flight. */
  private writeChunks(): void {
    if (this.writing || this.chunks.length === 0) return;
    const seg = this.chunks[0].seg;
    let n = 0;
    while (n < this.chunks.length && this.chunks[n].seg === seg) n++;
    const batch = this.chunks.splice(0, n);
    const bufs = batch.map((c) => c.buf.subarray(0, c.used));
    const bytes = bufs.reduce((a, b) => a + b.length, 0);
    const records = batch.reduce((a, c) => a + c.records, 0);
    this.writing = true;
    writev(seg.fd, bufs, seg.diskBytes, (err, wrote) => {
      this.writing = false;
      this.unwritten -= bytes;
      if (!seg.dropped) {
        if (err || wrote !== bytes) this.writeFailedIn(seg, bytes, records);
        else seg.diskBytes += bytes;
        this.dirty = true;
        this.finishSegment(seg);
      }
      for (const wake of this.written.splice(0)) wake();
      this.writeChunks();
    });
  }

  /** A failed write (the disk is full): its records are counted lost, and that segment takes no more. */
  private writeFailedIn(seg: Segment, bytes: number, records: number): void {
    this.counters.writeFailed += records;
    seg.bytes -= bytes;
    seg.records -= records;
    seg.full = true;
    // Later chunks of this segment were laid out after the lost bytes: they are lost too.
    for (let i = this.chunks.length - 1; i >= 0; i--) {
      const c = this.chunks[i];
      if (c.seg !== seg) continue;
      this.counters.writeFailed += c.records;
      seg.bytes -= c.used;
      seg.records -= c.records;
      this.unwritten -= c.used;
      this.chunks.splice(i, 1);
    }
    try {
      ftruncateSync(seg.fd, seg.diskBytes);
    } catch {
      /* the next start cuts a torn tail anyway */
    }
  }

  private sync(): void {
    const seg = this.segments[this.segments.length - 1];
    if (!this.dirty || !seg || seg.fd < 0) return;
    this.dirty = false;
    fdatasync(seg.fd, () => {});
  }

  /**
   * The oldest unread packets, up to about `maxBytes`, in append order; undefined when nothing is
   * unread. Waits for the writer when the unread records are still in memory.
   */
  async read(maxBytes: number): Promise<SpoolRead | undefined> {
    for (;;) {
      const seg = this.segments.find((s) => s.readRecords < s.records);
      if (!seg || this.closed) return undefined;
      if (seg.readBytes >= seg.diskBytes) {
        await new Promise<void>((r) => this.written.push(r));
        continue;
      }
      const want = Math.min(Math.max(maxBytes, HEADER + MAX_PACKET), seg.diskBytes - seg.readBytes);
      const buf = Buffer.allocUnsafe(want);
      const from = seg.readBytes;
      const got = await new Promise<number>((resolve, reject) => read(this.reader(seg), buf, 0, want, from, (err, n) => (err ? reject(err) : resolve(n))));
      if (seg.dropped || seg.readBytes !== from) continue; // dropped (full) while reading
      const out = Buffer.allocUnsafe(got);
      let at = 0;
      let used = 0;
      let records = 0;
      while (at + HEADER <= got) {
        const len = buf.readUInt32BE(at);
        if (at + HEADER + len > got) break;
        const packet = buf.subarray(at + HEADER, at + HEADER + len);
        if (len > MAX_PACKET || crc32(packet) !== buf.readUInt32BE(at + 4)) {
          this.skipRest(seg);
          break;
        }
        packet.copy(out, used);
        used += len;
        at += HEADER + len;
        records++;
      }
      if (seg.dropped) continue;
      seg.readBytes += at;
      seg.readRecords += records;
      this.counters.replayed += records;
      if (records === 0) continue;
      seg.inFlight++;
      let released = false;
      return {
        packets: out.subarray(0, used),
        records,
        done: () => {
          if (released) return; // written again after a lost connection
          released = true;
          seg.inFlight--;
          this.maybeRelease(seg);
        },
      };
    }
  }

  /** Corruption inside a segment written in this run (the disk lied): the rest of it is counted torn. */
  private skipRest(seg: Segment): void {
    this.counters.torn += seg.records - seg.readRecords;
    seg.records = seg.readRecords;
    seg.bytes = seg.readBytes;
    seg.full = true;
  }

  private reader(seg: Segment): number {
    if (this.readFdSeg !== seg) {
      this.closeReader();
      this.readFd = openSync(seg.path, 'r');
      this.readFdSeg = seg;
    }
    return this.readFd;
  }

  private closeReader(): void {
    if (this.readFd >= 0) closeSync(this.readFd);
    this.readFd = -1;
    this.readFdSeg = undefined;
  }

  /**
   * A segment read to its end whose packets are all in the kernel is deleted: a full one, or the
   * one being written once nothing of it waits in memory (the next append starts a new one).
   */
  private maybeRelease(seg: Segment): void {
    if (seg.readRecords < seg.records || seg.inFlight > 0 || this.closed) return;
    if (!seg.full && (seg.diskBytes < seg.bytes || this.chunks.some((c) => c.seg === seg))) return;
    const i = this.segments.indexOf(seg);
    if (i < 0) return;
    seg.full = true;
    this.segments.splice(i, 1);
    if (this.readFdSeg === seg) this.closeReader();
    if (seg.fd >= 0) closeSync(seg.fd);
    unlinkSync(seg.path);
  }

  /** Writes what is still in memory, syncs, closes: the next start replays what is left. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.syncTimer);
    while (this.writing) await new Promise<void>((r) => this.written.push(r));
    for (const c of this.chunks.splice(0)) {
      writeSync(c.seg.fd, c.buf, 0, c.used, c.seg.diskBytes);
      c.seg.diskBytes += c.used;
    }
    this.unwritten = 0;
    for (const seg of this.segments) {
      if (seg.fd < 0) continue;
      fdatasyncSync(seg.fd);
      closeSync(seg.fd);
      seg.fd = -1;
    }
    this.closeReader();
  }

  stats(): SpoolStats {
    return { bytes: this.bytes, records: this.records, ...this.counters };
  }
}

/** Valid records at the start of a segment file; a torn tail is cut off (counted as one torn record). */
function scanSegment(path: string): { bytes: number; records: number; torn: number } {
  const fd = openSync(path, 'r+');
  try {
    const buf = Buffer.allocUnsafe(CHUNK_BYTES + HEADER + MAX_PACKET);
    let fileAt = 0;
    let records = 0;
    let have = 0;
    let bufAt = 0;
    for (;;) {
      if (have - bufAt < HEADER + MAX_PACKET) {
        buf.copy(buf, 0, bufAt, have);
        have -= bufAt;
        bufAt = 0;
        have += readSync(fd, buf, have, buf.length - have, fileAt + have);
      }
      if (bufAt + HEADER > have) break;
      const len = buf.readUInt32BE(bufAt);
      if (len > MAX_PACKET || bufAt + HEADER + len > have) break;
      if (crc32(buf.subarray(bufAt + HEADER, bufAt + HEADER + len)) !== buf.readUInt32BE(bufAt + 4)) break;
      bufAt += HEADER + len;
      fileAt += HEADER + len;
      records++;
    }
    const size = lstatSync(path).size;
    if (fileAt === size) return { bytes: fileAt, records, torn: 0 };
    ftruncateSync(fd, fileAt);
    return { bytes: fileAt, records, torn: 1 };
  } finally {
    closeSync(fd);
  }
}
