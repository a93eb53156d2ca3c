/**
 * Diameter (RFC 6733): the header and every AVP, vendor-specific and grouped ones included. The
 * framer (src/stream/diameter-framer.ts) has checked the header; malformed AVPs are counted, and
 * whatever decoded before them is kept.
 */
import { isUtf8 } from 'node:buffer';
import { APPLICATIONS, AVPS, COMMANDS, VENDOR_3GPP, avpKey, type AvpType } from './diameter-dictionary.js';

// Header plausibility, shared with the stream framer (src/stream/diameter-framer.ts).
export const DIAMETER_HEADER_BYTES = 20;
/** A length claim beyond this is a lie or an attack (the field allows 16 MiB): resynchronise instead of waiting for it. */
const MAX_PLAUSIBLE_BYTES = 1024 * 1024;
/** Flag bits RFC 6733 reserves: always zero. */
const RESERVED_FLAGS = 0x0f;
const AVP_RESERVED_FLAGS = 0x1f;
/** Command codes of the applications we decode, and 3GPP's range; anything else does not start a message. */
const BASE_COMMANDS = new Set([257, 258, 265, 271, 272, 274, 275, 280, 282]);

export function plausibleCommand(code: number): boolean {
  return BASE_COMMANDS.has(code) || (code >= 300 && code <= 399) || (code >= 8388608 && code < 16777214);
}

/**
 * 1: a plausible Diameter header starts at buf[off]; 0: it may, once more bytes arrive; -1: it does not.
 * The same test as the kernel's inference (bpf/hepbpf.bpf.c looks_like_diameter).
 */
export function headerAt(buf: Buffer, off: number): 1 | 0 | -1 {
  const n = buf.length - off;
  if (n < 1) return 0;
  if (buf[off] !== 1) return -1;
  if (n < 4) return 0;
  const len = buf.readUIntBE(off + 1, 3);
  if (len < DIAMETER_HEADER_BYTES || len % 4 !== 0 || len > MAX_PLAUSIBLE_BYTES) return -1;
  if (n < 5) return 0;
  if (buf[off + 4] & RESERVED_FLAGS) return -1;
  if (n < 8) return 0;
  return plausibleCommand(buf.readUIntBE(off + 5, 3)) ? 1 : -1;
}

/**
 * Could the bytes at buf[off..] be the message whose header claims `total` bytes? Its top-level AVPs
 * must end exactly where it ends; as far as bytes have arrived, each must fit inside it. Checked
 * before waiting for the rest, so a header cut short does not swallow the messages after it.
 * Walks from buf[off + from] (an AVP boundary already checked); returns the boundary it reached,
 * relative to off, or -1 when the bytes cannot be that message.
 */
export function avpsFit(buf: Buffer, off: number, total: number, from = DIAMETER_HEADER_BYTES): number {
  const end = off + total;
  const have = Math.min(end, buf.length);
  let p = off + from;
  while (p + 8 <= have) {
    const len = buf.readUIntBE(p + 5, 3);
    if (buf[p + 4] & AVP_RESERVED_FLAGS || len < (buf[p + 4] & 0x80 ? 12 : 8) || p + len > end) return -1;
    p += (len + 3) & ~3;
  }
  return buf.length < end || p === end ? p - off : -1;
}

/**
 * The AVP chains of one buffer, shared by the header candidates tried while resynchronising. From
 * an AVP boundary the next one is fixed by the AVP's length, so the chains of different candidates
 * join and then run the same course: a crafted input makes every candidate's chain run to the end
 * of the buffer, and walking each would cost quadratic time. Here each boundary is read once and
 * linked toward the end of the buffer, with jump pointers (Myers' skew-binary scheme), so that a
 * candidate skips the course it shares in O(log n) steps.
 */
export class AvpChains {
  /** Boundary -> node; per node: its boundary, the next node (itself where the chain ends), a jump further on, and how far the end is. */
  private readonly node = new Map<number, number>();
  private readonly at: number[] = [];
  private readonly parent: number[] = [];
  private readonly jump: number[] = [];
  private readonly depth: number[] = [];

  constructor(private readonly buf: Buffer) {}

