/** HEPv3 generic chunk types (vendor 0) we send or read. */
export const CHUNK = {
  family: 0x01,
  ipProto: 0x02,
  srcIp4: 0x03,
  dstIp4: 0x04,
  srcIp6: 0x05,
  dstIp6: 0x06,
  srcPort: 0x07,
  dstPort: 0x08,
  tsSec: 0x09,
  tsUsec: 0x0a,
  protoType: 0x0b,
  captureId: 0x0c,
  authKey: 0x0e,
  payload: 0x0f,
  correlationId: 0x11,
  nodeName: 0x13,
} as const;

export const HEP_PROTO_SIP = 1;
export const HEP_PROTO_DIAMETER = 56;
/** Logs: what Homer 7 (heplify-server) stores next to the call with the same correlation id; connection events go as this. */
export const HEP_PROTO_LOG = 100;
export const HEP_HEADER_SIZE = 6; // "HEP3" + u16 total length
export const CHUNK_HEADER_SIZE = 6; // u16 vendor, u16 type, u16 length (header included)
/** Largest HEP packet that fits one UDP datagram. */
export const MAX_UDP_PACKET = 65507;
export const MAX_PACKET = 65535; // the u16 total length

/**
 * Longest text chunk (correlation id 0x11, node name 0x13, auth key 0x0e) the agent sends. Real
 * Call-IDs and Session-Ids are well under it; a longer one is hostile or broken and is cut, so the
 * fixed chunks of a packet never crowd out its payload or overflow the 16-bit packet length.
 */
export const MAX_TEXT_CHUNK_BYTES = 1024;

/** The longest prefix of UTF-8 `buf` of at most `max` bytes that does not split a character. */
export function utf8Prefix(buf: Buffer, max = MAX_TEXT_CHUNK_BYTES): Buffer {
  if (buf.length <= max) return buf;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) to the start of the character that does not fit.
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--;
  return buf.subarray(0, end);
}

/**
 * `text` if its UTF-8 fits in `max` bytes, else its longest prefix that does (cut between
 * characters). Strings are always valid UTF-8 once encoded (a lone surrogate becomes U+FFFD).
 */
export function boundedText(text: string, max = MAX_TEXT_CHUNK_BYTES): string {
  if (text.length * 3 <= max || Buffer.byteLength(text) <= max) return text;
  return utf8Prefix(Buffer.from(text.slice(0, max)), max).toString('utf8');
}
