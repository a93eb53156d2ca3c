import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { decodeHep, HepDecodeError, splitHepStream } from '../../src/hep/decode.js';
import { HepEncoder, type HepMessage } from '../../src/hep/encode.js';
import { MAX_PACKET, MAX_UDP_PACKET } from '../../src/hep/chunks.js';

const hepjs = createRequire(import.meta.url)('hep-js') as { decapsulate(b: Buffer): { rcinfo: Record<string, unknown>; payload: string } };
// Kamailio 5.6 siptrace output, copied from the project's shared reference vectors.
const VECTORS = new URL('../fixtures/vectors/', import.meta.url);
const hex = (name: string) => readFileSync(new URL(name, VECTORS), 'utf8').trim().split(/\s+/).map((h) => Buffer.from(h, 'hex'));

/** The fields of a decoded packet as our encoder takes them. */
function asMessage(p: ReturnType<typeof decodeHep>): HepMessage {
  return {
    family: p.family === 2 ? 4 : 6,
    ipProto: p.ipProto!,
    srcIp: p.srcIp!,
    dstIp: p.dstIp!,
    srcPort: p.srcPort!,
    dstPort: p.dstPort!,
    timeUs: p.tsSec! * 1e6 + p.tsUsec!,
    protoType: p.protoType!,
    correlationId: p.correlationId!,
    payload: p.payload!,
  };
}

describe('HEPv3 against Kamailio siptrace', () => {
  const vectors = [...hex('kamailio-hep3.hex'), ...hex('kamailio-hep3-tls.hex'), ...hex('kamailio-hep3-call.hexlines')];

  it('decodes every reference packet', () => {
    const [invite] = hex('kamailio-hep3.hex');
    const p = decodeHep(invite);
    expect(p).toMatchObject({ family: 2, ipProto: 17, srcIp: '127.0.0.1', dstIp: '127.0.0.1', srcPort: 15061, dstPort: 25060, protoType: 1, captureId: 2001, correlationId: '1-9639@127.0.0.1-abc' });
    expect(p.payload!.toString()).toBe(readFileSync(new URL('kamailio-hep3.sip', VECTORS), 'utf8'));
    expect(decodeHep(hex('kamailio-hep3-tls.hex')[0]).ipProto).toBe(22);
  });

  it('re-encodes each reference packet to the same bytes (same chunk order and layout)', () => {
    const enc = new HepEncoder({ captureId: 2001 });
    for (const v of vectors) {
      const out = Buffer.alloc(70000);
      const length = enc.encode(asMessage(decodeHep(v)), out, 0);
      expect(out.subarray(0, length).toString('hex')).toBe(v.toString('hex'));
    }
  });
});