  /** The same as avpsFit(buf, off, total). */
  fit(off: number, total: number): number {
    const have = Math.min(off + total, this.buf.length);
    let n = this.nodeAt(off + DIAMETER_HEADER_BYTES);
    // Every AVP up to a boundary at or before `have` fits whatever the message's length: skip them.
    const { at, parent, jump } = this;
    while (parent[n] !== n && at[parent[n]] <= have) n = at[jump[n]] <= have ? jump[n] : parent[n];
    // The last AVP or two, checked against this message's end.
    return avpsFit(this.buf, off, total, at[n] - off);
  }

  /** The boundary an AVP whose header fits at `p` leads to, if it is well-formed and ends inside the buffer; else -1. */
  private next(p: number): number {
    const buf = this.buf;
    if (p + 8 > buf.length) return -1;
    const len = buf.readUIntBE(p + 5, 3);
    const to = p + ((len + 3) & ~3);
    return buf[p + 4] & AVP_RESERVED_FLAGS || len < (buf[p + 4] & 0x80 ? 12 : 8) || to > buf.length ? -1 : to;
  }

  private nodeAt(boundary: number): number {
    let n = this.node.get(boundary);
    if (n !== undefined) return n;
    // Read on to a known boundary or the end of the chain, then link the new ones from there back.
    const fresh = [boundary];
    for (let next = this.next(boundary); next >= 0; next = this.next(next)) {
      n = this.node.get(next);
      if (n !== undefined) break;
      fresh.push(next);
    }
    for (let i = fresh.length - 1; i >= 0; i--) n = this.add(fresh[i], n);
    return n!;
  }

  private add(boundary: number, parent: number | undefined): number {
    const n = this.at.length;
    this.node.set(boundary, n);
    this.at.push(boundary);
    if (parent === undefined) {
      this.parent.push(n);
      this.jump.push(n);
      this.depth.push(0);
      return n;
    }
    const { jump, depth } = this;
    const j = jump[parent];
    this.parent.push(parent);
    this.depth.push(depth[parent] + 1);
    this.jump.push(depth[parent] - depth[j] === depth[j] - depth[jump[j]] ? jump[j] : parent);
    return n;
  }
}

/** Grouped AVPs nested deeper than this are kept as hex and counted: real dictionaries nest about 5 deep. */
export const MAX_GROUP_DEPTH = 8;

const FLAG_VENDOR = 0x80;
const FLAG_MANDATORY = 0x40;
const FLAG_PROTECTED = 0x20;

/** One AVP of a parsed message: its header, and where its value is in the message. */
export class Avp {
  /** Children of a grouped AVP that decoded. */
  avps?: Avp[] = undefined;

  constructor(
    readonly code: number,
    readonly vendorId: number,
    readonly flags: number,
    /** The message it is in. */
    readonly message: Buffer,
    /** Offset of its value in the message. */
    readonly dataOffset: number,
    /** Length of its value, without padding. */
    readonly dataLength: number,
  ) {}

  /**
   * The value bytes: a view into the message, valid only while it is. Made when asked: a view per
   * AVP was most of what parsing a message allocated, and most values are only written out as JSON,
   * from the message itself.
   */
  get data(): Buffer {
    return this.message.subarray(this.dataOffset, this.dataOffset + this.dataLength);
  }

  /** The value as text. */
  text(encoding: 'utf8' | 'latin1'): string {
    return this.message.toString(encoding, this.dataOffset, this.dataOffset + this.dataLength);
  }
}

export interface DiameterInfo {
  version: number;
  length: number;
  request: boolean;
  proxiable: boolean;
  error: boolean;
  retransmit: boolean;
  commandCode: number;
  applicationId: number;
  hopByHop: number;
  endToEnd: number;
  avps: Avp[];
  /** Why decoding stopped early (an AVP running past its container, nesting too deep), if it did. */
  malformed?: string;
  /** `AAR Rx`, `CEA`, or the number for an unknown command. */
  commandAbbrev: string;
  /** `Rx`, or the application id as a number when unknown. */
  application: string;
  sessionId?: string;
  resultCode?: number;
}

