/**
 * Inputs shared by the fuzz targets: random bytes, near-valid SIP and Diameter, the hostile shapes
 * that were found to crash or to cost quadratic time, and random splits of a stream into writes.
 */
import fc from 'fast-check';
import { diameterMessage, diameterResyncChain, TGPP, type AvpSpec } from '../helpers/diameter.js';

export const randomBytes = (maxLength = 4096) => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));

const CRLF = fc.constantFrom('\r\n', '\n', '\r', '');
const START_LINES = [
  'INVITE sip:bob@ims.test SIP/2.0', 'REGISTER sip:ims.test SIP/2.0', 'ACK sip:b SIP/2.0', 'BYE sip:b@x SIP/2.0', 'OPTIONS * SIP/2.0',
  'SIP/2.0 200 OK', 'SIP/2.0 401 Unauthorized', 'SIP/2.0 1000 X', 'SIP/2.0 x', 'INVITE  SIP/2.0', 'INVITE sip:b SIP/3.0', 'FOO sip:b SIP/2.0', 'INVITE',
];
const HEADER_NAMES = ['Call-ID', 'i', 'CSeq', 'Content-Length', 'l', 'content-length', 'L', 'To', 't', 'Authorization', 'P-Charging-Vector', 'Via', 'c', 'x', 'WWW-Authenticate'];
const HEADER_VALUES = [
  'call-1@ims', '1 INVITE', '1 REGISTER', '0', '5', '  17 ', '-1', '99999999', '1048577', 'abc', '',
  '<sip:alice@ims.test>;tag=1', 'Digest username="alice@ims.test", realm="ims.test"', 'Digest username="unterminated',
  'icid-value="AyretyU0dm+6O2IrT5tAFrbHLso=";orig-ioi=ims.test', 'icid-value=', 'icid-value = x;icid-value=y',
  'Digest realm="ims.test", algorithm=AKAv1-MD5, ck="00112233445566778899aabbccddeeff", ik="ffeeddccbbaa99887766554433221100"',
  'Digest ck="unterminated', 'Digest realm="a, ck=b", ik=token, ck = "x\\"y"',
];
const BODY_LINES = [
  'v=0', 'm=audio 4000 RTP/SAVP 0', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32',
  'A=CRYPTO:2 AES_256_CM_HMAC_SHA1_80 INLINE:c2VjcmV0c2VjcmV0|2^20', 'a=crypto:', 'a=crypto:inline:', 'inline:AAAA',
  'a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAyO3rnQAAAAAJAQAEEQQXdZqh', 'a=key-mgmt:', 'a=key-mgmt:mikey', 'A=KEY-MGMT: mikey  AQ==',
];

/** Text that repeats one piece up to about `bytes` bytes. */
const repeat = (piece: string, bytes: number) => piece.repeat(Math.max(1, Math.floor(bytes / piece.length)));

/** Messages that cost quadratic time or crashed before they were fixed; each up to 64 KiB. */
export const hostileSip = fc.constantFrom(
  ...[
    `INVITE sip:b@x SIP/2.0\r\nContent-Length: 65000\r\n\r\n${repeat('a=crypto:inline:A', 65_000)}`,
    `MESSAGE sip:b@x SIP/2.0\r\n${repeat('cxxxxxxxxxxxxxxxxxx\r\n', 30_000)}Content-Length: 30000\r\n\r\n${'b'.repeat(30_000)}`,
    `INVITE sip:b@x SIP/2.0\r\nCall-ID: pcv\r\n${repeat('P-Charging-Vector: ', 64_000)}\r\nX: icid-value\r\n\r\n`,
    `INVITE sip:b@x SIP/2.0\r\nCall-ID: pcv\r\n${repeat('P-Charging-Vector: ICID-VALUE=x\r\n', 64_000)}\r\n`,
    `REGISTER sip:x SIP/2.0\r\nAuthorization: ${repeat('username="', 64_000)}\r\n\r\n`,
    `INVITE sip:b@x SIP/2.0\r\nCall-ID: ${'\u00ff'.repeat(60_000)}\r\n\r\n`,
    `SIP/2.0 x\r\n\r\n${repeat('SIP/2.0 ', 60_000)}`,
    repeat('INVITE sip:b', 64_000),
    repeat('\r\n', 64_000),
    // garbage with start-line-like pieces and no LF: the resync once searched its 4 KiB tail on every push
    repeat('INVITE sip:b@x SIP/2.1 SIP/2.0 ', 65_000),
    // redaction: parameters whose quoted values never close, key-mgmt lines with no space, quotes only
    `SIP/2.0 401 x\r\nWWW-Authenticate: Digest ${repeat('ck="a', 64_000)}\r\n\r\n`,
    `SIP/2.0 401 x\r\nWWW-Authenticate: ${repeat('"', 64_000)}\r\n\r\n`,
    `SIP/2.0 401 x\r\nWWW-Authenticate: x\r\n${repeat(' ik=\r\n', 64_000)}\r\n`,
    `INVITE sip:b@x SIP/2.0\r\n\r\n${repeat('a=key-mgmt:', 65_000)}`,
  ].map((s) => Buffer.from(s, 'latin1')),
);

