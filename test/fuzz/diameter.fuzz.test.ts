/** Diameter framer and decoder: any bytes, in any writes, with kernel cuts, frame and decode without throwing. */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { AvpChains, avpsFit, diameterJsonBytes, headerAt, parseDiameter } from '../../src/protocols/diameter.js';
import { DiameterFramer } from '../../src/stream/diameter-framer.js';
import { MAX_MESSAGE_BYTES, type FramerStats } from '../../src/stream/framer.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { hostileDiameter, nearDiameter, randomBytes, splits, writes } from './inputs.js';

const input = fc.record({
  stream: fc.oneof(
    { arbitrary: fc.array(fc.oneof({ arbitrary: nearDiameter, weight: 8 }, { arbitrary: randomBytes(64), weight: 1 }), { maxLength: 6 }).map((m) => Buffer.concat(m)), weight: 8 },
    { arbitrary: randomBytes(), weight: 2 },
    { arbitrary: hostileDiameter, weight: 1 },
  ),
  how: splits,
  cut: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 100_000 })), { freq: 4 }),
});

it('Diameter framer and decoder', () => {
  const report = fuzz(input, (i) => i.stream.length, ({ stream, how, cut }) => {
    const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
    let emitted = 0;
    const framer = new DiameterFramer(stats, { malformed: 0 }, (payload, size, truncated) => {
      emitted++;
      if (payload.length > size || (!truncated && payload.length !== size)) throw new Error(`emitted ${payload.length} bytes of a ${size}-byte message`);
      const d = parseDiameter(payload);
      if (d) JSON.parse(diameterJsonBytes(d).toString());
    });
    const parts = writes(stream, how);
    parts.forEach((w, n) => {
      framer.push(w, cut && cut[0] % parts.length === n ? cut[1] : 0);
      if (framer.buffered > MAX_MESSAGE_BYTES) throw new Error(`holds ${framer.buffered} bytes`);
    });
    // The shared chains the framer resynchronises with answer as a walk of each candidate's AVPs would.
    const chains = new AvpChains(stream);
    for (let off = stream.indexOf(1), n = 0; off >= 0 && n < 8; off = stream.indexOf(1, off + 1)) {
      if (headerAt(stream, off) !== 1) continue;
      n++;
      const total = stream.readUIntBE(off + 1, 3);
      const walked = avpsFit(stream, off, total);
      if (chains.fit(off, total) !== walked) throw new Error(`AvpChains.fit(${off}, ${total}) is ${chains.fit(off, total)}, a walk ${walked}`);
    }
    // The decoder also meets bytes the framer would not emit; a framed stream was decoded above
    // (decoding a 64 KiB message twice would time this test, not the agent).
    const whole = emitted === 0 ? parseDiameter(stream) : null;
    if (whole) JSON.parse(diameterJsonBytes(whole).toString());
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
