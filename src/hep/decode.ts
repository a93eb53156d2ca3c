import { CHUNK, CHUNK_HEADER_SIZE, HEP_HEADER_SIZE } from './chunks.js';
import { AF_INET, AF_INET6, formatAddr } from '../net/address.js';

export interface HepChunk {
  vendor: number;
  type: number;
  value: Buffer;
}

export interface HepPacket {
  family?: number;
  ipProto?: number;
  srcIp?: string;
  dstIp?: string;
  srcPort?: number;
  dstPort?: number;
  tsSec?: number;
  tsUsec?: number;
  protoType?: number;
  captureId?: number;
  authKey?: string;
  correlationId?: string;
  nodeName?: string;
  payload?: Buffer;
  /** Every chunk in order, known or not. */
  chunks: HepChunk[];
}

export class HepDecodeError extends Error {}

/** Strict HEPv3 decoder: any length that does not add up is an error, never a partial packet. */
export function decodeHep(buf: Buffer): HepPacket {
  if (buf.length < HEP_HEADER_SIZE || buf.toString('latin1', 0, 4) !== 'HEP3') throw new HepDecodeError('not a HEP3 packet');
  const total = buf.readUInt16BE(4);
  if (total < HEP_HEADER_SIZE) throw new HepDecodeError(`HEP3 total length ${total} is too small`);
  if (total > buf.length) throw new HepDecodeError(`HEP3 packet truncated: header says ${total} bytes, have ${buf.length}`);
  if (total < buf.length) throw new HepDecodeError(`HEP3 packet has ${buf.length - total} bytes after its end (header says ${total})`);
  const pkt: HepPacket = { chunks: [] };
  for (let p = HEP_HEADER_SIZE; p < total; ) {
    if (p + CHUNK_HEADER_SIZE > total) throw new HepDecodeError(`chunk header at ${p} runs past the packet`);
    const vendor = buf.readUInt16BE(p);
    const type = buf.readUInt16BE(p + 2);
    const len = buf.readUInt16BE(p + 4);
    if (len < CHUNK_HEADER_SIZE || p + len > total) throw new HepDecodeError(`chunk 0x${type.toString(16)} at ${p} has bad length ${len}`);
    const value = buf.subarray(p + CHUNK_HEADER_SIZE, p + len);
    pkt.chunks.push({ vendor, type, value });
    if (vendor === 0) readGeneric(pkt, type, value);
    p += len;
  }
  return pkt;
}

function readGeneric(pkt: HepPacket, type: number, v: Buffer): void {
  const need = (n: number) => {
    if (v.length !== n) throw new HepDecodeError(`chunk 0x${type.toString(16)} has ${v.length} bytes, expected ${n}`);
  };
  switch (type) {
    case CHUNK.family: need(1); pkt.family = v[0]; break;
    case CHUNK.ipProto: need(1); pkt.ipProto = v[0]; break;
    case CHUNK.srcIp4: need(4); pkt.srcIp = formatAddr(v, 0, AF_INET); break;
    case CHUNK.dstIp4: need(4); pkt.dstIp = formatAddr(v, 0, AF_INET); break;
    case CHUNK.srcIp6: need(16); pkt.srcIp = formatAddr(v, 0, AF_INET6); break;
    case CHUNK.dstIp6: need(16); pkt.dstIp = formatAddr(v, 0, AF_INET6); break;
    case CHUNK.srcPort: need(2); pkt.srcPort = v.readUInt16BE(0); break;
    case CHUNK.dstPort: need(2); pkt.dstPort = v.readUInt16BE(0); break;
    case CHUNK.tsSec: need(4); pkt.tsSec = v.readUInt32BE(0); break;
    case CHUNK.tsUsec: need(4); pkt.tsUsec = v.readUInt32BE(0); break;
    case CHUNK.protoType: need(1); pkt.protoType = v[0]; break;
    case CHUNK.captureId: need(4); pkt.captureId = v.readUInt32BE(0); break;
    case CHUNK.authKey: pkt.authKey = v.toString('utf8'); break;
    case CHUNK.correlationId: pkt.correlationId = v.toString('utf8'); break;
    case CHUNK.nodeName: pkt.nodeName = v.toString('utf8'); break;
    case CHUNK.payload: pkt.payload = v; break;
  }
}

/** Splits a TCP byte stream into HEP packets by their length fields; returns the bytes consumed. */
export function splitHepStream(buf: Buffer, onPacket: (pkt: Buffer) => void): number {
  let off = 0;
  while (buf.length - off >= HEP_HEADER_SIZE) {
    if (buf.toString('latin1', off, off + 4) !== 'HEP3') throw new HepDecodeError(`HEP stream out of sync at byte ${off}`);
    const total = buf.readUInt16BE(off + 4);
    if (total < HEP_HEADER_SIZE) throw new HepDecodeError(`HEP3 total length ${total} is too small`);
    if (buf.length - off < total) break;
    onPacket(buf.subarray(off, off + total));
    off += total;
  }
  return off;
}