describe('HEPv3 encoder and strict decoder', () => {
  const base: HepMessage = {
    family: 4, ipProto: 6, srcIp: '10.1.2.3', dstIp: '192.0.2.9', srcPort: 5060, dstPort: 5080,
    timeUs: 1_795_457_364_669_459, protoType: 1, correlationId: 'abc@x', payload: Buffer.from('OPTIONS sip:a@b SIP/2.0\r\n\r\n'),
  };

  it('round-trips IPv6, binary payloads and agent fields', () => {
    const enc = new HepEncoder({ captureId: 7, authKey: 'secret', nodeName: 'edge-1' });
    const payload = Buffer.from(Array.from({ length: 512 }, (_, i) => i & 0xff));
    const out = Buffer.alloc(2000);
    const length = enc.encode({ ...base, family: 6, srcIp: '2001:db8::1', dstIp: '::1', payload, protoType: 56 }, out, 10);
    const p = decodeHep(out.subarray(10, 10 + length));
    expect(p).toMatchObject({ family: 10, srcIp: '2001:db8::1', dstIp: '::1', captureId: 7, authKey: 'secret', nodeName: 'edge-1', protoType: 56, tsSec: 1_795_457_364, tsUsec: 669_459 });
    expect(p.payload!.equals(payload)).toBe(true);
  });

  it('carries a correlation id as its UTF-8, ASCII or not, and counts its bytes in the packet limit', () => {
    const enc = new HepEncoder({ captureId: 1 });
    const out = Buffer.alloc(MAX_PACKET);
    for (const correlationId of ['a84b4c76e66710@pc33.atlanta.example.com', 'café-☎-\u{1d11e}@x', 'lone \ud800 surrogate']) {
      const m = { ...base, correlationId };
      const fits = Buffer.alloc(MAX_PACKET - enc.overhead(m), 0x5a);
      const length = enc.encode({ ...m, payload: fits }, out, 0);
      expect([length, enc.payloadBytes]).toEqual([MAX_PACKET, fits.length]);
      const p = decodeHep(out.subarray(0, length));
      expect(p.correlationId).toBe(Buffer.from(correlationId).toString('utf8')); // a lone surrogate is U+FFFD, as Buffer.from makes it
      expect(p.payload!.equals(fits)).toBe(true);
    }
  });

  it('cuts the payload to fit one UDP datagram and says how much went', () => {
    const enc = new HepEncoder({ captureId: 1 });
    const out = Buffer.alloc(70000);
    const payload = Buffer.alloc(65536, 0x41);
    const length = enc.encode({ ...base, payload }, out, 0, MAX_UDP_PACKET);
    expect(length).toBe(MAX_UDP_PACKET);
    expect(enc.payloadBytes).toBeLessThan(payload.length);
    expect(decodeHep(out.subarray(0, length)).payload!.length).toBe(enc.payloadBytes);
  });

  it('rejects truncated and malformed packets instead of returning partial fields', () => {
    const out = Buffer.alloc(1000);
    const length = new HepEncoder({ captureId: 1 }).encode(base, out, 0);
    const good = out.subarray(0, length);
    for (const cut of [3, 6, 20, length - 1]) expect(() => decodeHep(good.subarray(0, cut))).toThrow(HepDecodeError);
    const badChunk = Buffer.from(good);
    badChunk.writeUInt16BE(2, 6 + 4); // first chunk claims a length below its own header
    expect(() => decodeHep(badChunk)).toThrow(/bad length/);
    expect(() => decodeHep(Buffer.from('HEP2xxxxxxxx'))).toThrow(/not a HEP3/);
  });

  it('round-trips every IPv4 field', () => {
    const out = Buffer.alloc(1000);
    const enc = new HepEncoder({ captureId: 0xfffffffe });
    const length = enc.encode(base, out, 0);
    expect(enc.payloadBytes).toBe(base.payload.length);
    const p = decodeHep(out.subarray(0, length));
    expect({ ...p, chunks: p.chunks.map((c) => c.type) }).toEqual({
      family: 2, ipProto: 6, srcIp: '10.1.2.3', dstIp: '192.0.2.9', srcPort: 5060, dstPort: 5080, tsSec: 1_795_457_364, tsUsec: 669_459,
      protoType: 1, captureId: 0xfffffffe, correlationId: 'abc@x', payload: base.payload,
      chunks: [0x01, 0x02, 0x03, 0x04, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x11, 0x0f],
    });
  });

  it('carries the largest payload a HEP packet can hold whole, and cuts a 64 KiB one to fit', () => {
    const enc = new HepEncoder({ captureId: 1, nodeName: 'n' });
    const out = Buffer.alloc(MAX_PACKET);
    const fits = Buffer.alloc(MAX_PACKET - enc.overhead(base), 0x5a);
    const whole = enc.encode({ ...base, payload: fits }, out, 0);
    expect([whole, enc.payloadBytes]).toEqual([MAX_PACKET, fits.length]);
    expect(decodeHep(out.subarray(0, whole)).payload!.equals(fits)).toBe(true);
    const big = Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 31) & 0xff));
    const cut = enc.encode({ ...base, payload: big }, out, 0);
    expect([cut, enc.payloadBytes]).toEqual([MAX_PACKET, fits.length]);
    const p = decodeHep(out.subarray(0, cut));
    expect(p.payload!.equals(big.subarray(0, fits.length))).toBe(true);
    expect(p.nodeName).toBe('n');
  });

  it('rejects a packet cut at any byte, and bytes after its end', () => {
    const out = Buffer.alloc(1000);
    const length = new HepEncoder({ captureId: 1, nodeName: 'node' }).encode(base, out, 0);
    const good = Buffer.from(out.subarray(0, length));
    expect(decodeHep(good).nodeName).toBe('node');
    for (let cut = 0; cut < length; cut++) expect(() => decodeHep(good.subarray(0, cut)), `cut at ${cut}`).toThrow(HepDecodeError);
    expect(() => decodeHep(Buffer.concat([good, Buffer.from([0])]))).toThrow(/after its end/);
    const shortPort = Buffer.from(good);
    // Make the dst-port chunk claim 1 value byte: what follows then no longer adds up either way.
    const at = good.indexOf(Buffer.from([0, 0, 0, 0x08, 0, 8]));
    shortPort.writeUInt16BE(7, at + 4);
    expect(() => decodeHep(shortPort)).toThrow(HepDecodeError);
  });

  it('keeps chunks it does not know, vendor chunks included, in order', () => {
    const out = Buffer.alloc(1000);
    let length = new HepEncoder({ captureId: 1 }).encode(base, out, 0);
    const extra = Buffer.from([0x00, 0x00, 0x00, 0x26, 0x00, 0x09, 0x61, 0x3d, 0x62, 0x00, 0x48, 0x00, 0x01, 0x00, 0x07, 0x2a]);
    extra.copy(out, length);
    length += extra.length;
    out.writeUInt16BE(length, 4);
    const p = decodeHep(out.subarray(0, length));
    expect(p.chunks.slice(-2).map((c) => [c.vendor, c.type, c.value.toString('hex')])).toEqual([[0, 0x26, '613d62'], [0x48, 1, '2a']]);
    expect(p.payload!.equals(base.payload)).toBe(true);
  });

  it('agrees with hep-js on IPv4 SIP', () => {
    const out = Buffer.alloc(1000);
    const length = new HepEncoder({ captureId: 2001 }).encode(base, out, 0);
    const { rcinfo, payload } = hepjs.decapsulate(out.subarray(0, length));
    expect(rcinfo).toMatchObject({ protocolFamily: 2, protocol: 6, srcIp: '10.1.2.3', dstIp: '192.0.2.9', srcPort: 5060, dstPort: 5080, payloadType: 1, captureId: 2001, correlation_id: 'abc@x' });
    expect(payload).toBe(base.payload.toString());
  });

  it('splits a TCP stream at packet boundaries, keeping a partial packet', () => {
    const enc = new HepEncoder({ captureId: 1 });
    const a = Buffer.alloc(500);
    const n = enc.encode(base, a, 0);
    const stream = Buffer.concat([a.subarray(0, n), a.subarray(0, n), a.subarray(0, 10)]);
    const got: Buffer[] = [];
    expect(splitHepStream(stream, (p) => got.push(p))).toBe(2 * n);
    expect(got.length).toBe(2);
  });
});
