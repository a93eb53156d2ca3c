/**
 * What tail shows, as pcapng (IETF draft-ietf-opsawg-pcapng) for Wireshark: each message becomes
 * IPv4/IPv6 packets with UDP or TCP headers synthesized from its captured tuple, lengths and
 * checksums correct. TCP connections get sequence numbers that advance by payload per direction,
 * so Wireshark reassembles SIP and Diameter across segments; TLS plaintext goes out as TCP on the
 * connection's real ports (WebSocket and SCTP messages too). A packet comment says who sent it
 * (process, container), its correlation id, and what the transport really was. Written here: npm's
 * pcap packages (pcap, pcap-parser) capture or read classic pcap, none writes pcapng, and the
 * format needs only three block types.
 */
import { isIP } from 'node:net';
import type { TailEventFields } from './tail-protocol.js';
import { containerLabel, epochNs } from './tail-record.js';

const LINKTYPE_RAW = 101; // each packet starts with its IPv4 or IPv6 header
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
/**
 * TCP payload per segment: a 64 KiB message does not fit one IPv4 packet (65535 bytes in all),
 * and real stacks send at most one MTU anyway; loopback's MTU is 65536, Ethernet's 1500.
 */
const TCP_MSS = 16_384;
const UDP_MAX_PAYLOAD = 65_535 - 20 - 8;
/** Directions whose sequence numbers are kept; past that the oldest is forgotten (it restarts at 1). */
const MAX_DIRECTIONS = 65_536;

const opt = (code: number, value: Buffer): Buffer => {
  const head = Buffer.alloc(4);
  head.writeUInt16LE(code, 0);
  head.writeUInt16LE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc((4 - (value.length % 4)) % 4)]);
};
const END_OF_OPTIONS = Buffer.alloc(4);

/** One block: type, total length, body (padded to 32 bits), options, total length again. */
function block(type: number, body: Buffer, options: Buffer[]): Buffer {
  const pad = Buffer.alloc((4 - (body.length % 4)) % 4);
  const opts = options.length ? Buffer.concat([...options, END_OF_OPTIONS]) : Buffer.alloc(0);
  const total = 12 + body.length + pad.length + opts.length;
  const out = Buffer.alloc(total);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(total, 4);
  body.copy(out, 8);
  opts.copy(out, 8 + body.length + pad.length);
  out.writeUInt32LE(total, total - 4);
  return out;
}

/** Section header and one raw-IP interface with nanosecond timestamps: what every file starts with. */
export function pcapngHeader(): Buffer {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(0x1a2b3c4d, 0); // byte-order magic
  shb.writeUInt16LE(1, 4); // version 1.0
  shb.writeUInt16LE(0, 6);
  shb.writeBigInt64LE(-1n, 8); // section length not known in advance
  const idb = Buffer.alloc(8);
  idb.writeUInt16LE(LINKTYPE_RAW, 0);
  idb.writeUInt32LE(0, 4); // no snap length limit
  return Buffer.concat([
    block(0x0a0d0d0a, shb, [opt(4, Buffer.from('hepbpf tail --pcap'))]), // shb_userappl
    block(0x00000001, idb, [opt(2, Buffer.from('hepbpf')), opt(9, Buffer.from([9]))]), // if_name, if_tsresol 10^-9
  ]);
}

/** Internet checksum (RFC 1071) over `parts`, as one byte string. */
function checksum(parts: Buffer[]): number {
  let sum = 0;
  let odd: number | undefined;
  for (const p of parts) {
    let i = 0;
    if (odd !== undefined && p.length) {
      sum += (odd << 8) | p[0];
      odd = undefined;
      i = 1;
    }
    for (; i + 1 < p.length; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (i < p.length) odd = p[i];
  }
  if (odd !== undefined) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** An address as bytes; an IPv4-mapped IPv6 address as the IPv4 address it is. */
function addressBytes(ip: string): Buffer {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) ip = mapped[1];
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  if (isIP(ip) !== 6) return Buffer.alloc(4); // not an address: 0.0.0.0, as tail shows an unknown connection
  const [head, tail = ''] = ip.split('::');
  const groups = (s: string) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(ip.includes('::') ? tail : '');
  const all = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), 2 * i));
  return out;
}

/** IP header + `l4` (its checksum field at `csumAt` filled in over the pseudo-header). */
function ipPacket(src: Buffer, dst: Buffer, proto: number, l4: Buffer, csumAt: number): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(l4.length, 0);
  const pseudo = src.length === 4 ? [src, dst, Buffer.from([0, proto]), len.subarray(2)] : [src, dst, len, Buffer.from([0, 0, 0, proto])];
  const sum = checksum([...pseudo, l4]);
  l4.writeUInt16BE(proto === IPPROTO_UDP && sum === 0 ? 0xffff : sum, csumAt);
  if (src.length === 4) {
    const ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + l4.length, 2);
    ip.writeUInt16BE(0x4000, 6); // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    src.copy(ip, 12);
    dst.copy(ip, 16);
    ip.writeUInt16BE(checksum([ip]), 10);
    return Buffer.concat([ip, l4]);
  }
  const ip = Buffer.alloc(40);
  ip[0] = 0x60;
  ip.writeUInt16BE(l4.length, 4);
  ip[6] = proto;
  ip[7] = 64;
  src.copy(ip, 8);
  dst.copy(ip, 24);
  return Buffer.concat([ip, l4]);
}