/** Parses a framed message; null when it is shorter than a header or not version 1. */
export function parseDiameter(buf: Buffer): DiameterInfo | null {
  if (buf.length < DIAMETER_HEADER_BYTES || buf[0] !== 1) return null;
  const flags = buf[4];
  const commandCode = buf.readUIntBE(5, 3);
  const applicationId = buf.readUInt32BE(8);
  const request = (flags & 0x80) !== 0;
  const length = buf.readUIntBE(1, 3);
  const state = { malformed: undefined as string | undefined };
  const avps = parseAvps(buf, DIAMETER_HEADER_BYTES, Math.min(length, buf.length), 0, state);
  const cmd = COMMANDS.get(commandCode);
  const info: DiameterInfo = {
    version: 1,
    length,
    request,
    proxiable: (flags & 0x40) !== 0,
    error: (flags & 0x20) !== 0,
    retransmit: (flags & 0x10) !== 0,
    commandCode,
    applicationId,
    hopByHop: buf.readUInt32BE(12),
    endToEnd: buf.readUInt32BE(16),
    avps,
    malformed: state.malformed,
    commandAbbrev: cmd ? (request ? cmd.request : cmd.answer) : String(commandCode),
    application: APPLICATIONS.get(applicationId) ?? String(applicationId),
  };
  const sid = findAvp(avps, 263);
  if (sid) info.sessionId = sid.text('utf8');
  const rc = findAvp(avps, 268) ?? findAvp(avps, 298);
  if (rc && rc.dataLength === 4) info.resultCode = buf.readUInt32BE(rc.dataOffset);
  return info;
}

function parseAvps(buf: Buffer, from: number, end: number, depth: number, state: { malformed?: string }): Avp[] {
  const out: Avp[] = [];
  let p = from;
  while (p < end) {
    if (end - p < 8) {
      state.malformed = 'AVP header cut short';
      break;
    }
    const code = buf.readUInt32BE(p);
    const flags = buf[p + 4];
    const len = buf.readUIntBE(p + 5, 3);
    const head = flags & FLAG_VENDOR ? 12 : 8;
    if (len < head || p + len > end) {
      state.malformed = `AVP ${code} length ${len} runs past its container`;
      break;
    }
    const vendorId = head === 12 ? buf.readUInt32BE(p + 8) : 0;
    const avp = new Avp(code, vendorId, flags, buf, p + head, len - head);
    if (AVPS.get(avpKey(code, vendorId))?.type === 'grouped') {
      if (depth + 1 >= MAX_GROUP_DEPTH) state.malformed = `grouped AVP ${code} nested deeper than ${MAX_GROUP_DEPTH}`;
      else avp.avps = parseAvps(buf, p + head, p + len, depth + 1, state);
    }
    out.push(avp);
    p += (len + 3) & ~3;
  }
  return out;
}

/** The first AVP with this code and vendor, searched depth first through grouped AVPs. */
export function findAvp(avps: Avp[], code: number, vendorId = 0): Avp | undefined {
  for (const a of avps) {
    if (a.code === code && a.vendorId === vendorId) return a;
    if (a.avps) {
      const inner = findAvp(a.avps, code, vendorId);
      if (inner) return inner;
    }
  }
  return undefined;
}

/** Every AVP with this code and vendor, at any depth. */
export function findAllAvps(avps: Avp[], code: number, vendorId = 0, out: Avp[] = []): Avp[] {
  for (const a of avps) {
    if (a.code === code && a.vendorId === vendorId) out.push(a);
    if (a.avps) findAllAvps(a.avps, code, vendorId, out);
  }
  return out;
}

export const find3gpp = (avps: Avp[], code: number) => findAvp(avps, code, VENDOR_3GPP);

/** `AAR Rx`; base-protocol messages (CER, DWA...) without the application. */
export function diameterSummary(d: DiameterInfo, latencyMs?: number): string {
  if (d.request) return d.applicationId === 0 ? d.commandAbbrev : `${d.commandAbbrev} ${d.application}`;
  const rc = d.resultCode !== undefined ? ` ${d.resultCode}` : '';
  return `${d.commandAbbrev}${rc}${latencyMs !== undefined ? ` (${latencyMs} ms)` : ''}`;
}

