/**
 * SIP over WebSocket framing (src/stream/websocket-framer.ts). Frames are built with the `ws`
 * package's own Sender, so the framer is checked against an independent encoder.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_MESSAGE_BYTES, type FramerStats } from '../../src/stream/framer.js';
import { MAX_FRAME_BYTES, WebSocketFramer, type WebSocketStats } from '../../src/stream/websocket-framer.js';
import { isSipHandshake, handshakeEnd } from '../../src/protocols/websocket.js';
import { sipMessage } from './records.js';
import { encodeFrame, WsSender } from '../helpers/websocket.js';
import { decodeBatch, F_TLS, L7_SIP, L7_WEBSOCKET } from '../../src/capture/record.js';
import { batchOf, encodeRecord } from '../../src/capture/replay.js';
import { StreamAssembler } from '../../src/stream/assembler.js';
import type { Message } from '../../src/stream/message.js';

const TEXT = 1;
const BINARY = 2;
const PING = 9;
const PONG = 10;
const CLOSE = 8;

/** One frame as `ws` writes it: masked (a client's) or not (a server's). */
export function wsFrame(data: Buffer, opts: { opcode?: number; fin?: boolean; mask?: boolean } = {}): Buffer {
  const parts = WsSender.frame(data, { fin: opts.fin ?? true, opcode: opts.opcode ?? TEXT, mask: opts.mask ?? false, readOnly: true, rsv1: false });
  return Buffer.concat(parts);
}

const REQUEST = Buffer.from(
  'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, sip\r\n\r\n',
);
const RESPONSE = Buffer.from(
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n',
);

function framer() {
  const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
  const ws: WebSocketStats = { handshakes: 0, rejectedHandshakes: 0, resyncs: 0, controlFrames: 0, notSip: 0 };
  const out: Array<{ payload: Buffer; size: number; truncated: boolean }> = [];
  const keepAlives: Buffer[] = [];
  const f = new WebSocketFramer(
    stats,
    ws,
    (p, size, truncated) => out.push({ payload: Buffer.from(p), size, truncated }),
    (run) => keepAlives.push(Buffer.from(run)),
  );
  return { f, out, stats, ws, keepAlives };
}

const a = sipMessage('a', 'hello');
const b = sipMessage('b', 'v=0\r\n', 'INVITE');
const c = Buffer.from('SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n');

describe('WebSocket handshake', () => {
  it('takes a GET offering sip among others, and the 101 selecting it', () => {
    expect(isSipHandshake(REQUEST, handshakeEnd(REQUEST))).toBe(true);
    expect(isSipHandshake(RESPONSE, handshakeEnd(RESPONSE))).toBe(true);
  });

  it('refuses another subprotocol, a missing Upgrade, a refusal, and `sip` as part of a name', () => {
    for (const text of [
      REQUEST.toString().replace('chat, sip', 'chat'),
      REQUEST.toString().replace('chat, sip', 'sips, xsip'),
      REQUEST.toString().replace('Upgrade: websocket\r\n', ''),
      RESPONSE.toString().replace('101 Switching Protocols', '400 Bad Request'),
    ]) {
      const buf = Buffer.from(text);
      expect(isSipHandshake(buf, handshakeEnd(buf)), text).toBe(false);
    }
  });
});

