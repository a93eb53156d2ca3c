/**
 * Masks authentication secrets before a message leaves the agent (on by default, `--no-redact`
 * turns it off). Every secret byte is overwritten with 'X' in a copy of the message: lengths,
 * Content-Length and Diameter length fields stay exactly as on the wire.
 */
import { VENDOR_3GPP, avpKey } from '../protocols/diameter-dictionary.js';
import type { Avp } from '../protocols/diameter.js';

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

/** An SDP crypto attribute line (RFC 4568); SDP attribute names and `inline` are case-insensitive. */
const CRYPTO_LINE = /a=crypto:[^\n]*/gi;
/** SDES key material: `inline:` followed by the base64 key||salt, up to `|`, `;` or whitespace. */
const INLINE_KEY = /inline:([A-Za-z0-9+/=]+)/gi;
const INLINE_LENGTH = 'inline:'.length;

const CRYPTO_ATTRIBUTE = Buffer.from('=crypto:');

/**
 * Whether `=crypto:` (any case) occurs: most messages have no SDES key, and looking at the bytes
 * after each `=` spares them a string of the whole message.
 */
function hasCryptoAttribute(payload: Buffer): boolean {
  for (let at = payload.indexOf(0x3d); at >= 0 && at + CRYPTO_ATTRIBUTE.length <= payload.length; at = payload.indexOf(0x3d, at + 1)) {
    let i = 1;
    while (i < CRYPTO_ATTRIBUTE.length - 1 && (payload[at + i] | 0x20) === CRYPTO_ATTRIBUTE[i]) i++;
    if (i === CRYPTO_ATTRIBUTE.length - 1 && payload[at + i] === 0x3a) return true;
  }
  return false;
}

/**
 * A copy of a SIP message with SDP `a=crypto` keys masked, or undefined when it has none. Linear:
 * each crypto line is read once, up to its end (a message with no line feed is one line).
 */
export function redactSip(payload: Buffer): Buffer | undefined {
  if (!hasCryptoAttribute(payload)) return undefined;
  const text = payload.toString('latin1');
  CRYPTO_LINE.lastIndex = 0;
  let line = CRYPTO_LINE.exec(text);
  if (!line) return undefined;
  const copy = Buffer.from(payload);
  for (; line; line = CRYPTO_LINE.exec(text)) {
    for (const key of line[0].matchAll(INLINE_KEY)) {
      const start = line.index + key.index + INLINE_LENGTH;
      copy.fill(MASK, start, start + key[1].length);
    }
  }
  return copy;
}
