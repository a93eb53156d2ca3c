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

/**
 * Text of what records repeat: a host talks among few IPv4 addresses and threads, and formatting
 * them for every record was two to three strings per record. Cleared when full.
 */
const TEXT_CACHE_SIZE = 4096;
const ipv4Text = new Map<number, string>();
const commText = new Map<number, { bytes: Buffer; text: string }>();

/** The BigInts of ids that records repeat (cgroup, socket, TLS connection), by their low 30 bits; cleared when full. */
const ids = new Map<number, { low: number; high: number; id: bigint }>();

/**
 * The 64-bit id at `at`, as the BigInt it was the last time: a BigInt per id per record was a third
 * of what decoding a record allocated. 0 is 0n.
 */
function idAt(view: DataView, at: number): bigint {
  const low = view.getUint32(at, true);
  const high = view.getUint32(at + 4, true);
  if (low === 0 && high === 0) return 0n;
  const seen = ids.get(low & 0x3fffffff); // a small integer key: no number boxed per lookup
  if (seen && seen.low === low && seen.high === high) return seen.id;
  const id = view.getBigUint64(at, true);
  if (ids.size >= TEXT_CACHE_SIZE) ids.clear();
  ids.set(low & 0x3fffffff, { low, high, id });
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
    const dataLen = buf.readUInt32LE(base + OFF_DATA_LEN);
    if (dataLen > MAX_DATA || RECORD_HEADER_SIZE + dataLen > size) return false;
    // orig_len < data_len would make "missing bytes" negative downstream.
    if (buf.readUInt32LE(base + OFF_ORIG_LEN) < dataLen || buf[base + OFF_DIRECTION] > DIR_INGRESS) return false;
    this.buf = buf;
    this.base = base;
    // One DataView per batch: getBigUint64 makes one BigInt, Buffer's readBigUInt64LE four. Which
    // batch it is over is known by identity: comparing the views' buffer, offset and length was three
    // getters each side per record (`buffer` a runtime call).
    if (buf !== this.viewOf) {
      this.view = new DataView(buf.buffer, buf.byteOffset, buf.length);
      this.viewOf = buf;
    }
    this.tsNs = this.view.getBigUint64(base + OFF_TS, true);
    this.cgroupId = idAt(this.view, base + OFF_CGROUP);
    this.sockId = idAt(this.view, base + OFF_SOCK);
    this.tlsId = idAt(this.view, base + OFF_TLS);
    const view = this.view; // its reads are inlined, Buffer's read*LE are calls with their own checks
    this.pid = view.getUint32(base + OFF_PID, true);
    this.tid = view.getUint32(base + OFF_TID, true);
    this.origLen = view.getUint32(base + OFF_ORIG_LEN, true);
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
    if (this.ipVersion === 6) return formatAddr(this.buf, off, AF_INET6);
    const at = this.family === AF_INET6 ? off + 12 : off;
    const key = this.buf.readUInt32LE(at);
    let text = ipv4Text.get(key);
    if (text === undefined) {
      text = formatAddr(this.buf, at, AF_INET);
      if (ipv4Text.size >= TEXT_CACHE_SIZE) ipv4Text.clear();
      ipv4Text.set(key, text);
    }
    return text;
  }

  /** The thread's name; the text of the last name seen for this tid while its bytes stay the same. */
  comm(): string {
    const start = this.base + OFF_COMM;
    let end = start;
    while (end < start + 16 && this.buf[end] !== 0) end++;
    const seen = commText.get(this.tid);
    if (seen && sameBytes(seen.bytes, this.buf, start, end)) return seen.text;
    const text = this.buf.toString('latin1', start, end);
    if (commText.size >= TEXT_CACHE_SIZE) commText.clear();
    commText.set(this.tid, { bytes: Buffer.from(this.buf.subarray(start, end)), text });
    return text;
  }
}

/** Is `bytes` equal to buf[start..end)? Byte by byte: up to 16 bytes, cheaper than compare()'s native call. */
function sameBytes(bytes: Buffer, buf: Buffer, start: number, end: number): boolean {
  if (bytes.length !== end - start) return false;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== buf[start + i]) return false;
  return true;
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
    const size = batch.readUInt32LE(off);
    const start = off + 8;
    if (start + size > batch.length) return malformed + 1; // framing broken: nothing after it can be trusted
    if (rec.wrap(batch, start, size)) onRecord(rec);
    else malformed++;
    off = start + ((size + 7) & ~7);
  }
  return malformed;
}