function udp(sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

const TCP_ACK = 0x10;
const TCP_PSH = 0x08;

function tcp(sport: number, dport: number, seq: number, ack: number, flags: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(seq >>> 0, 4);
  h.writeUInt32BE(ack >>> 0, 8);
  h[12] = 5 << 4;
  h[13] = flags;
  h.writeUInt16BE(0xffff, 14); // window
  return Buffer.concat([h, payload]);
}

/** What a packet of these transports is instead of the TCP segment it is shown as. */
const TRANSPORT_NOTES: Record<string, string> = {
  tls: 'TLS plaintext (decrypted by hepbpf), shown as TCP',
  wss: 'TLS plaintext (decrypted by hepbpf), WebSocket message without its frames, shown as TCP',
  ws: 'WebSocket message without its frames, shown as TCP',
  sctp: 'SCTP, shown as TCP',
};

/** The packet comment: who sent it, which container, its correlation id, and what the transport really was. */
export function packetComment(ev: TailEventFields): string {
  const own = containerLabel(ev.container);
  const peer = containerLabel(ev.peerContainer);
  const parts = [
    `process ${ev.comm}[${ev.pid}]`,
    `container ${own ?? 'host'}${peer ? ` (peer ${peer})` : ''}`,
    `correlation id ${ev.correlationId || '-'}`,
  ];
  const shownAs = TRANSPORT_NOTES[ev.transport];
  if (shownAs) parts.push(shownAs);
  if (ev.truncated) parts.push(`truncated: ${ev.payload.length} of ${ev.size} bytes`);
  if (ev.connectionUnknown) parts.push('connection unknown: addresses are 0.0.0.0:0');
  return parts.join('; ');
}

/** Enhanced Packet Block on interface 0. */
function epb(tsNs: bigint, packet: Buffer, comment: string): Buffer {
  const body = Buffer.alloc(20);
  body.writeUInt32LE(0, 0);
  body.writeUInt32LE(Number(tsNs >> 32n), 4);
  body.writeUInt32LE(Number(tsNs & 0xffffffffn), 8);
  body.writeUInt32LE(packet.length, 12);
  body.writeUInt32LE(packet.length, 16);
  return block(0x00000006, Buffer.concat([body, packet]), [opt(1, Buffer.from(comment, 'utf8'))]);
}

/**
 * Turns tail events into pcapng blocks, keeping each TCP connection's sequence numbers. Call
 * `header()` once before the first packet's blocks.
 */
export class PcapngWriter {
  /** Next sequence number per direction, keyed "srcIp|srcPort|dstIp|dstPort". */
  private readonly nextSeq = new Map<string, number>();

  header(): Buffer {
    return pcapngHeader();
  }

  /** The blocks of one message: one UDP datagram, or as many TCP segments as it needs. */
  packets(ev: TailEventFields): Buffer {
    let src = addressBytes(ev.src.ip);
    let dst = addressBytes(ev.dst.ip);
    if (src.length !== dst.length) [src, dst] = [toV6(src), toV6(dst)];
    const payload = Buffer.from(ev.payload.buffer, ev.payload.byteOffset, ev.payload.byteLength);
    const ts = epochNs(ev.ts);
    const comment = packetComment(ev);
    if (ev.transport === 'udp') {
      // A datagram is one packet; a longer (impossible on the wire) one is cut to what IPv4 can carry.
      const body = payload.subarray(0, UDP_MAX_PAYLOAD);
      return epb(ts, ipPacket(src, dst, IPPROTO_UDP, udp(ev.src.port, ev.dst.port, body), 6), comment);
    }
    const key = `${ev.src.ip}|${ev.src.port}|${ev.dst.ip}|${ev.dst.port}`;
    const back = `${ev.dst.ip}|${ev.dst.port}|${ev.src.ip}|${ev.src.port}`;
    let seq = this.sequence(key);
    const ack = this.sequence(back);
    const blocks: Buffer[] = [];
    for (let off = 0; off < payload.length || off === 0; off += TCP_MSS) {
      const seg = payload.subarray(off, off + TCP_MSS);
      const last = off + TCP_MSS >= payload.length;
      blocks.push(epb(ts, ipPacket(src, dst, IPPROTO_TCP, tcp(ev.src.port, ev.dst.port, seq, ack, TCP_ACK | (last ? TCP_PSH : 0), seg), 16), comment));
      seq = (seq + seg.length) >>> 0;
      if (last) break;
    }
    this.nextSeq.delete(key); // re-inserted last: the map's order is least recently used first
    this.nextSeq.set(key, seq);
    if (this.nextSeq.size > MAX_DIRECTIONS) this.nextSeq.delete(this.nextSeq.keys().next().value!);
    return Buffer.concat(blocks);
  }

  /** A direction's next sequence number; a new one starts at 1 (nothing before it was seen). */
  private sequence(key: string): number {
    let seq = this.nextSeq.get(key);
    if (seq === undefined) this.nextSeq.set(key, (seq = 1));
    return seq;
  }
}

function toV6(a: Buffer): Buffer {
  if (a.length === 16) return a;
  return Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), a]);
}
