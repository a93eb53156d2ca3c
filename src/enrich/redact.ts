/**
 * Masks authentication secrets before a message leaves the agent (on by default, `--no-redact`
 * turns it off). Every secret byte is overwritten with 'X' in a copy of the message: lengths,
 * Content-Length and Diameter length fields stay exactly as on the wire.
 */
import { VENDOR_3GPP, avpKey } from '../protocols/diameter-dictionary.js';
import type { Avp } from '../protocols/diameter.js';
import { bytesAt } from '../protocols/sip.js';

const MASK = 0x58; // 'X'

/** AVPs whose values are secrets: Cx SIP-Auth-Data-Item contents, S6a vectors, HTTP digest HA1. */
const SECRET_AVPS = new Set([
  avpKey(609, VENDOR_3GPP), // SIP-Authenticate (RAND || AUTN)
  avpKey(610, VENDOR_3GPP), // SIP-Authorization (XRES, or AUTS on resync)
  avpKey(625, VENDOR_3GPP), // Confidentiality-Key
  avpKey(626, VENDOR_3GPP), // Integrity-Key
  avpKey(1447, VENDOR_3GPP), // RAND
  avpKey(1448, VENDOR_3GPP), // XRES
  avpKey(1449, VENDOR_3GPP), // AUTN
  avpKey(1450, VENDOR_3GPP), // KASME
  avpKey(1453, VENDOR_3GPP), // Kc
  avpKey(1454, VENDOR_3GPP), // SRES
  avpKey(121, 0), // Digest-HA1
]);

function collectSecrets(avps: Avp[], out: Avp[]): Avp[] {
  for (const a of avps) {
    if (SECRET_AVPS.has(avpKey(a.code, a.vendorId))) out.push(a);
    else if (a.avps) collectSecrets(a.avps, out);
  }
  return out;
}

/** A masked copy of a Diameter message, or undefined when it holds no secret. */
export function redactDiameter(payload: Buffer, avps: Avp[]): Buffer | undefined {
  const secrets = collectSecrets(avps, []);
  if (secrets.length === 0) return undefined;
  const copy = Buffer.from(payload);
  for (const a of secrets) copy.fill(MASK, a.dataOffset, a.dataOffset + a.dataLength);
  return copy;
}

/**
 * In a WWW-Authenticate value: a quoted string taken whole (so `ck=` inside another parameter's
 * value is not a parameter), or a `ck`/`ik` parameter with its quoted or token value. A quoted
 * string left open runs to the end of its line, so every match succeeds where it starts: linear.
 */
