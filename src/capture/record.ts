/**
 * Decoder of the ring-buffer records. Mirrors bpf/hepbpf.h field by field: change both together.
 * A batch from src/bpf is `u32 size LE, u32 0, size bytes of record, zero padding to 8` repeated.
 */

import { AF_INET, AF_INET6, formatAddr } from '../net/address.js';

export const RECORD_HEADER_SIZE = 120; // sizeof(struct hepbpf_record)
export const MAX_DATA = 65536; // HEPBPF_MAX_DATA

export const DIR_EGRESS = 0;
export const DIR_INGRESS = 1;
export const L7_SIP = 1;
export const L7_DIAMETER = 2;
/** SIP over WebSocket (RFC 7118): the connection began with a handshake offering the `sip` subprotocol. */
export const L7_WEBSOCKET = 3;
export const F_TRUNCATED = 0x01;
export const F_NO_PEER = 0x02;
export const F_TLS = 0x04;
export const F_NO_CONN = 0x08;
/** Receiver's copy of a local UDP datagram whose sender's copy was emitted: header only, it names the receiver. */
export const F_COUNTERPART = 0x10;
/** First record of a TCP (or TLS) connection in this direction: a closed connection's sockId is reused by later ones. */
export const F_STREAM_START = 0x20;
/**
 * TCP, both ends on this host (bpf/local_copies.bpf.h): msgHash is the sequence number of the first byte. A
 * sender's record: its bytes are kept for the receiver's. A receiver's with F_COUNTERPART: header only, its
 * bytes are those the sender's records carried.
 */
export const F_SEQ = 0x40;
export const SRC_TLS_CONN = 15;
export const SRC_EXEC = 16;
/** Connection events (bpf/conn_events.bpf.h): records without data. */
export const SRC_TCP_CONNECT = 17;
export const SRC_TCP_ACCEPT = 18;
export const SRC_TCP_CLOSE = 19;
export const SRC_TLS_HANDSHAKE_FAILED = 20;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

/** Names of the `counters` map entries, by HEPBPF_CNT_* index. */
export const COUNTER_NAMES = [
  'ringbufFull', 'truncated', 'readFault', 'emitted', 'inflightFull', 'receiverCopyReduced', 'receiverCopyWhole',
  'tcpReadReduced', 'tcpReadWhole',
] as const;

// struct hepbpf_record field offsets
const OFF_TS = 0;
const OFF_CGROUP = 8;
const OFF_SOCK = 16;
const OFF_TLS = 24;
const OFF_PID = 32;
const OFF_TID = 36;
const OFF_ORIG_LEN = 40;
const OFF_DATA_LEN = 44;
const OFF_DIRECTION = 48;
const OFF_FAMILY = 49;
const OFF_IP_PROTO = 50;
const OFF_L7 = 51;
export const OFF_SOURCE = 52;
const OFF_FLAGS = 53;
const OFF_LOCAL_PORT = 54;
const OFF_REMOTE_PORT = 56;
const OFF_FD = 60;
const OFF_LOCAL_ADDR = 64;
const OFF_REMOTE_ADDR = 80;
const OFF_COMM = 96;
const OFF_NETNS = 112;
const OFF_MSG_HASH = 116;

/** Slots of the caches below (a power of 2): a host talks among few addresses, threads and sockets. */
const CACHE_BITS = 12;
const CACHE_SLOTS = 1 << CACHE_BITS;
const HASH = 0x9e3779b1;
/** The cache slot of a value of up to four 32-bit words. */
const slotOf = (a: number, b: number, c: number, d: number) => Math.imul(a ^ Math.imul(b ^ Math.imul(c ^ Math.imul(d, HASH), HASH), HASH), HASH) >>> (32 - CACHE_BITS);

/**
 * The text of values records repeat (addresses, thread names), by the value's bytes: formatting them
 * for every record was two to three strings per record. Direct-mapped by a hash of the value's four
 * (or one) 32-bit words: a look-up is a few loads and compares, and makes nothing; a value that
 * takes a slot another had is formatted again the next time.
 */
