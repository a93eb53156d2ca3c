import { isIPv6 } from 'node:net';
import { CHUNK, CHUNK_HEADER_SIZE, HEP_HEADER_SIZE, MAX_PACKET, MAX_TEXT_CHUNK_BYTES } from './chunks.js';

/** What changes per message. */
export interface HepMessage {
  family: 4 | 6;
  ipProto: number;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  /** Wall clock, µs since the epoch. */
  timeUs: number;
  protoType: number;
  correlationId: string;
  payload: Buffer;
  /** Node name (0x13) of this packet, e.g. its container's; wins over the agent's constant one. */
  nodeName?: Buffer;
}

/** What is the same for every packet an agent sends. */
export interface HepAgentFields {
  captureId: number;
  authKey?: string;
  nodeName?: string;
}

function chunk(type: number, value: Buffer): Buffer {
  const out = Buffer.alloc(CHUNK_HEADER_SIZE + value.length);
  out.writeUInt16BE(0, 0);
  out.writeUInt16BE(type, 2);
  out.writeUInt16BE(out.length, 4);
  value.copy(out, CHUNK_HEADER_SIZE);
  return out;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** Address text -> network-order bytes, cached: a host talks to few addresses. */
const addrCache = new Map<string, Buffer>();
function addrBytes(ip: string, family: 4 | 6): Buffer {
  let b = addrCache.get(ip);
  if (!b) {
    b = family === 4 ? Buffer.from(ip.split('.').map(Number)) : ipv6Bytes(ip);
    if (addrCache.size > 4096) addrCache.clear();
    addrCache.set(ip, b);
  }
  return b;
}

function ipv6Bytes(ip: string): Buffer {
  if (!isIPv6(ip)) throw new Error(`not an IPv6 address: ${ip}`);
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const parse = (s: string) => (s ? s.split(':').flatMap((g) => (g.includes('.') ? v4Groups(g) : [parseInt(g, 16)])) : []);
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  const groups = [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function v4Groups(s: string): number[] {
  const [a, b, c, d] = s.split('.').map(Number);
  return [(a << 8) | b, (c << 8) | d];
}

/**
 * HEPv3 encoder that writes into a caller's buffer. The chunks that never change (capture id, auth
 * key, node name) are encoded once; per message it writes headers and copies the payload, nothing else.
 * Chunk order follows Kamailio siptrace: 1 2 3/5 4/6 7 8 9 a b c [e] 11 f [13].
 */
export class HepEncoder {
  private readonly agentChunks: Buffer;
  private readonly tailChunks: Buffer;
  /** Payload bytes the last packet encoded carries: fewer than its payload's when cut to fit. */
  payloadBytes = 0;

  constructor(agent: HepAgentFields) {
    for (const [name, text] of [['auth key', agent.authKey], ['node name', agent.nodeName]] as const)
      if (text && Buffer.byteLength(text) > MAX_TEXT_CHUNK_BYTES) throw new Error(`HEP ${name} is longer than ${MAX_TEXT_CHUNK_BYTES} bytes`);
    this.agentChunks = Buffer.concat([
      chunk(CHUNK.captureId, u32(agent.captureId)),
      ...(agent.authKey ? [chunk(CHUNK.authKey, Buffer.from(agent.authKey))] : []),
    ]);
    this.tailChunks = agent.nodeName ? chunk(CHUNK.nodeName, Buffer.from(agent.nodeName)) : Buffer.alloc(0);
  }

  /** Bytes a packet takes apart from its payload (`idBytes`: its correlation id's UTF-8 length). */
  overhead(m: HepMessage, idBytes = utf8Length(m.correlationId)): number {
    const addr = m.family === 4 ? 4 : 16;
    return (
      HEP_HEADER_SIZE +
      3 * CHUNK_HEADER_SIZE + 1 + 1 + 1 + // family, ip proto, proto type
      2 * (CHUNK_HEADER_SIZE + addr) +
      2 * (CHUNK_HEADER_SIZE + 2) +
      2 * (CHUNK_HEADER_SIZE + 4) +
      this.agentChunks.length +
      CHUNK_HEADER_SIZE + idBytes +
      CHUNK_HEADER_SIZE +
      (m.nodeName ? CHUNK_HEADER_SIZE + m.nodeName.length : this.tailChunks.length)
    );
  }

  /**
   * Writes one packet at out[off..]; returns its length (a number, not an object: nothing made per
   * packet). The payload is cut to fit `maxPacket` (65507 for UDP); `payloadBytes` then says how much
   * of it went. The correlation id and node name must be bounded by the caller (MAX_TEXT_CHUNK_BYTES):
   * then the headers always fit.
   */
  encode(m: HepMessage, out: Buffer, off: number, maxPacket = MAX_PACKET): number {
    const idBytes = utf8Length(m.correlationId);
    const payloadBytes = Math.min(m.payload.length, maxPacket - this.overhead(m, idBytes));
    if (payloadBytes < 0) throw new Error('HEP packet limit smaller than its headers');
    const v4 = m.family === 4;
    const src = addrBytes(m.srcIp, m.family);
    const dst = addrBytes(m.dstIp, m.family);
    let p = off + HEP_HEADER_SIZE;
    p = put(out, p, CHUNK.family, 1);
    out[p++] = v4 ? 2 : 10;
    p = put(out, p, CHUNK.ipProto, 1);
    out[p++] = m.ipProto;
    p = put(out, p, v4 ? CHUNK.srcIp4 : CHUNK.srcIp6, src.length);
    p = copySmall(src, out, p);
    p = put(out, p, v4 ? CHUNK.dstIp4 : CHUNK.dstIp6, dst.length);
    p = copySmall(dst, out, p);
    p = be16(out, put(out, p, CHUNK.srcPort, 2), m.srcPort);
    p = be16(out, put(out, p, CHUNK.dstPort, 2), m.dstPort);
    const sec = Math.floor(m.timeUs / 1e6);
    p = be32(out, put(out, p, CHUNK.tsSec, 4), sec);
    p = be32(out, put(out, p, CHUNK.tsUsec, 4), m.timeUs - sec * 1e6); // % of a double is a call (fmod)
    p = put(out, p, CHUNK.protoType, 1);
    out[p++] = m.protoType;
    p = copySmall(this.agentChunks, out, p);
    p = writeText(m.correlationId, idBytes, out, put(out, p, CHUNK.correlationId, idBytes));
    p = put(out, p, CHUNK.payload, payloadBytes);
    // set() is the copy itself; Buffer.copy() checks and adjusts its arguments in JavaScript first.
    if (payloadBytes === m.payload.length) out.set(m.payload, p);
    else m.payload.copy(out, p, 0, payloadBytes);
    p += payloadBytes;
    if (m.nodeName) {
      p = put(out, p, CHUNK.nodeName, m.nodeName.length);
      p = copySmall(m.nodeName, out, p);
    } else p = copySmall(this.tailChunks, out, p);
    out[off] = 0x48; // HEP3
    out[off + 1] = 0x45;
    out[off + 2] = 0x50;
    out[off + 3] = 0x33;
    be16(out, off + 4, p - off);
    this.payloadBytes = payloadBytes;
    return p - off;
  }
}

/** The UTF-8 length of `text`: its length when it is ASCII (a Call-ID nearly always is), counted without a native call. */
function utf8Length(text: string): number {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return Buffer.byteLength(text);
  return text.length;
}

/**
 * Writes the UTF-8 of `text`, `bytes` long, at out[p]; returns the end. ASCII is stored a character at
 * a time: Buffer.write() is a native call, and with Buffer.byteLength() twice it was the encoder's largest cost.
 */
function writeText(text: string, bytes: number, out: Buffer, p: number): number {
  if (bytes !== text.length) return p + out.write(text, p, 'utf8');
  for (let i = 0; i < bytes; i++) out[p + i] = text.charCodeAt(i);
  return p + bytes;
}

/**
 * Copies the bytes of a short chunk (an address, the agent's chunks, a node name) to out[p]; returns
 * the end. Up to 32 bytes a loop: Buffer.copy is a native call of about 25 ns, four a packet.
 */
function copySmall(bytes: Buffer, out: Buffer, p: number): number {
  if (bytes.length > 32) return p + bytes.copy(out, p);
  for (let i = 0; i < bytes.length; i++) out[p + i] = bytes[i];
  return p + bytes.length;
}

/**
 * Writes a generic chunk header for a `len`-byte value at out[p]; returns where the value goes.
 * Byte stores, here and in be16/be32, not writeUInt16BE/32BE: with their range checks they were about
 * 40% of the encoder's time (12 chunks a packet).
 */
function put(out: Buffer, p: number, type: number, len: number): number {
  const length = CHUNK_HEADER_SIZE + len;
  out[p] = 0;
  out[p + 1] = 0;
  out[p + 2] = type >>> 8;
  out[p + 3] = type & 0xff;
  out[p + 4] = length >>> 8;
  out[p + 5] = length & 0xff;
  return p + CHUNK_HEADER_SIZE;
}

/** Big-endian 16 and 32 bits at out[p]; return the end. */
function be16(out: Buffer, p: number, v: number): number {
  out[p] = v >>> 8;
  out[p + 1] = v & 0xff;
  return p + 2;
}

function be32(out: Buffer, p: number, v: number): number {
  out[p] = v >>> 24;
  out[p + 1] = (v >>> 16) & 0xff;
  out[p + 2] = (v >>> 8) & 0xff;
  out[p + 3] = v & 0xff;
  return p + 4;
}