// ---- JSON shape sent as the HEP payload (type 56); documented in the README ----

export interface AvpJson {
  code: number;
  vendorId?: number;
  /** V, M, P flags that are set, e.g. "VM". */
  flags: string;
  name?: string;
  value?: string | number;
  /** OctetString, Address and unknown AVPs. */
  hex?: string;
  avps?: AvpJson[];
}

export interface DiameterJson {
  version: number;
  length: number;
  flags: { request: boolean; proxiable: boolean; error: boolean; retransmit: boolean };
  commandCode: number;
  command: string;
  applicationId: number;
  application: string;
  hopByHop: number;
  endToEnd: number;
  avps: AvpJson[];
  malformed?: string;
}

/**
 * JSON text written straight into bytes, into one buffer reused from message to message (grown
 * when a message needs more): what JSON.stringify and Buffer.from made, without an object and
 * strings per AVP in between. Keys and names are written as they are: they need no escaping.
 */
class JsonBytes {
  buf = Buffer.allocUnsafe(16 * 1024);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.length + n));
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }

  /** ASCII that needs no escaping: punctuation, keys, dictionary names. Short: a loop costs less than write()'s native call. */
  raw(text: string): void {
    this.room(text.length);
    for (let i = 0; i < text.length; i++) this.buf[this.length++] = text.charCodeAt(i);
  }

  /** An integer (|n| < 2^53), digit by digit: no string. */
  int(n: number): void {
    this.room(17);
    if (n < 0) {
      this.buf[this.length++] = 0x2d;
      n = -n;
    }
    let digits = 1;
    for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    for (let i = this.length + digits - 1; i >= this.length; i--, n = Math.floor(n / 10)) this.buf[i] = 0x30 + (n % 10);
    this.length += digits;
  }

  /** A JSON string of any text. */
  string(text: string): void {
    const json = JSON.stringify(text);
    this.room(Buffer.byteLength(json));
    this.length += this.buf.write(json, this.length, 'utf8');
  }

  /**
   * The JSON string of the UTF-8 bytes src[from..to): the bytes themselves when valid and free of
   * what JSON escapes (quote, backslash, control characters); else through a string, as any text.
   */
  utf8(src: Buffer, from: number, to: number): void {
    let plain = true;
    let checked = false; // whether the bytes are known to be valid UTF-8 (looked at once, at the first non-ASCII byte)
    for (let i = from; i < to && plain; i++) {
      const c = src[i];
      if (c < 0x20 || c === 0x22 || c === 0x5c) plain = false;
      else if (c >= 0x80 && !checked) plain = checked = isUtf8(src.subarray(from, to));
    }
    if (!plain) return this.string(src.toString('utf8', from, to));
    this.room(to - from + 2);
    this.buf[this.length++] = 0x22;
    if (to - from > 64) this.length += src.copy(this.buf, this.length, from, to);
    else for (let i = from; i < to; i++) this.buf[this.length++] = src[i];
    this.buf[this.length++] = 0x22;
  }

  /** A JSON string of the bytes src[from..to) in lower-case hex. */
  hex(src: Buffer, from: number, to: number): void {
    this.room(2 * (to - from) + 2);
    this.buf[this.length++] = 0x22;
    for (let i = from; i < to; i++) {
      this.buf[this.length++] = HEX_DIGITS[src[i] >> 4];
      this.buf[this.length++] = HEX_DIGITS[src[i] & 15];
    }
    this.buf[this.length++] = 0x22;
  }
}

const HEX_DIGITS = Buffer.from('0123456789abcdef');
const json = new JsonBytes();
/** Past this, the buffer of the last message is let go rather than kept for the next. */
const JSON_BUFFER_KEPT = 256 * 1024;

/**
 * The HEP payload of a Diameter message: the JSON of DiameterJson (README "Diameter"), keys in its
 * order, as JSON.stringify writes them. A view of a buffer that the next call reuses: copy what you keep.
 */
