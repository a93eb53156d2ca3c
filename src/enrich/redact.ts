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
  for (const a of secrets) copy.fill(MASK, a.dataOffset, a.dataOffset + a.data.length);
  return copy;
}

/**
 * The lines that can carry secrets, found in one pass: SDP `a=crypto` (RFC 4568) and `a=key-mgmt`
 * (RFC 4567, MIKEY) attribute lines, and WWW-Authenticate headers with their folded continuation
 * lines (TS 24.229: the S-CSCF's 401 to the P-CSCF carries the IMS AKA keys `ck` and `ik`). SDP
 * attribute names, header names and parameter names are case-insensitive.
 */
const SECRET_LINE = /a=crypto:[^\n]*|a=key-mgmt:[^\n]*|^www-authenticate[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*/gim;
/** SDES key material: `inline:` followed by the base64 key||salt, up to `|`, `;` or whitespace. */
const INLINE_KEY = /inline:([A-Za-z0-9+/=]+)/gi;
/** `a=key-mgmt:<prtcl-id> <keymgmt-data>`: the base64 key management message (a MIKEY message with its keys). */
const KEY_MGMT_DATA = /^a=key-mgmt:[ \t]*[^ \t\r\n]+[ \t]+([A-Za-z0-9+/=]+)/i;
/**
 * In a WWW-Authenticate value: a quoted string taken whole (so `ck=` inside another parameter's
 * value is not a parameter), or a `ck`/`ik` parameter with its quoted or token value. A quoted
 * string left open runs to the end of its line, so every match succeeds where it starts: linear.
 */
const AKA_KEY = /"(?:[^"\\\r\n]|\\[^\r\n])*"?|(?<![\w!#$%&'*+.^`|~-])(?:ck|ik)[ \t]*=[ \t]*(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"?|([^\s,;"]+))/dgi;
const INLINE_LENGTH = 'inline:'.length;

/** Masks the secrets of one line found by SECRET_LINE, starting at `at` in the message. */
function maskLine(copy: Buffer, line: string, at: number): void {
  const head = line.charCodeAt(0) | 0x20;
  if (head === 0x77 /* w */) {
    for (const m of line.matchAll(AKA_KEY)) {
      const value = m.indices![1] ?? m.indices![2]; // none: a quoted string of another parameter
      if (value) copy.fill(MASK, at + value[0], at + value[1]);
    }
  } else if ((line.charCodeAt(2) | 0x20) === 0x6b /* a=k */) {
    const m = KEY_MGMT_DATA.exec(line);
    if (m) copy.fill(MASK, at + m[0].length - m[1].length, at + m[0].length);
  } else {
    for (const key of line.matchAll(INLINE_KEY)) {
      const start = at + key.index + INLINE_LENGTH;
      copy.fill(MASK, start, start + key[1].length);
    }
  }
}

/** SDP attributes that carry keys, lower case from the `=`. */
const KEY_ATTRIBUTES = [Buffer.from('=crypto:'), Buffer.from('=key-mgmt:')];
const UNAUTHORIZED = Buffer.from('SIP/2.0 401 ');

/** Whether `attribute` (lower case) is at `at`, in any case but its last byte (`:`). */
function attributeAt(payload: Buffer, at: number, attribute: Buffer): boolean {
  if (at + attribute.length > payload.length) return false;
  for (let i = 1; i < attribute.length - 1; i++) if ((payload[at + i] | 0x20) !== attribute[i]) return false;
  return payload[at + attribute.length - 1] === attribute[attribute.length - 1];
}

/**
 * Whether the message can hold a secret: an SDP key attribute (any case), or a 401, whose
 * WWW-Authenticate may carry `ck`/`ik`. Most messages have neither, and looking at the bytes after
 * each `=` spares them a string of the whole message.
 */
function maySecrets(payload: Buffer): boolean {
  if (bytesAt(payload, 0, UNAUTHORIZED)) return true;
  for (let at = payload.indexOf(0x3d); at >= 0; at = payload.indexOf(0x3d, at + 1)) {
    for (const attribute of KEY_ATTRIBUTES) if (attributeAt(payload, at, attribute)) return true;
  }
  return false;
}

/**
 * A copy of a SIP message with its secrets masked, or undefined when it has none: SDP `a=crypto`
 * keys, `a=key-mgmt` data (MIKEY) and the IMS AKA `ck`/`ik` of WWW-Authenticate. Linear: each such
 * line is read once, up to its end (a message with no line feed is one line).
 */
export function redactSip(payload: Buffer): Buffer | undefined {
  if (!maySecrets(payload)) return undefined;
  const text = payload.toString('latin1');
  SECRET_LINE.lastIndex = 0;
  let line = SECRET_LINE.exec(text);
  if (!line) return undefined;
  const copy = Buffer.from(payload);
  for (; line; line = SECRET_LINE.exec(text)) maskLine(copy, line[0], line.index);
  return copy;
}