const AKA_KEY = /"(?:[^"\\\r\n]|\\[^\r\n])*"?|(?<![\w!#$%&'*+.^`|~-])(?:ck|ik)[ \t]*=[ \t]*(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"?|([^\s,;"]+))/dgi;

const LF = 0x0a;
const CR = 0x0d;
const A_CRYPTO = Buffer.from('a=crypto:');
const A_KEY_MGMT = Buffer.from('a=key-mgmt:');
const WWW_AUTHENTICATE = Buffer.from('www-authenticate');
const INLINE = Buffer.from('inline:');

/** Is `lower` at buf[at..], its letters in any case and every other byte exactly? */
function lowerAt(buf: Buffer, at: number, lower: Buffer): boolean {
  if (at + lower.length > buf.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = buf[at + i];
    const t = lower[i];
    if (c !== t && !(t >= 0x61 && t <= 0x7a && c === t - 0x20)) return false;
  }
  return true;
}

/** SDES and MIKEY keys are base64: [A-Za-z0-9+/=]. */
function isBase64(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f || c === 0x3d;
}

/** Where the run of base64 at buf[from..to) ends. */
function base64End(buf: Buffer, from: number, to: number): number {
  while (from < to && isBase64(buf[from])) from++;
  return from;
}

/** Where the run of blanks (space, tab) at buf[from..to) ends. */
function blanksEnd(buf: Buffer, from: number, to: number): number {
  while (from < to && (buf[from] === 0x20 || buf[from] === 0x09)) from++;
  return from;
}

/** Where the line from `at` ends: its LF, or the end. */
function lineEnd(buf: Buffer, at: number): number {
  const lf = buf.indexOf(LF, at);
  return lf < 0 ? buf.length : lf;
}

/**
 * Where the WWW-Authenticate header starting at `at` ends (the LF of its last folded line), or -1 when
 * none starts there: the header name in any case, blanks, a colon, and the lines that continue it.
 */
function wwwAuthenticateEnd(buf: Buffer, at: number): number {
  if (!lowerAt(buf, at, WWW_AUTHENTICATE)) return -1;
  const colon = blanksEnd(buf, at + WWW_AUTHENTICATE.length, buf.length);
  if (buf[colon] !== 0x3a) return -1;
  let end = lineEnd(buf, colon);
  while (end + 1 < buf.length && (buf[end + 1] === 0x20 || buf[end + 1] === 0x09)) end = lineEnd(buf, end + 1);
  return end;
}

/** The secret-carrying lines: what each masks, in `copy`, of the line at payload[from..to). */
type MaskLine = (payload: Buffer, copy: Buffer, from: number, to: number) => void;

/**
 * SDES key material: each `inline:` (any case) followed by base64 key||salt, up to `|`, `;` or
 * whitespace. Found from the colons: a native search, where a loop over every byte costs more.
 */
const maskInlineKeys: MaskLine = (payload, copy, from, to) => {
  let last = from; // a key ends where the next one may start
  for (let colon = payload.indexOf(0x3a, from + INLINE.length - 1); colon >= 0 && colon < to; colon = payload.indexOf(0x3a, colon + 1)) {
    const at = colon + 1 - INLINE.length;
    if (at < last || !lowerAt(payload, at, INLINE)) continue;
    const end = base64End(payload, colon + 1, to);
    if (end === colon + 1) continue;
    copy.fill(MASK, colon + 1, end);
    last = end;
  }
};

/** `a=key-mgmt:<prtcl-id> <keymgmt-data>`: the base64 key management message (a MIKEY message with its keys). */
const maskKeyMgmtData: MaskLine = (payload, copy, from, to) => {
  const protocol = blanksEnd(payload, from + A_KEY_MGMT.length, to);
  let p = protocol;
  while (p < to && payload[p] !== 0x20 && payload[p] !== 0x09 && payload[p] !== CR) p++;
  const data = blanksEnd(payload, p, to);
  if (p > protocol && data > p) copy.fill(MASK, data, base64End(payload, data, to));
};

/** The IMS AKA `ck` and `ik` of a WWW-Authenticate header (a 401's: the only line that becomes a string). */
const maskAkaKeys: MaskLine = (payload, copy, from, to) => {
  for (const m of payload.toString('latin1', from, to).matchAll(AKA_KEY)) {
    const value = m.indices![1] ?? m.indices![2]; // none: a quoted string of another parameter
    if (value) copy.fill(MASK, from + value[0], from + value[1]);
  }
};

/** SDP attributes that carry keys, lower case from the `=`: each has its y (or Y) KEY_Y_AT bytes after the `=`. */
const KEY_ATTRIBUTES = [Buffer.from('=crypto:'), Buffer.from('=key-mgmt:')];
const KEY_Y_AT = 3;
const UNAUTHORIZED = Buffer.from('SIP/2.0 401 ');

/** Whether `attribute` (lower case) is at `at`, in any case but its last byte (`:`). */
function attributeAt(payload: Buffer, at: number, attribute: Buffer): boolean {
  if (at + attribute.length > payload.length) return false;
  for (let i = 1; i < attribute.length - 1; i++) if ((payload[at + i] | 0x20) !== attribute[i]) return false;
  return payload[at + attribute.length - 1] === attribute[attribute.length - 1];
}

/**
 * Where the next of a letter's two cases (`lower`, `upper`) is at or after `from`, or -1. `at` holds
 * where the next of each is (-1: none after), each searched for again only once passed: every search
 * is native, and the message is searched once for each.
 */
function nextOfEither(payload: Buffer, from: number, lower: number, upper: number, at: [number, number]): number {
  if (at[0] >= 0 && at[0] < from) at[0] = payload.indexOf(lower, from);
  if (at[1] >= 0 && at[1] < from) at[1] = payload.indexOf(upper, from);
  return at[0] < 0 ? at[1] : at[1] < 0 ? at[0] : Math.min(at[0], at[1]);
}

/**
 * Where the `=` of the next SDP key attribute (any case) at or after `from` is, or -1. Found from the
 * y of `crypto` and `key-mgmt` (`y` as in nextOfEither): a message has few y, where a search for each
 * `=` (a dozen in any SIP message with SDP) was most of the time spent on a message without secrets.
 */
function nextKeyAttribute(payload: Buffer, from: number, y: [number, number]): number {
  for (;;) {
    const at = nextOfEither(payload, from + KEY_Y_AT, 0x79, 0x59, y);
    if (at < 0) return -1;
    const eq = at - KEY_Y_AT;
    if (payload[eq] === 0x3d) for (const attribute of KEY_ATTRIBUTES) if (attributeAt(payload, eq, attribute)) return eq;
    from = eq + 1;
  }
}

/**
 * Where the next line at or after `from` starts with a w or W (where a WWW-Authenticate header may
 * start, after LF or CR), or -1 (`w` as in nextOfEither).
 */
function nextWLine(payload: Buffer, from: number, w: [number, number]): number {
  for (;;) {
    const at = nextOfEither(payload, from, 0x77, 0x57, w);
    if (at <= 0 || payload[at - 1] === LF || payload[at - 1] === CR) return at;
    from = at + 1;
  }
}

/** Where the masked copy of a SIP message is made, grown as messages need (up to the 64 KiB of a message). */
let sipCopy = Buffer.allocUnsafe(8192);

/**
 * A copy of `payload` in sipCopy. A Buffer of its own per message (from Node's 8 KiB pools) was
 * the costliest part of masking an INVITE with SDES keys: a new pool every dozen messages.
 */
function copyOf(payload: Buffer): Buffer {
  if (payload.length > sipCopy.length) sipCopy = Buffer.allocUnsafe(Math.max(2 * sipCopy.length, payload.length));
  payload.copy(sipCopy);
  return sipCopy.subarray(0, payload.length);
}

/**
 * A copy of a SIP message with its secrets masked, or undefined when it has none: SDP `a=crypto`
 * keys, `a=key-mgmt` data (MIKEY) and the IMS AKA `ck`/`ik` of WWW-Authenticate. The lines that can
 * carry them are found in one pass of native searches for single bytes (a loop over every byte costs
 * more): an `a=crypto:` or `a=key-mgmt:` anywhere (from its y; it runs to the end of its line), and
 * a WWW-Authenticate header at a line's start (from its w; it runs over its folded lines). Attribute,
 * header and parameter names are case-insensitive. Linear: each such line is read once, up to its end
 * (a message with no line feed is one line). Only a WWW-Authenticate line becomes a string.
 * The copy is a view of a buffer the next call reuses: like a message's payload it is valid during
 * the callback, and whatever keeps it (the hold) copies it.
 */
export function redactSip(payload: Buffer): Buffer | undefined {
  // Whether the message can hold a secret: an SDP key attribute, or a 401 (whose WWW-Authenticate may carry ck/ik). Most have neither.
  const yAt: [number, number] = [payload.indexOf(0x79), payload.indexOf(0x59)];
  const first = nextKeyAttribute(payload, 0, yAt);
  if (first < 0 && !bytesAt(payload, 0, UNAUTHORIZED)) return undefined;
  let eq = first !== 0 ? first : nextKeyAttribute(payload, 1, yAt); // an a=crypto: or a=key-mgmt: has its a before the =: none at 0
  let copy: Buffer | undefined;
  const wAt: [number, number] = [payload.indexOf(0x77), payload.indexOf(0x57)];
  let w = nextWLine(payload, 0, wAt);
  while (eq >= 0 || w >= 0) {
    let start: number;
    let end = -1;
    let mask: MaskLine | undefined;
    if (eq >= 0 && (w < 0 || eq - 1 < w)) {
      start = eq - 1;
      mask = lowerAt(payload, start, A_CRYPTO) ? maskInlineKeys : lowerAt(payload, start, A_KEY_MGMT) ? maskKeyMgmtData : undefined;
      if (mask) end = lineEnd(payload, eq);
      eq = nextKeyAttribute(payload, eq + 1, yAt);
    } else {
      start = w;
      end = wwwAuthenticateEnd(payload, start);
      if (end >= 0) mask = maskAkaKeys;
      w = nextWLine(payload, start + 1, wAt);
    }
    if (!mask) continue;
    copy ??= copyOf(payload);
    mask(payload, copy, start, end);
    // The next line with secrets starts after this one's end.
    if (eq >= 0 && eq - 1 < end) eq = nextKeyAttribute(payload, end + 1, yAt);
    if (w >= 0 && w < end) w = nextWLine(payload, end + 1, wAt);
  }
  return copy;
}
