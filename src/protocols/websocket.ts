/**
 * SIP over WebSocket (RFC 7118): the opening handshake that selects the `sip` subprotocol (RFC 6455 4)
 * and the frame header (RFC 6455 5.2). The stream framer (src/stream/websocket-framer.ts) uses these rules.
 */

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** Longest opening handshake (request or response header block) read. */
export const MAX_HANDSHAKE_BYTES = 8192;
/** Longest frame header: 2 bytes, 8 of extended length, 4 of mask. */
export const MAX_FRAME_HEADER_BYTES = 14;

const GET = Buffer.from('GET ');
const HTTP_101 = Buffer.from('HTTP/1.1 101 ');
const CRLFCRLF = Buffer.from('\r\n\r\n');
const LF = 0x0a;

/** Could buf be the start of an opening handshake (a GET request or an HTTP response)? Decides on 4 bytes. */
export function startsLikeHandshake(buf: Buffer): boolean {
  return buf.length >= 4 && (buf.compare(GET, 0, 4, 0, 4) === 0 || buf.compare(HTTP_101, 0, 4, 0, 4) === 0);
}

/** Where the handshake's header block ends (after its CRLFCRLF), or -1 while it has not. */
export function handshakeEnd(buf: Buffer, from = 0): number {
  const at = buf.indexOf(CRLFCRLF, from);
  return at < 0 ? -1 : at + 4;
}

/**
 * Whether buf[0..end) is a handshake of SIP over WebSocket: a GET with `Upgrade: websocket` that
 * offers `sip` in Sec-WebSocket-Protocol, or the 101 response that selects `sip`.
 */
export function isSipHandshake(buf: Buffer, end: number): boolean {
  const request = buf.compare(GET, 0, GET.length, 0, GET.length) === 0;
  if (!request && buf.compare(HTTP_101, 0, HTTP_101.length, 0, HTTP_101.length) !== 0) return false;
  let upgrade = false;
  let sip = false;
  for (let line = buf.indexOf(LF) + 1; line > 0 && line < end; ) {
    const next = buf.indexOf(LF, line) + 1 || end;
    const colon = buf.indexOf(0x3a, line);
    if (colon > line && colon < next) {
      const name = buf.toString('latin1', line, colon).trim().toLowerCase();
      const value = buf.toString('latin1', colon + 1, next).trim();
      if (name === 'upgrade') upgrade = value.toLowerCase() === 'websocket';
      // Subprotocol names compare exactly (RFC 6455 11.5); a request may offer several, a response selects one.
      else if (name === 'sec-websocket-protocol') sip ||= value.split(',').some((p) => p.trim() === 'sip');
    }
    line = next;
  }
  return upgrade && sip;
}

/** A frame header, filled in place by frameHeaderAt. */
export interface FrameHeader {
  fin: boolean;
  opcode: number;
  /** The masking key (RFC 6455 5.3) as 4 bytes big-endian, or -1 when the payload is not masked. */
  mask: number;
  headerBytes: number;
  /** Payload length as claimed; a 64-bit claim beyond 2^53 reads as Infinity. */
  payloadBytes: number;
}

/**
 * Reads the frame header at buf[off..] into h. 1: read; 0: not all of it has arrived; -1: not a
 * frame header we decode (reserved bits set: no extension is negotiated for SIP; an unknown opcode;
 * a control frame fragmented or over 125 bytes; a 64-bit length with its top bit set).
 */
export function frameHeaderAt(buf: Buffer, off: number, h: FrameHeader): 1 | 0 | -1 {
  const left = buf.length - off;
  if (left < 2) return 0;
  const b0 = buf[off];
  const b1 = buf[off + 1];
  const opcode = b0 & 0x0f;
  if (b0 & 0x70) return -1;
  const control = opcode >= OP_CLOSE;
  if (control ? opcode > OP_PONG || !(b0 & 0x80) : opcode > OP_BINARY) return -1;
  let len = b1 & 0x7f;
  let at = off + 2;
  if (len === 126) {
    if (left < 4) return 0;
    len = buf.readUInt16BE(at);
    at += 2;
  } else if (len === 127) {
    if (left < 10) return 0;
    const hi = buf.readUInt32BE(at);
    if (hi & 0x80000000) return -1;
    len = hi >= 0x200000 ? Infinity : hi * 0x100000000 + buf.readUInt32BE(at + 4);
    at += 8;
  }
  if (control && len > 125) return -1;
  const masked = (b1 & 0x80) !== 0;
  if (masked) {
    if (buf.length - at < 4) return 0;
    h.mask = buf.readUInt32BE(at);
    at += 4;
  } else h.mask = -1;
  h.fin = (b0 & 0x80) !== 0;
  h.opcode = opcode;
  h.headerBytes = at - off;
  h.payloadBytes = len;
  return 1;
}

/**
 * Copies src[from..to) into dst at `at`, unmasking it (RFC 6455 5.3) with the key `mask` whose byte
 * `phase` (0-3) applies to src[from]. Returns the phase of the byte after.
 */
export function unmaskInto(dst: Buffer, at: number, src: Buffer, from: number, to: number, mask: number, phase: number): number {
  for (let i = from; i < to; i++, phase = (phase + 1) & 3) dst[at++] = src[i] ^ ((mask >>> (24 - 8 * phase)) & 0xff);
  return phase;
}
