/** Builds Diameter messages byte by byte for tests, without any code from src/ (RFC 6733 layout). */

export interface AvpSpec {
  code: number;
  vendor?: number;
  mandatory?: boolean;
  /** Buffer, string (UTF-8), number (Unsigned32), or children (Grouped). */
  value: Buffer | string | number | AvpSpec[];
}

export function avp(spec: AvpSpec): Buffer {
  const v = spec.value;
  const data = Array.isArray(v)
    ? Buffer.concat(v.map(avp))
    : typeof v === 'number'
      ? Buffer.from([v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff])
      : Buffer.isBuffer(v)
        ? v
        : Buffer.from(v, 'utf8');
  const head = spec.vendor ? 12 : 8;
  const len = head + data.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt32BE(spec.code, 0);
  out[4] = (spec.vendor ? 0x80 : 0) | (spec.mandatory === false ? 0 : 0x40);
  out.writeUIntBE(len, 5, 3);
  if (spec.vendor) out.writeUInt32BE(spec.vendor, 8);
  data.copy(out, head);
  return out;
}

export interface MessageSpec {
  request: boolean;
  proxiable?: boolean;
  command: number;
  app: number;
  hopByHop: number;
  endToEnd: number;
  avps: AvpSpec[];
}

export function diameterMessage(m: MessageSpec): Buffer {
  const body = Buffer.concat(m.avps.map(avp));
  const head = Buffer.alloc(20);
  head[0] = 1;
  head.writeUIntBE(20 + body.length, 1, 3);
  head[4] = (m.request ? 0x80 : 0) | (m.proxiable ? 0x40 : 0);
  head.writeUIntBE(m.command, 5, 3);
  head.writeUInt32BE(m.app, 8);
  head.writeUInt32BE(m.hopByHop, 12);
  head.writeUInt32BE(m.endToEnd, 16);
  return Buffer.concat([head, body]);
}

export const TGPP = 10415;

/**
 * About `bytes` bytes that made the framer's resynchronisation quadratic: 32-byte units, each a
 * plausible header claiming 1 MiB. Every header's AVP chain runs through all the units after it
 * (its 20-byte AVP ends inside the next header, whose hop-by-hop id reads as a 32-byte AVP, and so
 * on) to an AVP with reserved flags at the very end, so no header is a message and each one's chain
 * is as long as the rest of the input.
 */
export function diameterResyncChain(bytes: number): Buffer {
  const units = Math.max(1, Math.floor((bytes - 16) / 32));
  const out = Buffer.alloc(units * 32 + 16);
  for (let u = 0; u < units; u++) {
    const at = u * 32;
    out[at] = 1;
    out.writeUIntBE(1024 * 1024, at + 1, 3);
    out[at + 4] = 0x80;
    out.writeUIntBE(272, at + 5, 3);
    out.writeUInt32BE(32, at + 12); // read as an AVP from at + 8: flags 0, length 32
    out.writeUIntBE(20, at + 25, 3); // the AVP at at + 20: flags 0, length 20
  }
  out[units * 32 + 12] = 0x1f; // the AVP at the end: reserved flags
  out.writeUIntBE(8, units * 32 + 13, 3);
  return out;
}
