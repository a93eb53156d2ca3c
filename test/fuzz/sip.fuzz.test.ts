/** SIP framer and parser: any bytes, in any writes, with kernel cuts, frame and parse without throwing, the same with the framer's line feeds as without. */
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { expect, it } from 'vitest';
import { parseSip } from '../../src/protocols/sip.js';
import { MAX_MESSAGE_BYTES, type FramerStats } from '../../src/stream/framer.js';
import { SipFramer } from '../../src/stream/sip-framer.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { hostileSip, randomBytes, sipStream, splits, writes } from './inputs.js';

const input = fc.record({
  stream: fc.oneof({ arbitrary: sipStream, weight: 8 }, { arbitrary: randomBytes(), weight: 2 }, { arbitrary: hostileSip, weight: 1 }),
  how: splits,
  /** A write the kernel cut (its record flagged), and how many bytes it did not copy. */
  cut: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 100_000 })), { freq: 4 }),
});

it('SIP framer and parser', () => {
  const report = fuzz(input, (i) => i.stream.length, ({ stream, how, cut }) => {
    const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
    const framer = new SipFramer(stats, (payload, size, truncated, headerLines) => {
      if (payload.length > size || (!truncated && payload.length !== size)) throw new Error(`emitted ${payload.length} bytes of a ${size}-byte message`);
      const parsed = parseSip(payload);
      // The line feeds the framer found lead to what the bytes alone say.
      if (headerLines && !isDeepStrictEqual(parseSip(payload, headerLines), parsed)) throw new Error('parsed otherwise from the framer\'s line feeds');
    });
    const parts = writes(stream, how);
    parts.forEach((w, n) => {
      framer.push(w, cut && cut[0] % parts.length === n ? cut[1] : 0);
      if (framer.buffered > MAX_MESSAGE_BYTES) throw new Error(`holds ${framer.buffered} bytes`);
    });
    parseSip(stream);
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
