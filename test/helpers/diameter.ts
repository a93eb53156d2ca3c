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
