/**
 * SIP over WebSocket framer: handshakes and frames, valid or not (reserved bits, any opcode, lying
 * lengths in all three forms, masked or not, fragments and control frames in any order), in any
 * writes, with kernel cuts, frame without throwing and hold no more than a handshake or a message.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { parseSip } from '../../src/protocols/sip.js';
import { MAX_HANDSHAKE_BYTES } from '../../src/protocols/websocket.js';
import { MAX_MESSAGE_BYTES, type FramerStats } from '../../src/stream/framer.js';
import { WebSocketFramer } from '../../src/stream/websocket-framer.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';
import { nearSip, randomBytes, splits, writes } from './inputs.js';
import { encodeFrame } from '../helpers/websocket.js';

const REQUEST = 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\r\n';
const RESPONSE = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: sip\r\n\r\n';

const anyFrame = fc
  .record({
    fin: fc.boolean(),
    rsv: fc.constantFrom(0, 0, 0, 0, 0, 0x40, 0x10),
    opcode: fc.oneof({ arbitrary: fc.constantFrom(0, 1, 2, 8, 9, 10), weight: 8 }, { arbitrary: fc.nat(15), weight: 1 }),
    payload: fc.oneof({ arbitrary: nearSip, weight: 4 }, { arbitrary: randomBytes(200), weight: 2 }, { arbitrary: fc.constant(Buffer.from('\r\n\r\n')), weight: 1 }),
    form: fc.constantFrom<7 | 16 | 64>(7, 16, 64),
    claimDelta: fc.constantFrom(0, 0, 0, 0, -1, 3, 70_000, 2 ** 31),
    mask: fc.option(fc.nat(), { freq: 2 }),
  })
  .map((f) => encodeFrame((f.fin ? 0x80 : 0) | f.rsv | f.opcode, f.payload, f));

/** Many tiny fragments of one message, pings between them: the per-frame cost over 64 KiB. */
const tinyFragments = fc.constantFrom(
  Buffer.concat([
    Buffer.from(RESPONSE),
    encodeFrame(0x01, Buffer.from('MESSAGE sip:b SIP/2.0\r\n'), { mask: 1 }),
    ...Array.from({ length: 6000 }, (_, i) => (i % 2 ? encodeFrame(0x89, Buffer.alloc(0), { mask: 7 }) : encodeFrame(0x00, Buffer.from('ab'), { mask: 0x01020304 }))),
    encodeFrame(0x80, Buffer.alloc(0)),
  ]),
);

const input = fc.record({
  stream: fc.oneof(
    {
      arbitrary: fc
        .tuple(fc.constantFrom(REQUEST, RESPONSE, REQUEST.replace('sip', 'chat'), '', 'GET / HTTP/1.1\r\n'), fc.array(fc.oneof({ arbitrary: anyFrame, weight: 8 }, { arbitrary: randomBytes(64), weight: 1 }), { maxLength: 10 }))
        .map(([hs, frames]) => Buffer.concat([Buffer.from(hs), ...frames])),
      weight: 8,
    },
    { arbitrary: randomBytes(), weight: 2 },
    { arbitrary: tinyFragments, weight: 1 },
  ),
  how: splits,
  cut: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 100_000 })), { freq: 4 }),
});

it('WebSocket framer', () => {
  const report = fuzz(input, (i) => i.stream.length, ({ stream, how, cut }) => {
    const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
    const ws = { handshakes: 0, rejectedHandshakes: 0, resyncs: 0, controlFrames: 0, notSip: 0 };
    const framer = new WebSocketFramer(
      stats,
      ws,
      (payload, size, truncated) => {
        if (payload.length > size || (!truncated && payload.length !== size)) throw new Error(`emitted ${payload.length} bytes of a ${size}-byte message`);
        if (payload.length > MAX_MESSAGE_BYTES) throw new Error(`emitted ${payload.length} bytes`);
        parseSip(payload);
      },
      () => {},
    );
    const parts = writes(stream, how);
    parts.forEach((w, n) => {
      framer.push(w, cut && cut[0] % parts.length === n ? cut[1] : 0);
      if (framer.buffered > MAX_HANDSHAKE_BYTES || framer.allocated > 2 * MAX_MESSAGE_BYTES) throw new Error(`holds ${framer.buffered} bytes`);
    });
  });
  expect(report.runs).toBeGreaterThan(0);
}, fuzzTimeoutMs());
