/**
 * The control socket's decoders (agent side: ControlRequest; client side: TailEvent, ContainerList)
 * on random bytes and on valid length-delimited frames that are mutated, truncated and split at
 * random. The only error allowed out is ControlProtocolError: the connection is refused, the process
 * goes on.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ContainerListReader,
  ControlProtocolError,
  ControlRequestReader,
  encodeContainerList,
  encodeControlRequest,
  encodeTailEvent,
  TailEventReader,
} from '../../src/output/tail-protocol.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';

const text = fc.string({ maxLength: 40, unit: 'binary' });
const endpoint = fc.record({ ip: text, port: fc.integer({ min: 0, max: 65535 }) });
const container = fc.record({ id: text, name: text, runtime: text, service: text, pod: text });

const frame = fc.oneof(
  fc.nat({ max: 0xffffffff }).map((kind) => encodeControlRequest(kind)),
  fc
    .record({ summary: text, callId: text, comm: text, src: endpoint, dst: endpoint, pid: fc.nat({ max: 0xffffffff }), payload: fc.uint8Array({ maxLength: 512 }), container })
    .map((f) =>
      encodeTailEvent({
        ...f, ts: '2026-01-01T00:00:00.000000Z', proto: 'sip', transport: 'udp', cgroupId: '1', correlationId: f.callId, size: f.payload.length,
        truncated: false, connectionUnknown: false, peerContainer: null,
      }),
    ),
  fc.array(container, { maxLength: 4 }).map((cs) => encodeContainerList(cs.map((c) => ({ container: c, cgroupIds: ['1'], messages: 1, peerMessages: 0 })))),
);

/** Valid frames back to back, then bytes overwritten, the end cut off or bytes inserted. */
const mutated = fc
  .record({
    frames: fc.array(frame, { minLength: 1, maxLength: 8 }),
    edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'cut')), { maxLength: 6 }),
  })
  .map(({ frames, edits }) => {
    let bytes = [...Buffer.concat(frames)];
    for (const [at, value, op] of edits) {
      const i = bytes.length ? at % bytes.length : 0;
      if (op === 'set') bytes[i] = value;
      else if (op === 'insert') bytes.splice(i, 0, value);
      else bytes = bytes.slice(0, i);
    }
    return Uint8Array.from(bytes);
  });

const input = fc.record({
  bytes: fc.oneof(fc.uint8Array({ maxLength: 4096 }), mutated),
  cuts: fc.array(fc.nat(), { maxLength: 8 }),
});

const readers = [() => new ControlRequestReader(), () => new TailEventReader(), () => new ContainerListReader()];

describe('control protocol', () => {
  it(
    'refuses what it cannot decode with ControlProtocolError only, in linear time',
    () => {
      let refused = 0;
      let decoded = 0;
      const report = fuzz(
        input,
        ({ bytes }) => bytes.length,
        ({ bytes, cuts }) => {
          const buf = Buffer.from(bytes);
          const at = [...new Set(cuts.map((c) => (buf.length ? c % buf.length : 0)))].sort((a, b) => a - b);
          for (const make of readers) {
            const reader = make();
            try {
              let from = 0;
              for (const to of [...at, buf.length]) {
                reader.push(buf.subarray(from, to), () => decoded++);
                from = to;
              }
            } catch (err) {
              if (!(err instanceof ControlProtocolError)) throw err;
              refused++;
            }
          }
        },
      );
      expect(report.runs).toBeGreaterThan(100);
      expect(refused).toBeGreaterThan(0);
      expect(decoded).toBeGreaterThan(0);
    },
    fuzzTimeoutMs(),
  );
});
