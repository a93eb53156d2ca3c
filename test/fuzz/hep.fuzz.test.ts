/**
 * HEP decoder: random bytes and mutated valid packets decode or are refused with HepDecodeError;
 * events with hostile strings (bounded as the agent bounds them) encode and decode back.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { boundedText, MAX_PACKET, MAX_UDP_PACKET } from '../../src/hep/chunks.js';
import { decodeHep, HepDecodeError, splitHepStream } from '../../src/hep/decode.js';
import { HepEncoder, type HepMessage } from '../../src/hep/encode.js';
import { NodeNameTemplate } from '../../src/output/node-name.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { randomBytes } from './inputs.js';

const hostileText = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 2000 }), weight: 4 },
  { arbitrary: fc.constantFrom('\ufffd'.repeat(22_000), 'a'.repeat(65_480), '\ud800'.repeat(3000), '😀'.repeat(20_000), ''), weight: 1 },
);

const event = fc.record({
  family: fc.constantFrom(4 as const, 6 as const),
  ipProto: fc.constantFrom(6, 17, 22, 132),
  srcPort: fc.nat(65535),
  dstPort: fc.nat(65535),
  timeUs: fc.nat(),
  protoType: fc.constantFrom(1, 56),
  correlationId: hostileText,
  container: hostileText,
  payload: fc.oneof(randomBytes(2000), fc.nat(70_000).map((n) => Buffer.alloc(n, 0x41))),
  maxPacket: fc.constantFrom(MAX_PACKET, MAX_UDP_PACKET),
});

const encoder = new HepEncoder({ captureId: 2001, authKey: 'k' });
const nodeNames = new NodeNameTemplate('{container}', 'host');
const packet = Buffer.alloc(MAX_PACKET);

type HepEvent = typeof event extends fc.Arbitrary<infer T> ? T : never;

function encodeEvent(e: HepEvent) {
  const m: HepMessage = {
    ...e,
    srcIp: e.family === 4 ? '127.0.0.1' : '::1',
    dstIp: e.family === 4 ? '10.0.0.2' : '2001:db8::2',
    correlationId: boundedText(e.correlationId),
    nodeName: nodeNames.render({ id: 'f'.repeat(64), name: e.container, runtime: 'docker' }),
  };
  const length = encoder.encode(m, packet, 0, e.maxPacket);
  return { m, length, payloadBytes: encoder.payloadBytes, bytes: packet.subarray(0, length) };
}

/** Decodes, or refuses as documented; anything else thrown is a crash. */
function decodeOrRefuse(bytes: Buffer): void {
  try {
    decodeHep(bytes);
  } catch (err) {
    if (!(err instanceof HepDecodeError)) throw err;
  }
  try {
    splitHepStream(bytes, () => {});
  } catch (err) {
    if (!(err instanceof HepDecodeError)) throw err;
  }
}

const input = fc.oneof(
  fc.record({ kind: fc.constant('bytes' as const), bytes: fc.oneof(randomBytes(), randomBytes(16).map((b) => Buffer.concat([Buffer.from('HEP3'), b]))) }),
  fc.record({ kind: fc.constant('mutated' as const), e: event, flips: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 }), cut: fc.option(fc.nat()) }),
  fc.record({ kind: fc.constant('roundTrip' as const), e: event }),
);

it('HEP decoder and encode -> decode round trip', () => {
  const report = fuzz(input, (i) => (i.kind === 'bytes' ? i.bytes.length : i.e.payload.length + 2 * 1024), (i) => {
    if (i.kind === 'bytes') return decodeOrRefuse(i.bytes);
    const { m, length, payloadBytes, bytes } = encodeEvent(i.e);
    if (i.kind === 'mutated') {
      const copy = Buffer.from(bytes.subarray(0, i.cut === null ? bytes.length : i.cut % (bytes.length + 1)));
      for (const [at, v] of i.flips) if (copy.length) copy[at % copy.length] = v;
      return decodeOrRefuse(copy);
    }
    const p = decodeHep(bytes);
    if (p.correlationId !== m.correlationId || p.nodeName !== m.nodeName!.toString() || !p.payload!.equals(m.payload.subarray(0, payloadBytes)))
      throw new Error('round trip changed a field');
    if (length > i.e.maxPacket) throw new Error(`packet of ${length} bytes over ${i.e.maxPacket}`);
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
