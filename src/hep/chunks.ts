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
export const HEP_HEADER_SIZE = 6; // "HEP3" + u16 total length
export const CHUNK_HEADER_SIZE = 6; // u16 vendor, u16 type, u16 length (header included)
/** Largest HEP packet that fits one UDP datagram. */
export const MAX_UDP_PACKET = 65507;
export const MAX_PACKET = 65535; // the u16 total length