export function diameterJsonBytes(d: DiameterInfo): Buffer {
  if (json.buf.length > JSON_BUFFER_KEPT) json.buf = Buffer.allocUnsafe(16 * 1024);
  json.length = 0;
  const cmd = COMMANDS.get(d.commandCode);
  json.raw('{"version":');
  json.int(d.version);
  json.raw(',"length":');
  json.int(d.length);
  json.raw(d.request ? ',"flags":{"request":true' : ',"flags":{"request":false');
  json.raw(d.proxiable ? ',"proxiable":true' : ',"proxiable":false');
  json.raw(d.error ? ',"error":true' : ',"error":false');
  json.raw(d.retransmit ? ',"retransmit":true},"commandCode":' : ',"retransmit":false},"commandCode":');
  json.int(d.commandCode);
  json.raw(',"command":"');
  if (cmd) {
    json.raw(cmd.name);
    json.raw(d.request ? '-Request"' : '-Answer"');
  } else {
    json.int(d.commandCode);
    json.raw('"');
  }
  json.raw(',"applicationId":');
  json.int(d.applicationId);
  json.raw(',"application":"');
  json.raw(d.application); // a dictionary name, or the id's digits
  json.raw('","hopByHop":');
  json.int(d.hopByHop);
  json.raw(',"endToEnd":');
  json.int(d.endToEnd);
  json.raw(',"avps":');
  avpsJson(d.avps);
  if (d.malformed) {
    json.raw(',"malformed":');
    json.string(d.malformed);
  }
  json.raw('}');
  return json.buf.subarray(0, json.length);
}

/** The `flags` member by the V, M and P bits (0x80, 0x40, 0x20) shifted down. */
const FLAGS_JSON = ['', 'P', 'M', 'MP', 'V', 'VP', 'VM', 'VMP'].map((f) => `,"flags":"${f}"`);

function avpsJson(avps: Avp[]): void {
  json.raw('[');
  for (let i = 0; i < avps.length; i++) {
    const a = avps[i];
    const def = AVPS.get(avpKey(a.code, a.vendorId));
    json.raw(i === 0 ? '{"code":' : ',{"code":');
    json.int(a.code);
    if (a.vendorId) {
      json.raw(',"vendorId":');
      json.int(a.vendorId);
    }
    json.raw(FLAGS_JSON[(a.flags & (FLAG_VENDOR | FLAG_MANDATORY | FLAG_PROTECTED)) >> 5]);
    if (def) {
      json.raw(',"name":"');
      json.raw(def.name);
      json.raw('"');
    }
    if (a.avps) {
      json.raw(',"avps":');
      avpsJson(a.avps);
    } else if (!(def && typedValue(def.type, a))) {
      json.raw(',"hex":');
      json.hex(a.message, a.dataOffset, a.dataOffset + a.dataLength);
    }
    json.raw('}');
  }
  json.raw(']');
}

/** 1900-01-01 to 1970-01-01 in seconds: Diameter Time is NTP seconds. */
const NTP_EPOCH_OFFSET = 2208988800;

/** Writes an AVP's value as its type shows it (`,"value":...`); false when its data does not fit the type (then shown as hex). */
function typedValue(type: AvpType, a: Avp): boolean {
  const { message: m, dataOffset: at, dataLength: n } = a;
  switch (type) {
    case 'utf8':
      json.raw(',"value":');
      json.utf8(m, at, at + n);
      return true;
    case 'u32':
    case 'i32':
      if (n !== 4) return false;
      json.raw(',"value":');
      json.int(type === 'u32' ? m.readUInt32BE(at) : m.readInt32BE(at));
      return true;
    case 'u64': {
      if (n !== 8) return false;
      const v = m.readBigUInt64BE(at);
      json.raw(',"value":');
      if (v <= BigInt(Number.MAX_SAFE_INTEGER)) json.int(Number(v));
      else json.string(v.toString());
      return true;
    }
    case 'time':
      if (n !== 4) return false;
      json.raw(',"value":');
      json.string(new Date((m.readUInt32BE(at) - NTP_EPOCH_OFFSET) * 1000).toISOString());
      return true;
    case 'address':
      if (n !== 6 || m.readUInt16BE(at) !== 1) return false;
      json.raw(',"value":');
      json.string(`${m[at + 2]}.${m[at + 3]}.${m[at + 4]}.${m[at + 5]}`);
      return true;
    default:
      return false;
  }
}