class TextCache {
  private readonly words = new Int32Array(CACHE_SLOTS * 4);
  private readonly texts: Array<string | undefined> = new Array<string | undefined>(CACHE_SLOTS).fill(undefined);

  constructor(
    /** 1: the value is buf[at..at+4), 4: buf[at..at+16). */
    private readonly wordCount: 1 | 4,
    private readonly format: (buf: Buffer, at: number) => string,
  ) {}

  text(buf: Buffer, view: DataView, at: number): string {
    const a = view.getInt32(at, true);
    const wide = this.wordCount === 4;
    const b = wide ? view.getInt32(at + 4, true) : 0;
    const c = wide ? view.getInt32(at + 8, true) : 0;
    const d = wide ? view.getInt32(at + 12, true) : 0;
    const slot = slotOf(a, b, c, d);
    const w = slot * 4;
    const words = this.words;
    const text = this.texts[slot];
    if (text !== undefined && words[w] === a && words[w + 1] === b && words[w + 2] === c && words[w + 3] === d) return text;
    const made = this.format(buf, at);
    words[w] = a;
    words[w + 1] = b;
    words[w + 2] = c;
    words[w + 3] = d;
    this.texts[slot] = made;
    return made;
  }
}

const ipv4Text = new TextCache(1, (buf, at) => formatAddr(buf, at, AF_INET));
const ipv6Text = new TextCache(4, (buf, at) => formatAddr(buf, at, AF_INET6));
/** A thread's name: the comm field's bytes up to the first NUL. */
const commText = new TextCache(4, (buf, at) => {
  let end = at;
  while (end < at + 16 && buf[end] !== 0) end++;
  return buf.toString('latin1', at, end);
});

/** The BigInts of ids that records repeat (cgroup, socket, TLS connection), direct-mapped by a hash of the id. */
const idWords = new Int32Array(CACHE_SLOTS * 2);
const idValues: bigint[] = new Array<bigint>(CACHE_SLOTS).fill(0n);

/**
 * The 64-bit id at `at`, as the BigInt it was the last time: a BigInt per id per record was a third
 * of what decoding a record allocated. 0 is 0n (no slot holds it: an empty slot's words are 0).
 */
function idAt(view: DataView, at: number): bigint {
  const low = view.getInt32(at, true);
  const high = view.getInt32(at + 4, true);
  if ((low | high) === 0) return 0n;
  const slot = slotOf(low, high, 0, 0);
  if (idWords[slot * 2] === low && idWords[slot * 2 + 1] === high) return idValues[slot];
  const id = view.getBigUint64(at, true);
  idWords[slot * 2] = low;
  idWords[slot * 2 + 1] = high;
  idValues[slot] = id;
  return id;
}

/**
 * One record, decoded in place. The decoder reuses a single instance: every field, and `data`
 * (a view into the batch), is valid only during the callback. Copy what you keep.
 */
export class CaptureRecord {
  buf: Buffer = Buffer.alloc(0);
  private base = 0;
  private view = new DataView(this.buf.buffer, this.buf.byteOffset, 0);
  /** The batch `view` is over. */
  private viewOf = this.buf;
  tsNs = 0n;
  cgroupId = 0n;
  sockId = 0n;
  /** TLS records: the library's connection object in process `pid`; 0n otherwise. */
  tlsId = 0n;
  pid = 0;
  tid = 0;
  origLen = 0;
  dataLen = 0;
  direction = 0;
  family = 0;
  ipProto = 0;
  l7 = 0;
  source = 0;
  flags = 0;
  localPort = 0;
  remotePort = 0;
  fd = 0;
  /** Inode of the socket's network namespace; 0 when unknown (TLS before its socket is known). */
  netns = 0;
  /** UDP: hash of the first 512 payload bytes, the same in the sender's and the receiver's copy. TCP with F_SEQ: the sequence number of the first byte. 0 otherwise. */
  msgHash = 0;
  private dataView?: Buffer;
  /** 4 or 6. A dual-stack socket talking IPv4 reports IPv4-mapped IPv6 addresses: folded to IPv4, as on the wire. */
  ipVersion: 4 | 6 = 4;
  private local?: string;
  private remote?: string;

