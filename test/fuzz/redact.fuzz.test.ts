/** Redaction: any SIP or Diameter message comes back the same length, changed only to 'X', never throwing. */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { redactDiameter, redactSip } from '../../src/enrich/redact.js';
import { parseDiameter } from '../../src/protocols/diameter.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { hostileDiameter, hostileSip, nearDiameter, randomBytes, sipStream } from './inputs.js';

const input = fc.oneof(
  { arbitrary: fc.record({ sip: fc.constant(true), bytes: fc.oneof(sipStream, randomBytes(), hostileSip) }), weight: 1 },
  { arbitrary: fc.record({ sip: fc.constant(false), bytes: fc.oneof(nearDiameter, hostileDiameter) }), weight: 1 },
);

/** Same length, and every changed byte is now 'X'. */
function maskedOnly(before: Buffer, after: Buffer | undefined): void {
  if (!after) return;
  if (after.length !== before.length) throw new Error(`length changed: ${before.length} -> ${after.length}`);
  for (let i = 0; i < after.length; i++) if (after[i] !== before[i] && after[i] !== 0x58) throw new Error(`byte ${i} changed to ${after[i]}`);
}

it('redaction of SIP and Diameter', () => {
  const report = fuzz(input, (i) => i.bytes.length, ({ sip, bytes }) => {
    if (sip) return maskedOnly(bytes, redactSip(bytes));
    const d = parseDiameter(bytes);
    if (d) maskedOnly(bytes, redactDiameter(bytes, d.avps));
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