/** A near-valid SIP message: known start lines and headers, some broken, any line ending, optional body. */
export const nearSip = fc
  .record({
    start: fc.constantFrom(...START_LINES),
    headers: fc.array(fc.tuple(fc.constantFrom(...HEADER_NAMES), fc.constantFrom(':', ': ', ' :', ''), fc.oneof(fc.constantFrom(...HEADER_VALUES), fc.string({ maxLength: 40 })), CRLF), { maxLength: 12 }),
    end: fc.constantFrom('\r\n\r\n', '\r\n', '\n\n', ''),
    body: fc.array(fc.tuple(fc.constantFrom(...BODY_LINES), CRLF), { maxLength: 8 }),
    lengthLies: fc.constantFrom(0, 0, 0, -3, 5, 1000),
  })
  .map(({ start, headers, end, body, lengthLies }) => {
    const text = body.map(([l, e]) => l + e).join('');
    const head = headers.map(([n, sep, v, e]) => `${n}${sep}${v}${e}`).join('');
    const cl = Math.max(0, Buffer.byteLength(text, 'latin1') + lengthLies);
    return Buffer.from(`${start}\r\n${head}Content-Length: ${cl}${end}${text}`, 'latin1');
  });

/** A SIP stream: messages, keep-alives and garbage back to back. */
export const sipStream = fc
  .array(fc.oneof({ arbitrary: nearSip, weight: 6 }, { arbitrary: fc.constantFrom(Buffer.from('\r\n\r\n'), Buffer.from('\r\n')), weight: 1 }, { arbitrary: randomBytes(256), weight: 1 }), { maxLength: 8 })
  .map((parts) => Buffer.concat(parts));

const avpLeaf: fc.Arbitrary<AvpSpec> = fc.record({
  code: fc.oneof(fc.constantFrom(263, 264, 296, 268, 1, 601, 505, 841, 609, 610, 625, 626, 1447, 121), fc.nat(5000)),
  vendor: fc.constantFrom(undefined, TGPP, 12345),
  value: fc.oneof(fc.nat().map((n) => n as number), fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a))),
});
const { avp: anyAvp } = fc.letrec<{ avp: AvpSpec }>((tie) => ({
  avp: fc.oneof({ depthSize: 'small', withCrossShrink: true }, avpLeaf, fc.record({ code: fc.constantFrom(612, 873, 876, 443, 1413), vendor: fc.constantFrom(undefined, TGPP), value: fc.array(tie('avp'), { maxLength: 4 }) })),
}));

/** A near-valid Diameter message: real layout, nested groups, sometimes a lying length or a flipped byte. */
export const nearDiameter = fc
  .record({
    request: fc.boolean(),
    command: fc.constantFrom(257, 272, 265, 280, 303, 318, 999, 0xffffff),
    app: fc.constantFrom(0, 4, 16777216, 16777236, 16777251),
    hopByHop: fc.nat(),
    avps: fc.array(anyAvp, { maxLength: 8 }),
    lengthDelta: fc.constantFrom(0, 0, 0, 4, -4, 3, 0x100000),
    flip: fc.option(fc.tuple(fc.nat(), fc.nat(255)), { freq: 4 }),
  })
  .map(({ request, command, app, hopByHop, avps, lengthDelta, flip }) => {
    const m = diameterMessage({ request, command, app, hopByHop, endToEnd: hopByHop, avps });
    if (lengthDelta) m.writeUIntBE(Math.max(0, Math.min(0xffffff, m.length + lengthDelta)), 1, 3);
    if (flip) m[flip[0] % m.length] = flip[1];
    return m;
  });

/** Diameter messages that cost quadratic time or crashed before they were fixed. */
export const hostileDiameter = fc.constantFrom(
  diameterMessage({ request: true, command: 272, app: 4, hopByHop: 1, endToEnd: 1, avps: [{ code: 263, value: Buffer.alloc(65_000, 0xff) }] }),
  diameterMessage({ request: true, command: 272, app: 4, hopByHop: 2, endToEnd: 2, avps: [{ code: 263, value: 'a'.repeat(65_480) }] }),
  diameterMessage({ request: true, command: 272, app: 4, hopByHop: 3, endToEnd: 3, avps: Array.from({ length: 5400 }, (_, i) => ({ code: 1000 + (i % 50), value: i })) }),
  // every header's AVP chain runs to one bad AVP at the end: resynchronising once walked each chain
  diameterResyncChain(65_536),
);

/**
 * How a stream is cut into writes: at up to 32 points, or (one time in 4) into chunks of 1 to 16
 * bytes. A chunk is at least 1/4096 of the stream (16 bytes for 64 KiB): pushing 64 KiB a byte at
 * a time costs about 20 ms in per-push overhead alone, over the cost ceiling however linear the framing.
 */
export const splits = fc.oneof({ arbitrary: fc.array(fc.nat(), { maxLength: 32 }), weight: 3 }, { arbitrary: fc.integer({ min: 1, max: 16 }), weight: 1 });

/** The writes of `stream` cut as `how` says: at points (taken modulo its length) or into chunks of a size. */
export function writes(stream: Buffer, how: number[] | number): Buffer[] {
  if (typeof how === 'number') {
    const chunk = Math.max(how, Math.ceil(stream.length / 4096));
    const out: Buffer[] = [];
    for (let at = 0; at < stream.length; at += chunk) out.push(stream.subarray(at, at + chunk));
    return out;
  }
  const cuts = [...new Set(how.map((p) => (stream.length ? p % stream.length : 0)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of cuts) {
    out.push(stream.subarray(from, c));
    from = c;
  }
  out.push(stream.subarray(from));
  return out;
}