  /** Points this record at `buf[base..]`; returns false if the record is inconsistent. */
  wrap(buf: Buffer, base: number, size: number): boolean {
    if (size < RECORD_HEADER_SIZE) return false;
    // One DataView per batch: getBigUint64 makes one BigInt, Buffer's readBigUInt64LE four; its reads
    // are inlined, Buffer's read*LE are calls with their own checks. Which batch it is over is known by
    // identity: comparing the views' buffer, offset and length was three getters each side per record
    // (`buffer` a runtime call).
    if (buf !== this.viewOf) {
      this.view = new DataView(buf.buffer, buf.byteOffset, buf.length);
      this.viewOf = buf;
    }
    const view = this.view;
    const dataLen = view.getUint32(base + OFF_DATA_LEN, true);
    if (dataLen > MAX_DATA || RECORD_HEADER_SIZE + dataLen > size) return false;
    const origLen = view.getUint32(base + OFF_ORIG_LEN, true);
    // orig_len < data_len would make "missing bytes" negative downstream.
    if (origLen < dataLen || buf[base + OFF_DIRECTION] > DIR_INGRESS) return false;
    this.buf = buf;
    this.base = base;
    this.tsNs = view.getBigUint64(base + OFF_TS, true);
    this.cgroupId = idAt(view, base + OFF_CGROUP);
    this.sockId = idAt(view, base + OFF_SOCK);
    this.tlsId = idAt(view, base + OFF_TLS);
    this.pid = view.getUint32(base + OFF_PID, true);
    this.tid = view.getUint32(base + OFF_TID, true);
    this.origLen = origLen;
    this.dataLen = dataLen;
    this.direction = buf[base + OFF_DIRECTION];
    this.family = buf[base + OFF_FAMILY];
    this.ipProto = buf[base + OFF_IP_PROTO];
    this.l7 = buf[base + OFF_L7];
    this.source = buf[base + OFF_SOURCE];
    this.flags = buf[base + OFF_FLAGS];
    this.localPort = view.getUint16(base + OFF_LOCAL_PORT, true);
    this.remotePort = view.getUint16(base + OFF_REMOTE_PORT, true);
    this.fd = view.getUint32(base + OFF_FD, true);
    this.netns = view.getUint32(base + OFF_NETNS, true);
    this.msgHash = view.getUint32(base + OFF_MSG_HASH, true);
    this.dataView = this.local = this.remote = undefined;
    if (this.family === AF_INET) this.ipVersion = 4;
    else if (this.family === AF_INET6) this.ipVersion = this.carriesIpv4() ? 4 : 6;
    else return false;
    return true;
  }

  /** An AF_INET6 socket whose addresses are IPv4-mapped (or unspecified, on the side it does not know). */
  private carriesIpv4(): boolean {
    const l = addrKind(this.buf, this.base + OFF_LOCAL_ADDR);
    const r = addrKind(this.buf, this.base + OFF_REMOTE_ADDR);
    return (l === 'mapped' && r !== 'other') || (r === 'mapped' && l !== 'other');
  }

  /** Raw address bytes (16; IPv4 in the first 4, IPv4-mapped in the last 4). Valid during the callback only. */
  localAddrBytes(): Buffer {
    return this.buf.subarray(this.base + OFF_LOCAL_ADDR, this.base + OFF_LOCAL_ADDR + 16);
  }

  remoteAddrBytes(): Buffer {
    return this.buf.subarray(this.base + OFF_REMOTE_ADDR, this.base + OFF_REMOTE_ADDR + 16);
  }

  /** The record's bytes (header and data), a view valid during the callback only. */
  raw(): Buffer {
    return this.buf.subarray(this.base, this.base + RECORD_HEADER_SIZE + this.dataLen);
  }