describe('SIP over WebSocket framing', () => {
  it('forwards masked client frames and unmasked server frames byte-exact, once each', () => {
    const up = framer();
    up.f.push(Buffer.concat([REQUEST, wsFrame(a, { mask: true }), wsFrame(b, { mask: true, opcode: BINARY })]));
    expect(up.out.map((m) => m.payload)).toEqual([a, b]);
    const down = framer();
    down.f.push(Buffer.concat([RESPONSE, wsFrame(c)]));
    expect(down.out).toEqual([{ payload: c, size: c.length, truncated: false }]);
    expect(up.ws.handshakes + down.ws.handshakes).toBe(2);
  });

  it('reassembles fragments with ping, pong and close frames between them, at every split point', () => {
    const stream = Buffer.concat([
      RESPONSE,
      wsFrame(a.subarray(0, 10), { fin: false, mask: true }),
      wsFrame(Buffer.from('ping'), { opcode: PING, mask: true }),
      wsFrame(a.subarray(10, 40), { fin: false, opcode: 0, mask: true }),
      wsFrame(Buffer.alloc(0), { opcode: PONG, mask: true }),
      wsFrame(Buffer.alloc(0), { fin: false, opcode: 0, mask: true }),
      wsFrame(a.subarray(40), { opcode: 0, mask: true }),
      wsFrame(b, { opcode: BINARY }),
      wsFrame(Buffer.from([0x03, 0xe8]), { opcode: CLOSE }),
    ]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const { f, out, ws } = framer();
      f.push(stream.subarray(0, cut));
      f.push(stream.subarray(cut));
      expect(out.map((m) => m.payload)).toEqual([a, b]);
      expect(ws.controlFrames).toBe(3);
    }
  });

  it('reads 7-bit, 16-bit and 64-bit lengths, and cuts a message over 64 KiB keeping its size', () => {
    const body = 'x'.repeat(300);
    const medium = sipMessage('m', body);
    const long = sipMessage('l', 'y'.repeat(70_000));
    const { f, out, stats } = framer();
    f.push(Buffer.concat([REQUEST, wsFrame(a, { mask: true }), wsFrame(medium, { mask: true }), encodeFrame(0x80 | TEXT, b, { form: 64 }), wsFrame(long, { mask: true })]));
    expect(out.slice(0, 3).map((m) => m.payload)).toEqual([a, medium, b]);
    expect(out[3]).toEqual({ payload: long.subarray(0, MAX_MESSAGE_BYTES), size: long.length, truncated: true });
    expect(stats.truncatedMessages).toBe(1);
  });

  it('counts a CR/LF-only message as a keep-alive, and drops a message that is not SIP', () => {
    const { f, out, ws, keepAlives } = framer();
    f.push(Buffer.concat([RESPONSE, wsFrame(Buffer.from('\r\n\r\n')), wsFrame(Buffer.from('{"json":1}')), wsFrame(c)]));
    expect(keepAlives).toEqual([Buffer.from('\r\n\r\n')]);
    expect(ws.notSip).toBe(1);
    expect(out.map((m) => m.payload)).toEqual([c]);
  });

  it('ignores a connection whose handshake is not SIP', () => {
    const { f, out, ws } = framer();
    f.push(Buffer.concat([Buffer.from(REQUEST.toString().replace('chat, sip', 'chat')), wsFrame(a, { mask: true })]));
    f.push(wsFrame(b, { mask: true }));
    expect(out).toEqual([]);
    expect(ws.rejectedHandshakes).toBe(1);
  });

  it('does not buffer a hostile length claim: resynchronises on the next write that starts a SIP frame', () => {
    const { f, out, ws } = framer();
    const hostile = Buffer.from([0x81, 0xff, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    f.push(Buffer.concat([REQUEST, wsFrame(a, { mask: true }), hostile]));
    for (let i = 0; i < 100; i++) f.push(Buffer.alloc(1000, 0x41));
    expect(f.buffered).toBe(0);
    f.push(wsFrame(b, { mask: true }));
    expect(out.map((m) => m.payload)).toEqual([a, b]);
    expect(ws.resyncs).toBe(1);
    // A frame just over the bound is refused the same way.
    const over = framer();
    over.f.push(RESPONSE);
    const claim = Buffer.from([0x81, 127, 0, 0, 0, 0, 0, 0, 0, 0]);
    claim.writeUInt32BE(MAX_FRAME_BYTES + 1, 6);
    over.f.push(claim);
    expect(over.ws.resyncs).toBe(1);
  });

  it('resynchronises after a protocol error: reserved bits, a stray continuation, a fragmented control frame', () => {
    for (const bad of [
      Buffer.from([0xc1, 0x00]),
      wsFrame(a, { opcode: 0 }),
      wsFrame(Buffer.from('x'), { opcode: PING, fin: false }),
      Buffer.concat([wsFrame(a.subarray(0, 5), { fin: false }), wsFrame(a.subarray(5))]),
    ]) {
      const { f, out, ws } = framer();
      f.push(Buffer.concat([RESPONSE, bad, wsFrame(c)]));
      f.push(wsFrame(b));
      expect(ws.resyncs).toBe(1);
      expect(out.at(-1)!.payload).toEqual(b);
    }
  });

  it('picks up a connection first seen mid-stream at a write that starts a SIP frame', () => {
    const { f, out } = framer();
    const frame = wsFrame(a, { mask: true });
    f.push(frame.subarray(7));
    f.push(wsFrame(b, { mask: true }));
    f.push(wsFrame(c, { mask: true }));
    expect(out.map((m) => m.payload)).toEqual([b, c]);
  });

  it('emits a message the kernel cut as its prefix, with its size, and keeps framing', () => {
    const long = sipMessage('k', 'z'.repeat(5000));
    const frame = wsFrame(long, { mask: true });
    const { f, out } = framer();
    f.push(REQUEST);
    // The write carried the whole frame; the kernel copied its first 1000 bytes.
    f.push(frame.subarray(0, 1000), frame.length - 1000);
    f.push(wsFrame(b, { mask: true }));
    expect(out[0]).toEqual({ payload: long.subarray(0, 1000 - 8), size: long.length, truncated: true });
    expect(out[1].payload).toEqual(b);
  });

  it('frames any split of a valid stream the same, and never holds more than a message on any bytes', () => {
    const message = fc.constantFrom(a, b, c, sipMessage('big', 'q'.repeat(2000)));
    const frames = fc.array(
      fc.record({ msg: message, pieces: fc.integer({ min: 1, max: 4 }), mask: fc.boolean(), binary: fc.boolean(), ping: fc.boolean() }),
      { maxLength: 6 },
    );
    fc.assert(
      fc.property(frames, fc.array(fc.nat(), { maxLength: 20 }), (spec, cuts) => {
        const parts: Buffer[] = [REQUEST];
        for (const s of spec) {
          const step = Math.ceil(s.msg.length / s.pieces);
          for (let i = 0; i * step < s.msg.length; i++) {
            const last = (i + 1) * step >= s.msg.length;
            parts.push(wsFrame(s.msg.subarray(i * step, (i + 1) * step), { opcode: i ? 0 : s.binary ? BINARY : TEXT, fin: last, mask: s.mask }));
            if (s.ping && !last) parts.push(wsFrame(Buffer.from('p'), { opcode: PING, mask: s.mask }));
          }
        }
        const stream = Buffer.concat(parts);
        const { f, out } = framer();
        let at = 0;
        for (const n of [...cuts.map((x) => x % (stream.length + 1)), stream.length].sort((x, y) => x - y)) {
          f.push(stream.subarray(at, Math.max(at, n)));
          at = Math.max(at, n);
        }
        expect(out.map((m) => m.payload)).toEqual(spec.map((s) => s.msg));
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 20 }), fc.boolean(), (writes, handshake) => {
        const { f } = framer();
        if (handshake) f.push(REQUEST);
        for (const w of writes) {
          f.push(Buffer.from(w));
          expect(f.buffered).toBeLessThanOrEqual(8192 + 3000);
        }
      }),
    );
  });
});

describe('StreamAssembler and SIP over WebSocket', () => {
  it('frames a connection the kernel marked WebSocket, as ws over TCP and wss over TLS, and leaves others to the SIP framer', () => {
    const out: Message[] = [];
    const asm = new StreamAssembler((m) => out.push({ ...m, payload: Buffer.from(m.payload) }));
    const ws = { ipProto: 6 as const, l7: L7_WEBSOCKET, direction: 1 as const, localPort: 8080, remotePort: 40000 };
    const records = [
      encodeRecord({ ...ws, sockId: 1n, data: Buffer.concat([REQUEST, wsFrame(a, { mask: true })]) }),
      encodeRecord({ ...ws, sockId: 2n, tlsId: 9n, flags: F_TLS, source: 12, data: Buffer.concat([REQUEST, wsFrame(b, { mask: true })]) }),
      encodeRecord({ ...ws, sockId: 3n, l7: L7_SIP, data: c }),
    ];
    decodeBatch(batchOf(records), (r) => asm.push(r));
    expect(out.map((m) => [m.transport, m.payload])).toEqual([['ws', a], ['wss', b], ['tcp', c]]);
    expect(asm.stats().websocket).toMatchObject({ handshakes: 2, resyncs: 0 });
  });
});
