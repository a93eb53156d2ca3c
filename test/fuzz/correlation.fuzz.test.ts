/** Correlation: every SIP and Diameter message gets a non-empty id of at most 1024 bytes, in linear time, without throwing. */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { correlationRegex, Correlator } from '../../src/enrich/correlation.js';
import { MAX_TEXT_CHUNK_BYTES } from '../../src/hep/chunks.js';
import { parseDiameter } from '../../src/protocols/diameter.js';
import { parseSip } from '../../src/protocols/sip.js';
import type { Message } from '../../src/stream/message.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { hostileDiameter, hostileSip, nearDiameter, nearSip } from './inputs.js';

function message(payload: Buffer, proto: 'sip' | 'diameter', tsNs: bigint): Message {
  return {
    tsNs, proto, transport: 'tcp', family: 4, src: { ip: '127.0.0.1', port: 5060 }, dst: { ip: '127.0.0.1', port: 3868 },
    pid: 1, tid: 1, comm: 'x', cgroupId: 1n, netns: 1, sockId: 1n, direction: 'egress', payload, size: payload.length,
    truncated: false, peerUnknown: false, connectionUnknown: false,
  };
}

const input = fc.oneof(
  fc.record({ sip: fc.constant(true), bytes: fc.oneof({ arbitrary: nearSip, weight: 8 }, { arbitrary: hostileSip, weight: 1 }) }),
  fc.record({ sip: fc.constant(false), bytes: fc.oneof({ arbitrary: nearDiameter, weight: 8 }, { arbitrary: hostileDiameter, weight: 1 }) }),
);

const checkId = (id: string) => {
  if (!id || Buffer.byteLength(id) > MAX_TEXT_CHUNK_BYTES) throw new Error(`id of ${Buffer.byteLength(id)} bytes`);
};

it('correlation ids', () => {
  // A correlator per 1000 inputs: what one message teaches, the next may look up, and the heap
  // check of a long run does not count its tables (100 000 entries each) as a leak. Every other
  // one also takes an operator's key, from a header most messages have and a regex over another.
  const key = { header: 'Via', regex: correlationRegex('[Ff]rom: *([^;\\r\\n]+)') };
  let c = new Correlator(key);
  let ts = 0n;
  let n = 0;
  const report = fuzz(input, (i) => i.bytes.length, ({ sip, bytes }) => {
    if (++n % 1000 === 0) c = new Correlator((n / 1000) % 2 ? {} : key);
    ts += 1_000_000n;
    if (sip) {
      const info = parseSip(bytes);
      if (info) checkId(c.sip(message(bytes, 'sip', ts), info));
      return;
    }
    const d = parseDiameter(bytes);
    if (d) checkId(c.diameter(message(bytes, 'diameter', ts), d).id);
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