  /**
   * Writes this record's connection (socket id, family, ports, addresses, network namespace, and the address flags)
   * into the raw record `to`: TLS plaintext that was captured before its socket was known gets the
   * addresses of a later record of the same TLS connection.
   */
  copyConnectionTo(to: Buffer): void {
    this.buf.copy(to, OFF_SOCK, this.base + OFF_SOCK, this.base + OFF_SOCK + 8);
    to[OFF_FAMILY] = this.family;
    to[OFF_FLAGS] = (to[OFF_FLAGS] & ~(F_NO_CONN | F_NO_PEER)) | (this.flags & F_NO_PEER);
    this.buf.copy(to, OFF_LOCAL_PORT, this.base + OFF_LOCAL_PORT, this.base + OFF_REMOTE_PORT + 2);
    this.buf.copy(to, OFF_LOCAL_ADDR, this.base + OFF_LOCAL_ADDR, this.base + OFF_REMOTE_ADDR + 16);
    this.buf.copy(to, OFF_NETNS, this.base + OFF_NETNS, this.base + OFF_NETNS + 4);
  }

  /** The captured bytes, a view made on first use: a header-only copy needs none (a Buffer view costs about 100 ns). */
  get data(): Buffer {
    return (this.dataView ??= this.buf.subarray(this.base + RECORD_HEADER_SIZE, this.base + RECORD_HEADER_SIZE + this.dataLen));
  }

  get truncated(): boolean {
    return (this.flags & F_TRUNCATED) !== 0;
  }

  /** Text form in ipVersion (formatted on first use, then cached for this record). */
  localAddr(): string {
    return (this.local ??= this.formatAt(OFF_LOCAL_ADDR));
  }

  remoteAddr(): string {
    return (this.remote ??= this.formatAt(OFF_REMOTE_ADDR));
  }

  private formatAt(field: number): string {
    const off = this.base + field;
    if (this.ipVersion === 6) return ipv6Text.text(this.buf, this.view, off);
    return ipv4Text.text(this.buf, this.view, this.family === AF_INET6 ? off + 12 : off);
  }

  /** The thread's name. */
  comm(): string {
    return commText.text(this.buf, this.view, this.base + OFF_COMM);
  }
}

/** '::' (all zero), '::ffff:a.b.c.d', or anything else. */
function addrKind(buf: Buffer, off: number): 'unspecified' | 'mapped' | 'other' {
  for (let i = 0; i < 10; i++) if (buf[off + i] !== 0) return 'other';
  if (buf[off + 10] === 0xff && buf[off + 11] === 0xff) return 'mapped';
  return buf[off + 10] === 0 && buf[off + 11] === 0 && buf.readUInt32BE(off + 12) === 0 ? 'unspecified' : 'other';
}

/**
 * Where the pipeline's records come from, in the native reader's batches (framing above): the
 * kernel's ring buffer (SocketCapture), or recorded records (ReplaySource) to run without a kernel.
 */
export interface RecordSource {
  start(onBatch: (batch: Buffer) => void): void;
  stop(): void;
  /** A record said pid, in cgroup cgroupId, exec'd or mapped code (SRC_EXEC): look for TLS libraries it brought, or its new container's. */
  processChanged(pid: number, cgroupId: bigint): void;
  /** Losses counted where the records are made (the kernel's counters). */
  counters(): Record<string, number>;
  /** TLS library discovery: files checked, probed and failed (undefined: none runs). */
  tlsStats(): { filesChecked: number; attached: number; failed: number } | undefined;
}

/** Calls onRecord for every well-formed record in a batch; returns how many malformed ones were skipped. */
export function decodeBatch(batch: Buffer, onRecord: (r: CaptureRecord) => void, rec = new CaptureRecord()): number {
  let malformed = 0;
  let off = 0;
  while (off + 8 <= batch.length) {
    const size = (batch[off] | (batch[off + 1] << 8) | (batch[off + 2] << 16) | (batch[off + 3] << 24)) >>> 0; // a call fewer than readUInt32LE
    const start = off + 8;
    if (start + size > batch.length) return malformed + 1; // framing broken: nothing after it can be trusted
    if (rec.wrap(batch, start, size)) onRecord(rec);
    else malformed++;
    off = start + ((size + 7) & ~7);
  }
  return malformed;
}
