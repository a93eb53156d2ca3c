import { describe, expect, it } from 'vitest';
import { decodeBatch, F_COUNTERPART, F_SEQ, F_STREAM_START, L7_DIAMETER, L7_WEBSOCKET } from '../../src/capture/record.js';
import { StreamAssembler } from '../../src/stream/assembler.js';
import { SentBytes } from '../../src/stream/sent-bytes.js';
import { LocalDedup } from '../../src/stream/dedup.js';
import type { Endpoint, Message, ReceiverCopy } from '../../src/stream/message.js';
import { SipFramer } from '../../src/stream/sip-framer.js';
import type { FramerStats } from '../../src/stream/framer.js';
import { batchOf, encodeRecord, type RecordSpec } from '../../src/capture/replay.js';
import { sipMessage } from './records.js';
import { diameterMessage } from '../helpers/diameter.js';
import { encodeFrame } from '../helpers/websocket.js';

function framer() {
  const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
  const out: Array<{ text: string; size: number; truncated: boolean }> = [];
  const f = new SipFramer(stats, (p, size, truncated) => out.push({ text: p.toString('latin1'), size, truncated }));
  return { f, out, stats };
}

describe('SIP framing on a TCP stream', () => {
  const a = sipMessage('a', 'hello');
  const b = sipMessage('b');

  it('frames two messages whatever the split point', () => {
    const stream = Buffer.concat([a, b]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const { f, out } = framer();
      f.push(stream.subarray(0, cut));
      f.push(stream.subarray(cut));
      expect(out.map((m) => m.text)).toEqual([a.toString(), b.toString()]);
    }
  });

  it('frames one message delivered a byte at a time', () => {
    const { f, out } = framer();
    for (const byte of a) f.push(Buffer.from([byte]));
    expect(out.map((m) => m.text)).toEqual([a.toString()]);
  });

  it('skips keep-alive CRLFs and honours the compact l: header', () => {
    const compact = Buffer.from('SIP/2.0 200 OK\r\ni: c1\r\nl:  3\r\n\r\nabc');
    const { f, out, stats } = framer();
    f.push(Buffer.concat([Buffer.from('\r\n\r\n'), compact, Buffer.from('\r\n\r\n'), a]));
    expect(out.map((m) => m.text)).toEqual([compact.toString(), a.toString()]);
    expect(stats.discardedBytes).toBe(0);
  });

  it('frames 200 pipelined messages from one segment', () => {
    const msgs = Array.from({ length: 200 }, (_, i) => sipMessage(`p${i}`, `body ${i}`));
    const { f, out } = framer();
    f.push(Buffer.concat(msgs));
    expect(out.map((m) => m.text)).toEqual(msgs.map((m) => m.toString()));
  });

  it('resynchronises after garbage and counts what it threw away', () => {
    const { f, out, stats } = framer();
    const noise = Buffer.from('\x00\x01garbage without structure\r\nmore junk\r\n');
    f.push(Buffer.concat([noise, a]));
    expect(out.map((m) => m.text)).toEqual([a.toString()]);
    expect(stats.discardedBytes).toBe(noise.length);
  });

  it('does not buffer a 16 MiB Content-Length claim; the next message still frames', () => {
    const { f, out, stats } = framer();
    const liar = Buffer.from('MESSAGE sip:x SIP/2.0\r\nContent-Length: 16777216\r\n\r\n');
    f.push(Buffer.concat([liar, a]));
    expect(out.map((m) => m.text)).toEqual([a.toString()]);
    expect(stats.discardedBytes).toBe(liar.length);
  });

  it('emits a message the kernel cut (64 KiB limit) as truncated and lands on the next boundary', () => {
    const big = sipMessage('big', 'x'.repeat(70_000));
    const { f, out, stats } = framer();
    f.push(big.subarray(0, 65536), big.length - 65536);
    f.push(b);
    expect(out.map((m) => [m.size, m.truncated, m.text.length])).toEqual([
      [big.length, true, 65536],
      [b.length, false, b.length],
    ]);
    expect(stats.truncatedMessages).toBe(1);
  });

  it('holds a 60 KiB message arriving in 1 KiB reads and emits it whole', () => {
    const big = sipMessage('60k', 'z'.repeat(60 * 1024));
    const { f, out } = framer();
    for (let i = 0; i < big.length; i += 1024) f.push(big.subarray(i, i + 1024));
    f.push(b);
    expect(out.map((m) => [m.size, m.truncated])).toEqual([[big.length, false], [b.length, false]]);
    expect(out[0].text).toBe(big.toString());
    expect(f.buffered).toBe(0);
  });

  it('emits a message longer than 64 KiB cut at 64 KiB, skips its rest, and buffers no more than that', () => {
    const big = sipMessage('100k', 'q'.repeat(100 * 1024));
    const { f, out, stats } = framer();
    let maxBuffered = 0;
    const stream = Buffer.concat([big, b]);
    for (let i = 0; i < stream.length; i += 1000) {
      f.push(stream.subarray(i, i + 1000));
      maxBuffered = Math.max(maxBuffered, f.buffered);
    }
    expect(out.map((m) => [m.size, m.truncated, m.text.length])).toEqual([[big.length, true, 65536], [b.length, false, b.length]]);
    expect(out[0].text).toBe(big.subarray(0, 65536).toString());
    expect(maxBuffered).toBeLessThan(65536);
    expect(stats).toEqual({ messages: 2, truncatedMessages: 1, discardedBytes: big.length - 65536 });
  });

  it('reads Content-Length in any case and with blanks around the colon', () => {
    const odd = Buffer.from('NOTIFY sip:a@b SIP/2.0\r\ncontent-LENGTH \t:  4 \r\n\r\nbody');
    const compact = Buffer.from('SIP/2.0 180 Ringing\r\nL :2\r\n\r\nhi');
    const { f, out } = framer();
    f.push(Buffer.concat([odd, compact, a]));
    expect(out.map((m) => m.text)).toEqual([odd.toString(), compact.toString(), a.toString()]);
  });

  it('frames a request whose URI is 3 KiB long', () => {
    const long = Buffer.from(`INVITE sip:bob@example.com;x=${'p'.repeat(3000)} SIP/2.0\r\nl: 0\r\n\r\n`);
    const { f, out } = framer();
    for (let i = 0; i < long.length; i += 500) f.push(long.subarray(i, i + 500));
    f.push(a);
    expect(out.map((m) => m.text)).toEqual([long.toString(), a.toString()]);
  });

  it('treats a message without Content-Length as having no body', () => {
    const bare = Buffer.from('OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n');
    const { f, out } = framer();
    f.push(Buffer.concat([bare, a]));
    expect(out.map((m) => m.text)).toEqual([bare.toString(), a.toString()]);
  });

  it('after bytes lost mid-message (kernel cut), resynchronises at the next start line', () => {
    const first = sipMessage('lost', 'L'.repeat(500));
    const { f, out, stats } = framer();
    // 100 bytes of `first` captured; the lost bytes covered the rest of it and the head of a second message.
    const second = sipMessage('second', 'S'.repeat(300));
    f.push(first.subarray(0, 100), first.length - 100 + 50);
    f.push(Buffer.concat([second.subarray(50), b]));
    expect(out.map((m) => m.text)).toEqual([b.toString()]);
    expect(stats.discardedBytes).toBe(100 + second.length - 50);
  });

  it('emits half a message only once the rest arrives, and ignores a lone partial start token', () => {
    const { f, out } = framer();
    f.push(a.subarray(0, 40));
    expect(out).toEqual([]);
    f.push(Buffer.concat([a.subarray(40), Buffer.from('INV')]));
    expect(out.map((m) => m.text)).toEqual([a.toString()]);
    expect(f.buffered).toBe(3);
  });

  it('skips binary garbage between messages and counts every discarded byte', () => {
    const noise = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7919) & 0xff).filter((x) => x !== 0x0d && x !== 0x0a));
    const { f, out, stats } = framer();
    f.push(Buffer.concat([a, noise, Buffer.from('\r\n'), b]));
    expect(out.map((m) => m.text)).toEqual([a.toString(), b.toString()]);
    expect(stats.discardedBytes).toBe(noise.length + 2);
  });

  it('finds a message after 10 KiB of garbage whatever the split point, discarding exactly the garbage', () => {
    const noise = Buffer.alloc(10 * 1024, 'garbage INVITE SIP/2.0 ');
    const stream = Buffer.concat([noise, a]);
    for (let cut = noise.length - 200; cut <= stream.length; cut += 7) {
      const { f, out, stats } = framer();
      f.push(stream.subarray(0, cut));
      f.push(stream.subarray(cut));
      expect(out.map((m) => m.text)).toEqual([a.toString()]);
      expect(stats.discardedBytes).toBe(noise.length);
    }
  });

  it('skips the rest of a cut message that continues in later records', () => {
    const big = sipMessage('big', 'y'.repeat(100_000));
    const { f, out } = framer();
    // 64 KiB captured of a 70 000-byte write; the message's remaining bytes arrive in the next write.
    f.push(big.subarray(0, 65536), 70_000 - 65536);
    f.push(Buffer.concat([big.subarray(70_000), b]));
    expect(out.map((m) => m.truncated)).toEqual([true, false]);
    expect(out[1].text).toBe(b.toString());
  });
});

describe('records to messages', () => {
  const collect = (specs: RecordSpec[]) => {
    const out: Array<Omit<Message, 'payload'> & { text: string }> = [];
    const asm = new StreamAssembler((m) => out.push({ ...m, text: m.payload.toString() }));
    decodeBatch(batchOf(specs.map(encodeRecord)), (r) => asm.push(r));
    return out;
  };

  it('forgets the least recently used TCP streams once partial messages hold more than its bound, and counts them', () => {
    const out: string[] = [];
    const asm = new StreamAssembler((m) => out.push(m.payload.toString()), undefined, 20_000);
    // Three connections each stop in the middle of a 9000-byte message.
    const whole = [1, 2, 3].map((n) => sipMessage(`partial-${n}`, 'b'.repeat(9000)));
    const specs: RecordSpec[] = whole.map((m, i) => ({ ipProto: 6, sockId: BigInt(i + 1), data: m.subarray(0, 8000) }));
    // Then UDP traffic until the bound is checked (every 4096 records).
    for (let i = 0; i < 4096 - 3; i++) specs.push({ data: sipMessage(`udp-${i}`) });
    decodeBatch(batchOf(specs.map(encodeRecord)), (r) => asm.push(r));
    const held = asm.stats();
    expect(held.evictedForMemory).toBeGreaterThan(0);
    expect(held.streamBufferBytes).toBeLessThanOrEqual(20_000);
    // The most recent stream is still there: its message completes; the first one's rest is not a message.
    out.length = 0;
    decodeBatch(batchOf([3, 1].map((n) => encodeRecord({ ipProto: 6, sockId: BigInt(n), data: whole[n - 1].subarray(8000) }))), (r) => asm.push(r));
    expect(out).toEqual([whole[2].toString()]);
    expect(asm.stats().evictedForMemory).toBe(held.evictedForMemory);
  });

  it('orders streams by their last record, not their first, when forgetting them for memory', () => {
    const out: string[] = [];
    const asm = new StreamAssembler((m) => out.push(m.payload.toString()), undefined, 20_000);
    const whole = [1, 2, 3].map((n) => sipMessage(`partial-${n}`, 'b'.repeat(9000)));
    const specs: RecordSpec[] = whole.map((m, i) => ({ ipProto: 6, sockId: BigInt(i + 1), data: m.subarray(0, 8000) }));
    // The first connection sends again after the others: the second is now the least recently used.
    specs.push({ ipProto: 6, sockId: 1n, data: whole[0].subarray(8000, 8010) });
    for (let i = 0; i < 4096 - 4; i++) specs.push({ data: sipMessage(`udp-${i}`) });
    decodeBatch(batchOf(specs.map(encodeRecord)), (r) => asm.push(r));
    expect(asm.stats().evictedForMemory).toBeGreaterThan(0);
    out.length = 0;
    const rest = [encodeRecord({ ipProto: 6, sockId: 1n, data: whole[0].subarray(8010) }), encodeRecord({ ipProto: 6, sockId: 2n, data: whole[1].subarray(8000) })];
    decodeBatch(batchOf(rest), (r) => asm.push(r));
    expect(out).toEqual([whole[0].toString()]);
  });

  it('maps egress and ingress to src/dst and keeps IPv6 addresses', () => {
    const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const [out, inn] = collect([
      { family: 10, localAddr: v6, remoteAddr: [...Array(15).fill(0), 1], data: sipMessage('v6') },
      { family: 10, direction: 1, localAddr: v6, remoteAddr: [...Array(15).fill(0), 1], data: sipMessage('v6') },
    ]);
    expect([out.src, out.dst, out.family, out.transport]).toEqual([{ ip: '2001:db8::1', port: 5060 }, { ip: '::1', port: 5070 }, 6, 'udp']);
    expect([inn.src, inn.dst]).toEqual([{ ip: '::1', port: 5070 }, { ip: '2001:db8::1', port: 5060 }]);
  });

  it('names the loopback source of a wildcard-bound UDP socket, and marks keep-alives', () => {
    const out = collect([
      { localAddr: [0, 0, 0, 0], data: sipMessage('w') },
      { data: Buffer.from('\r\n\r\n') },
    ]);
    expect(out.map((m) => m.keepAlive)).toEqual([false, true]);
    expect(out[0].src).toEqual({ ip: '127.0.0.1', port: 5060 });
  });

  it('reports the keep-alive CR/LF runs of a TCP stream apart from its messages', () => {
    const m1 = sipMessage('ka1');
    const m2 = sipMessage('ka2');
    const out = collect([
      { ipProto: 6, data: Buffer.concat([Buffer.from('\r\n\r\n'), m1, Buffer.from('\r\n'), m2]) },
      { ipProto: 6, data: Buffer.from('\r\n\r\n') },
    ]);
    expect(out.map((m) => [m.keepAlive, m.text])).toEqual([
      [true, '\r\n\r\n'], [false, m1.toString()], [true, '\r\n'], [false, m2.toString()], [true, '\r\n\r\n'],
    ]);
  });

  it('reassembles TCP per socket and direction', () => {
    const m1 = sipMessage('t1');
    const m2 = sipMessage('t2');
    const out = collect([
      { ipProto: 6, sockId: 1n, data: m1.subarray(0, 10) },
      { ipProto: 6, sockId: 2n, data: m2.subarray(0, 20) },
      { ipProto: 6, sockId: 1n, data: m1.subarray(10) },
      { ipProto: 6, sockId: 2n, data: m2.subarray(20) },
    ]);
    expect(out.map((m) => [m.sockId, m.text])).toEqual([
      [1n, m1.toString()],
      [2n, m2.toString()],
    ]);
  });

  it('forwards once a TCP message seen leaving one local socket and entering another, split differently', () => {
    const m1 = sipMessage('tcp-local', 'x'.repeat(3000));
    const m2 = sipMessage('tcp-local-2');
    const out = collect([
      { ipProto: 6, sockId: 1n, localPort: 40000, remotePort: 5060, data: Buffer.concat([m1, m2]) },
      { ipProto: 6, sockId: 2n, direction: 1, localPort: 5060, remotePort: 40000, data: m1.subarray(0, 1000) },
      { ipProto: 6, sockId: 2n, direction: 1, localPort: 5060, remotePort: 40000, data: Buffer.concat([m1.subarray(1000), m2.subarray(0, 5)]) },
      { ipProto: 6, sockId: 2n, direction: 1, localPort: 5060, remotePort: 40000, data: m2.subarray(5) },
    ]);
    const d = new LocalDedup();
    const kept = out.filter((m) => d.accept({ ...m, payload: Buffer.from(m.text) }));
    expect(kept.map((m) => [m.direction, m.src.port, m.dst.port, m.text])).toEqual([
      ['egress', 40000, 5060, m1.toString()],
      ['egress', 40000, 5060, m2.toString()],
    ]);
  });

  it('marks a UDP datagram the kernel cut as truncated with its full size', () => {
    const big = sipMessage('u', 'b'.repeat(1000));
    const [m] = collect([{ data: big.subarray(0, 600), origLen: big.length }]);
    expect([m.truncated, m.size, m.text]).toEqual([true, big.length, big.subarray(0, 600).toString()]);
  });

  it('says when the receiver did not learn its peer (recv with no address on unconnected UDP)', () => {
    const [m] = collect([{ direction: 1, flags: 0x02, remoteAddr: [0, 0, 0, 0], remotePort: 0, data: sipMessage('np') }]);
    expect([m.peerUnknown, m.src, m.dst]).toEqual([true, { ip: '0.0.0.0', port: 0 }, { ip: '127.0.0.1', port: 5060 }]);
  });

  it('names ::1 for a wildcard-bound IPv6 socket talking over loopback', () => {
    const [m] = collect([{ family: 10, direction: 1, localAddr: Array(16).fill(0), remoteAddr: [...Array(15).fill(0), 1], data: sipMessage('v6w') }]);
    expect([m.src, m.dst, m.family]).toEqual([{ ip: '::1', port: 5070 }, { ip: '::1', port: 5060 }, 6]);
  });

  it('hands a header-only receiver\'s copy on as no message, with its size, hash and ends', () => {
    const copies: ReceiverCopy[] = [];
    const messages: Message[] = [];
    const asm = new StreamAssembler((m) => messages.push(m), (c) => copies.push({ ...c }));
    const spec: RecordSpec = { pid: 200, cgroupId: 9n, netns: 7, direction: 1, localPort: 5070, remotePort: 5060, data: Buffer.alloc(0), origLen: 812, flags: F_COUNTERPART, msgHash: 77 };
    decodeBatch(batchOf([encodeRecord(spec)]), (r) => asm.push(r));
    expect(messages).toEqual([]);
    expect(copies).toEqual([{
      tsNs: 1_000_000n, transport: 'udp', direction: 'ingress', src: { ip: '127.0.0.1', port: 5060 }, dst: { ip: '127.0.0.1', port: 5070 }, size: 812, msgHash: 77, cgroupId: 9n, pid: 200, netns: 7,
    }]);
    // An empty datagram without the flag is still a keep-alive.
    expect(collect([{ data: Buffer.alloc(0) }]).map((m) => m.keepAlive)).toEqual([true]);
  });

  it('pairs a recorded sender\'s record with the receiver\'s header-only record: one message forwarded, the receiver named', () => {
    const data = sipMessage('header-only');
    const d = new LocalDedup();
    const kept: Message[] = [];
    const paired: Array<[number | undefined, number, Endpoint]> = [];
    const asm = new StreamAssembler((m) => d.accept(m) && kept.push(m), (c) => paired.push([d.pairReceiverCopy(c)?.pid, c.pid, c.dst]));
    decodeBatch(batchOf(([
      { pid: 100, localPort: 40000, remotePort: 5060, data, msgHash: 0xabcdef },
      { pid: 200, direction: 1, localAddr: [0, 0, 0, 0], localPort: 5060, remotePort: 40000, data: Buffer.alloc(0), origLen: data.length, flags: F_COUNTERPART, msgHash: 0xabcdef },
    ] as RecordSpec[]).map(encodeRecord)), (r) => asm.push(r));
    expect(kept.map((m) => m.direction)).toEqual(['egress']);
    expect(paired).toEqual([[100, 200, { ip: '127.0.0.1', port: 5060 }]]);
    expect([d.unpaired, d.size]).toEqual([0, 0]);
  });

  it('skips a malformed record and decodes the rest of the batch', () => {
    const good = encodeRecord({ data: sipMessage('ok') });
    const bad = Buffer.from(good);
    bad.writeUInt32LE(1 << 20, 44); // data_len larger than the record
    const asm: string[] = [];
    const malformed = decodeBatch(batchOf([bad, good]), (r) => asm.push(r.data.toString()));
    expect(malformed).toBe(1);
    expect(asm).toEqual([sipMessage('ok').toString()]);
  });
});

describe('local dedup', () => {
  const msg = (direction: 'egress' | 'ingress', text: string, tsNs = 1n): Message => ({
    tsNs, proto: 'sip', netns: 0, transport: 'udp', family: 4, src: { ip: '127.0.0.1', port: 5060 }, dst: { ip: '127.0.0.1', port: 5070 },
    pid: 1, tid: 1, comm: 'x', cgroupId: 1n, sockId: 1n, direction, payload: Buffer.from(text), size: text.length, truncated: false, peerUnknown: false, connectionUnknown: false,
  });

  it('forwards a local message once whichever side is seen first', () => {
    const d = new LocalDedup();
    expect([d.accept(msg('egress', 'A')), d.accept(msg('ingress', 'A'))]).toEqual([true, false]);
    expect([d.accept(msg('ingress', 'B')), d.accept(msg('egress', 'B'))]).toEqual([true, false]);
    expect(d.size).toBe(0);
  });

  it('at its bound forgets the oldest bucket before its window ends, and counts each one', () => {
    const d = new LocalDedup(2_000_000_000n, 2);
    for (const text of ['X1', 'X2', 'X3', 'X4']) d.accept(msg('egress', text));
    expect([d.size, d.evictedEarly]).toEqual([2, 2]);
    // A full table makes room first (X3 goes); X4's other copy still pairs, the forgotten X1's is taken for a new message.
    expect([d.accept(msg('ingress', 'X4')), d.accept(msg('ingress', 'X1'))]).toEqual([false, true]);
    expect(d.evictedEarly).toBe(3);
    // Past the window a bucket goes without counting.
    d.accept(msg('egress', 'X5', 3_000_000_000n));
    expect([d.size, d.evictedEarly]).toEqual([1, 3]);
  });

  it('keeps retransmissions: two copies from the same side are two wire messages', () => {
    const d = new LocalDedup();
    const seen = [msg('egress', 'R'), msg('egress', 'R'), msg('ingress', 'R'), msg('ingress', 'R')].map((m) => d.accept(m));
    expect(seen).toEqual([true, true, false, false]);
  });

  it('pairs a copy cut at the capture limit with the whole copy from the other side', () => {
    const d = new LocalDedup();
    const whole = { ...msg('ingress', 'W'.repeat(70_000)) };
    const cut = { ...msg('egress', 'W'.repeat(65_536)), size: 70_000, truncated: true };
    expect([d.accept(cut), d.accept(whole)]).toEqual([true, false]);
  });

  it('pairs a receiver copy that does not know the sender (recv with no address) by destination', () => {
    const d = new LocalDedup();
    const blind = { ...msg('ingress', 'N'), src: { ip: '0.0.0.0', port: 0 }, peerUnknown: true };
    expect([d.accept(msg('egress', 'N')), d.accept(blind)]).toEqual([true, false]);
    expect([d.accept(blind), d.accept(msg('egress', 'N'))]).toEqual([true, false]);
    // Still no merging within one side.
    expect([d.accept(blind), d.accept(blind)]).toEqual([true, true]);
  });

  it('pairs copies when a side only knows a wildcard address, and not copies between different hosts', () => {
    const d = new LocalDedup();
    const ep = (ip: string, port: number) => ({ ip, port });
    const at = (direction: 'egress' | 'ingress', src: [string, number], dst: [string, number], text: string) => ({ ...msg(direction, text), src: ep(...src), dst: ep(...dst) });
    // Sender bound to 0.0.0.0 sends to a local address; the receiver is bound to 0.0.0.0 too.
    expect([d.accept(at('egress', ['0.0.0.0', 5060], ['10.0.0.5', 5070], 'W')), d.accept(at('ingress', ['10.0.0.5', 5060], ['0.0.0.0', 5070], 'W'))]).toEqual([true, false]);
    // Loopback: 127.0.0.1 named for a wildcard socket pairs with the 127.0.0.2 the sender used.
    expect([d.accept(at('ingress', ['127.0.0.1', 5060], ['127.0.0.1', 5070], 'L')), d.accept(at('egress', ['127.0.0.1', 5060], ['127.0.0.2', 5070], 'L'))]).toEqual([true, false]);
    // A relay forwarding the same bytes between two other hosts, same ports: two wire messages.
    expect([d.accept(at('ingress', ['10.0.0.1', 5060], ['10.0.0.2', 5060], 'R')), d.accept(at('egress', ['10.0.0.2', 5060], ['10.0.0.3', 5060], 'R'))]).toEqual([true, true]);
    // Different ports never pair.
    expect([d.accept(at('egress', ['127.0.0.1', 5060], ['127.0.0.1', 5070], 'P')), d.accept(at('ingress', ['127.0.0.1', 5061], ['127.0.0.1', 5070], 'P'))]).toEqual([true, true]);
  });

  it('pairs the copies of a payload wherever they lie in memory, and only those', () => {
    // 511 bytes: whole words and a tail of three bytes, the first 512 bytes being what is hashed.
    const text = 'INVITE sip:b@x SIP/2.0\r\n' + 'v'.repeat(511 - 25);
    const placed = (direction: 'egress' | 'ingress', bytes: string, offset: number, endOfMemory: boolean): Message => {
      const memory = Buffer.from(new ArrayBuffer(offset + bytes.length + (endOfMemory ? 0 : 64)));
      const payload = memory.subarray(offset, offset + bytes.length);
      payload.write(bytes, 'latin1');
      return { ...msg(direction, text), payload };
    };
    const changed = (at: number) => text.slice(0, at) + 'X' + text.slice(at + 1);
    for (let offset = 0; offset < 8; offset++) {
      for (const [other, pairs] of [[text, true], [changed(0), false], [changed(508), false], [changed(510), false]] as const) {
        const d = new LocalDedup();
        const kept = [d.accept(placed('egress', text, offset, false)), d.accept(placed('ingress', other, 3 - (offset & 3), true))];
        expect(kept, `offset ${offset}, ${other === text ? 'same' : 'changed'}`).toEqual([true, !pairs]);
      }
    }
  });

  it('keeps a retransmission pair apart from the original pair: two egress and two ingress in any order', () => {
    for (const order of [['e', 'e', 'i', 'i'], ['e', 'i', 'e', 'i'], ['i', 'e', 'e', 'i'], ['i', 'i', 'e', 'e']]) {
      const d = new LocalDedup();
      const kept = order.map((o) => d.accept(msg(o === 'e' ? 'egress' : 'ingress', 'RT')));
      expect(kept.filter(Boolean).length, order.join('')).toBe(2);
      expect(d.size).toBe(0);
    }
  });

  const receiverCopy = (hash: number, size = 6): ReceiverCopy => ({
    tsNs: 1n, transport: 'udp', direction: 'ingress', src: { ip: '127.0.0.1', port: 5060 }, dst: { ip: '127.0.0.1', port: 5070 }, size, msgHash: hash, cgroupId: 2n, pid: 2, netns: 0,
  });

  it('pairs a header-only receiver\'s copy with the sender\'s copy by the kernel\'s hash', () => {
    const d = new LocalDedup();
    const sent = { ...msg('egress', 'INVITE'), msgHash: 1234 };
    expect(d.accept(sent)).toBe(true);
    expect(d.pairReceiverCopy(receiverCopy(1234))).toBe(sent);
    expect([d.unpaired, d.size]).toEqual([0, 0]);
    // A whole receiver's copy (the kernel's fallback) pairs by the same hash.
    const again = { ...msg('egress', 'INVITE'), msgHash: 99 };
    expect([d.accept(again), d.accept({ ...msg('ingress', 'INVITE'), msgHash: 99 })]).toEqual([true, false]);
    expect(d.matched).toBe(again);
  });

  it('never keeps a header-only copy whose sender\'s copy is not there; counts it', () => {
    const d = new LocalDedup();
    expect(d.pairReceiverCopy(receiverCopy(5))).toBeUndefined();
    // Same bucket, other direction missing: a second sender's copy elsewhere does not make it pair.
    expect(d.accept({ ...msg('egress', 'OTHER'), msgHash: 6, dst: { ip: '10.9.9.9', port: 5070 } })).toBe(true);
    expect(d.pairReceiverCopy(receiverCopy(6))).toBeUndefined();
    expect([d.unpaired, d.size]).toEqual([2, 1]);
    // Nor does a sender's copy of another size with the same hash.
    expect(d.accept({ ...msg('egress', 'INVITE'), msgHash: 7 })).toBe(true);
    expect(d.pairReceiverCopy(receiverCopy(7, 7))).toBeUndefined();
    expect([d.unpaired, d.size]).toEqual([3, 2]);
  });

  it('pairs a TCP receiver\'s copy with the sender\'s message it names while that message waits, and only once', () => {
    const d = new LocalDedup(1_000_000_000n);
    const [a, b, late] = [msg('egress', 'A'), msg('egress', 'B'), msg('egress', 'LATE', 10n)];
    const copy = (sent: Message, tsNs = 1n): ReceiverCopy => ({ ...receiverCopy(0), transport: 'tcp', tsNs, sent });
    expect([d.accept(a), d.accept(b), d.accept({ ...b }), d.accept(late)]).toEqual([true, true, true, true]);
    // b's bucket holds two copies of one flow: the one named goes, the other waits.
    expect(d.pairReceiverCopy(copy(b))).toBe(b);
    expect(d.pairReceiverCopy(copy(a))).toBe(a);
    expect(d.pairReceiverCopy(copy(a))).toBeUndefined();
    expect([d.unpaired, d.size]).toEqual([1, 2]);
    // Out of its window the message is gone: the read is counted, nothing is handed back.
    expect(d.pairReceiverCopy(copy(late, 2_000_000_000n))).toBeUndefined();
    expect([d.unpaired, d.size]).toEqual([2, 0]);
  });

  it('holds at most maxKeys messages', () => {
    const d = new LocalDedup(2_000_000_000n, 100);
    for (let i = 0; i < 1000; i++) d.accept(msg('egress', `m${i}`));
    expect(d.size).toBeLessThanOrEqual(100);
  });

  it('does not pair copies further apart than its window', () => {
    const d = new LocalDedup();
    expect(d.accept(msg('egress', 'late', 1n))).toBe(true);
    expect(d.accept(msg('ingress', 'late', 5_000_000_000n))).toBe(true);
  });
});

/**
 * An assembler and one local TCP connection's two ends (sockets 1 and 2); each message out as line(), each
 * receiver's copy paired with a sender's message as `pid < ` and the message's line.
 */
function localTcpConnection() {
  const out: string[] = [];
  const asm = new StreamAssembler((m) => out.push(line(m.pid, m.payload)), (c) => out.push(`${c.pid} < ${line(c.sent!.pid, c.sent!.payload)}`));
  const push = (spec: RecordSpec) => decodeBatch(batchOf([encodeRecord(spec)]), (r) => asm.push(r));
  const sender = { ipProto: 6 as const, source: 1, pid: 100, sockId: 1n, localPort: 40000, remotePort: 5060 };
  const receiver = { ipProto: 6 as const, source: 6, pid: 200, sockId: 2n, direction: 1 as const, localPort: 5060, remotePort: 40000 };
  return { asm, out, push, sender, receiver };
}
const line = (pid: number, payload: Buffer) => `${pid} ${payload.toString().slice(0, 20)}`;

describe('stream lifetime', () => {
  it('forgets a TCP stream idle for two minutes, with its partial message', () => {
    const out: string[] = [];
    const asm = new StreamAssembler((m) => out.push(m.payload.toString()));
    const half = sipMessage('idle').subarray(0, 30);
    decodeBatch(batchOf([encodeRecord({ ipProto: 6, sockId: 9n, tsNs: 1n, data: half })]), (r) => asm.push(r));
    expect(asm.stats().streams).toBe(1);
    asm.expire(1n + 121_000_000_000n);
    expect(asm.stats()).toMatchObject({ streams: 0, expiredStreams: 1 });
  });

  it('frames a local TCP receiver\'s header-only reads that split messages from the bytes its sender\'s records carried', () => {
    const [a, b, c] = [sipMessage('seq-a'), sipMessage('seq-b'), sipMessage('seq-c')];
    const out: Message[] = [];
    const asm = new StreamAssembler((m) => out.push({ ...m, payload: Buffer.from(m.payload) }));
    const push = (spec: RecordSpec) => decodeBatch(batchOf([encodeRecord(spec)]), (r) => asm.push(r));
    const tcp = { ipProto: 6 as const, source: 1 };
    const sender = { ...tcp, pid: 100, sockId: 1n, localPort: 40000, remotePort: 5060 };
    const receiver = { ...tcp, pid: 200, sockId: 2n, direction: 1 as const, source: 6, localPort: 5060, remotePort: 40000 };
    const seq = 0xfffffc00; // the run wraps past 2^32
    const header = (at: number, len: number, flags = 0) => ({ ...receiver, data: Buffer.alloc(0), origLen: len, msgHash: at >>> 0, flags: F_SEQ | F_COUNTERPART | flags });
    push({ ...sender, data: a, msgHash: seq, flags: F_SEQ | F_STREAM_START });
    push({ ...sender, data: Buffer.concat([b, c]), msgHash: (seq + a.length) >>> 0, flags: F_SEQ });
    // The receiver's first read was whole (before the flow was known), the next two split b|c unevenly.
    push({ ...receiver, data: a, msgHash: seq, flags: F_SEQ | F_STREAM_START });
    push(header(seq + a.length, b.length + 10));
    push(header(seq + a.length + b.length + 10, c.length - 10));
    expect(out.map((m) => [m.pid, m.direction, m.payload.toString()])).toEqual([
      [100, 'egress', a.toString()], [100, 'egress', b.toString()], [100, 'egress', c.toString()],
      [200, 'ingress', a.toString()], [200, 'ingress', b.toString()], [200, 'ingress', c.toString()],
    ]);
    expect(out.every((m) => !m.msgHash)).toBe(true);
    // Everything read is let go; each receiver's copy pairs with its sender's.
    expect(asm.stats().localTcp).toEqual({ flows: 1, bytes: 0, allocatedBytes: 4096, listed: 0, pairedReads: 0, missing: 0, evictedForMemory: 0 });
    const d = new LocalDedup();
    expect(out.map((m) => d.accept(m))).toEqual([true, true, true, false, false, false]);
  });

  it('restarts a local TCP receiver\'s stream whose bytes were not kept, and drops a closed connection\'s bytes on the next one\'s first record', () => {
    const [a, b] = [sipMessage('kept-a'), sipMessage('kept-b')];
    const { asm, out, push, sender, receiver } = localTcpConnection();
    push({ ...sender, data: a, msgHash: 1000, flags: F_SEQ | F_STREAM_START });
    // A new connection on the same addresses and ports: its first record (not kept) drops the old bytes.
    push({ ...sender, sockId: 3n, data: b, msgHash: 1000 + a.length, flags: F_STREAM_START });
    push({ ...receiver, data: Buffer.alloc(0), origLen: a.length, msgHash: 1000, flags: F_SEQ | F_COUNTERPART | F_STREAM_START });
    push({ ...receiver, data: b, msgHash: 1000 + a.length, flags: F_SEQ });
    expect(out).toEqual([line(100, a), line(100, b), line(200, b)]);
    expect(asm.stats().localTcp).toMatchObject({ missing: 1, bytes: 0 });
  });

  it('names a local TCP stream\'s flow again when a connection whose first record was lost reuses its socket address', () => {
    const [a, b] = [sipMessage('reused-a'), sipMessage('reused-b')];
    const { asm, out, push, sender, receiver } = localTcpConnection();
    const header = (at: number, len: number) => ({ data: Buffer.alloc(0), origLen: len, msgHash: at, flags: F_SEQ | F_COUNTERPART });
    push({ ...sender, data: a, msgHash: 1000, flags: F_SEQ | F_STREAM_START });
    push({ ...receiver, ...header(1000, a.length), flags: F_SEQ | F_COUNTERPART | F_STREAM_START });
    // The next connection takes socket 1 (its flagged first record lost): other ports, so another flow.
    push({ ...sender, localPort: 40001, data: b, msgHash: 7000, flags: F_SEQ });
    push({ ...receiver, sockId: 3n, remotePort: 40001, ...header(7000, b.length), flags: F_SEQ | F_COUNTERPART | F_STREAM_START });
    expect(out).toEqual([line(100, a), `200 < ${line(100, a)}`, line(100, b), `200 < ${line(100, b)}`]);
    expect(asm.stats().localTcp).toMatchObject({ flows: 2, bytes: 0, listed: 0, pairedReads: 2, missing: 0 });
  });

  it('pairs a local TCP receiver\'s header-only reads that hold whole sender\'s messages with those messages, framing none again', () => {
    const [a, b, c, d] = [sipMessage('pair-a'), sipMessage('pair-b'), sipMessage('pair-c'), sipMessage('pair-d')];
    const ping = Buffer.from('\r\n\r\n');
    const dedup = new LocalDedup();
    const forwarded: string[] = [];
    const paired: Array<[string, ReceiverCopy]> = [];
    const asm = new StreamAssembler(
      (m) => dedup.accept(m) && !m.keepAlive && forwarded.push(line(m.pid, m.payload)),
      (c) => paired.push([dedup.pairReceiverCopy(c)!.keepAlive ? 'keep-alive' : line(c.sent!.pid, c.sent!.payload), { ...c, sent: undefined }]),
    );
    const push = (spec: RecordSpec) => decodeBatch(batchOf([encodeRecord(spec)]), (r) => asm.push(r));
    const ends = localTcpConnection();
    const [sender, receiver] = [{ ...ends.sender, netns: 7 }, { ...ends.receiver, netns: 7 }];
    const seq = 0xfffffe00; // the stream wraps past 2^32
    const header = (at: number, len: number, flags = 0) => ({ ...receiver, cgroupId: 9n, data: Buffer.alloc(0), origLen: len, msgHash: at >>> 0, flags: F_SEQ | F_COUNTERPART | flags });
    // Written: a, b and c pipelined, a keep-alive and d; read: a and b, c and the keep-alive, d.
    push({ ...sender, data: a, msgHash: seq, flags: F_SEQ | F_STREAM_START });
    push({ ...sender, data: Buffer.concat([b, c]), msgHash: (seq + a.length) >>> 0, flags: F_SEQ });
    push({ ...sender, data: Buffer.concat([ping, d]), msgHash: (seq + a.length + b.length + c.length) >>> 0, flags: F_SEQ });
    push(header(seq, a.length + b.length, F_STREAM_START));
    push(header(seq + a.length + b.length, c.length + ping.length));
    push(header(seq + a.length + b.length + c.length + ping.length, d.length));
    expect(forwarded).toEqual([line(100, a), line(100, b), line(100, c), line(100, d)]);
    const copy = { transport: 'tcp', direction: 'ingress', src: { ip: '127.0.0.1', port: 40000 }, dst: { ip: '127.0.0.1', port: 5060 }, msgHash: 0, cgroupId: 9n, pid: 200, netns: 7, sent: undefined };
    expect(paired).toEqual([
      [line(100, a), { ...copy, tsNs: 1_000_000n, size: a.length }],
      [line(100, b), { ...copy, tsNs: 1_000_000n, size: b.length }],
      [line(100, c), { ...copy, tsNs: 1_000_000n, size: c.length }],
      ['keep-alive', { ...copy, tsNs: 1_000_000n, size: ping.length }],
      [line(100, d), { ...copy, tsNs: 1_000_000n, size: d.length }],
    ]);
    expect([dedup.size, dedup.unpaired]).toEqual([0, 0]);
    // Counted as framed on both sides, as when the receiver's bytes were framed again.
    expect(asm.stats()).toMatchObject({ messages: 8, discardedBytes: 0, localTcp: { flows: 1, bytes: 0, listed: 0, pairedReads: 3, missing: 0 } });
  });

  it('frames a local TCP receiver\'s reads that split messages, then pairs again once a read ends where a message ends', () => {
    const [a, b, c, d] = [sipMessage('mix-a'), sipMessage('mix-b'), sipMessage('mix-c'), sipMessage('mix-d')];
    const { asm, out, push, sender, receiver } = localTcpConnection();
    const header = (at: number, len: number, flags = 0) => ({ ...receiver, data: Buffer.alloc(0), origLen: len, msgHash: at, flags: F_SEQ | F_COUNTERPART | flags });
    push({ ...sender, data: Buffer.concat([a, b, c, d]), msgHash: 1000, flags: F_SEQ | F_STREAM_START });
    // a and half of b (framed), the rest of b and c (framed: the stream holds half of b), d (paired).
    const half = a.length + (b.length >> 1);
    push(header(1000, half, F_STREAM_START));
    push(header(1000 + half, a.length + b.length + c.length - half));
    push(header(1000 + a.length + b.length + c.length, d.length));
    expect(out).toEqual([line(100, a), line(100, b), line(100, c), line(100, d), line(200, a), line(200, b), line(200, c), `200 < ${line(100, d)}`]);
    expect(asm.stats().localTcp).toMatchObject({ bytes: 0, listed: 0, pairedReads: 1, missing: 0 });
  });

  it('pairs no sender\'s message a whole read of the receiver passed, and frames that read', () => {
    const [a, b, c] = [sipMessage('whole-a'), sipMessage('whole-b'), sipMessage('whole-c')];
    const { asm, out, push, sender, receiver } = localTcpConnection();
    push({ ...sender, data: a, msgHash: 1000, flags: F_SEQ | F_STREAM_START });
    // The receiver read b before the sender's record of it went out: whole, and first.
    push({ ...receiver, data: a, msgHash: 1000, flags: F_SEQ | F_STREAM_START });
    push({ ...receiver, data: b, msgHash: 1000 + a.length, flags: F_SEQ });
    push({ ...sender, data: Buffer.concat([b, c]), msgHash: 1000 + a.length, flags: F_SEQ });
    push({ ...receiver, data: Buffer.alloc(0), origLen: c.length, msgHash: 1000 + a.length + b.length, flags: F_SEQ | F_COUNTERPART });
    expect(out).toEqual([line(100, a), line(200, a), line(200, b), line(100, b), line(100, c), `200 < ${line(100, c)}`]);
    expect(asm.stats().localTcp).toMatchObject({ bytes: 0, listed: 0, pairedReads: 1 });
  });

  it('pairs a local Diameter connection\'s reads, and frames a WebSocket connection\'s (a message\'s size is its payload\'s, not its frames\')', () => {
    const { asm, out, push, sender, receiver } = localTcpConnection();
    const header = (at: number, len: number, flags = 0) => ({ data: Buffer.alloc(0), origLen: len, msgHash: at, flags: F_SEQ | F_COUNTERPART | flags });
    const dwr = diameterMessage({ request: true, command: 280, app: 0, hopByHop: 1, endToEnd: 1, avps: [{ code: 264, value: 'a.test' }] });
    const dia = { l7: L7_DIAMETER, localPort: 40001, remotePort: 3868 };
    push({ ...sender, ...dia, sockId: 3n, data: Buffer.concat([dwr, dwr]), msgHash: 500, flags: F_SEQ | F_STREAM_START });
    push({ ...receiver, ...dia, localPort: 3868, remotePort: 40001, sockId: 4n, ...header(500, 2 * dwr.length, F_STREAM_START) });
    const upgrade = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n');
    const [m1, m2] = [sipMessage('ws-1'), sipMessage('ws-2')];
    const [f1, f2] = [encodeFrame(0x81, m1, { mask: 0x11223344 }), encodeFrame(0x81, m2, { mask: 0x55667788 })];
    const ws = { l7: L7_WEBSOCKET, localPort: 40002, remotePort: 8080 };
    push({ ...sender, ...ws, sockId: 5n, data: Buffer.concat([upgrade, f1]), msgHash: 0, flags: F_SEQ | F_STREAM_START });
    push({ ...sender, ...ws, sockId: 5n, data: f2, msgHash: upgrade.length + f1.length, flags: F_SEQ });
    const wsReceiver = { ...receiver, ...ws, localPort: 8080, remotePort: 40002, sockId: 6n };
    push({ ...wsReceiver, ...header(0, upgrade.length + f1.length, F_STREAM_START) });
    push({ ...wsReceiver, ...header(upgrade.length + f1.length, f2.length) });
    const dwrLine = line(100, dwr);
    expect(out).toEqual([dwrLine, dwrLine, `200 < ${dwrLine}`, `200 < ${dwrLine}`, line(100, m1), line(100, m2), line(200, m1), line(200, m2)]);
    expect(asm.stats()).toMatchObject({ messages: 4, diameter: { messages: 4 }, websocket: { handshakes: 2 }, localTcp: { flows: 2, bytes: 0, listed: 0, pairedReads: 1 } });
  });

  it('starts afresh when a new connection takes the socket address of a closed one (first record flagged by the kernel)', () => {
    const out: Array<{ proto: string; text: string }> = [];
    const asm = new StreamAssembler((m) => out.push({ proto: m.proto, text: m.payload.toString('latin1') }));
    const push = (spec: RecordSpec) => decodeBatch(batchOf([encodeRecord(spec)]), (r) => asm.push(r));
    const sip = sipMessage('closed-mid-message');
    const dwa = diameterMessage({ request: false, command: 280, app: 0, hopByHop: 1, endToEnd: 1, avps: [{ code: 268, value: 2001 }] });
    // The old connection on socket 9 was SIP and closed mid-message; the next one there is Diameter.
    push({ ipProto: 6, sockId: 9n, flags: F_STREAM_START, data: sip.subarray(0, 30) });
    push({ ipProto: 6, sockId: 9n, l7: L7_DIAMETER, flags: F_STREAM_START, data: dwa });
    // Then a SIP connection again, its first message in two records (only the first flagged).
    push({ ipProto: 6, sockId: 9n, flags: F_STREAM_START, data: sip.subarray(0, 30) });
    push({ ipProto: 6, sockId: 9n, data: sip.subarray(30) });
    expect(out).toEqual([
      { proto: 'diameter', text: dwa.toString('latin1') },
      { proto: 'sip', text: sip.toString('latin1') },
    ]);
    expect(asm.stats()).toMatchObject({ streams: 1, expiredStreams: 2 });
  });
});

describe('local TCP senders\' bytes (SentBytes)', () => {
  /** n bytes of a stream whose byte at offset i is i % 251, from offset `from`. */
  const bytes = (n: number, from = 0) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = (from + i) % 251;
    return b;
  };

  it('hands a receiver\'s reads the bytes of the sender\'s records wherever they split them, each once, in a buffer reused while it keeps up', () => {
    const kept = new SentBytes();
    const seq = 0xffffff00; // the run wraps past 2^32
    for (let round = 0; round < 100; round++) {
      const at = (seq + round * 300) >>> 0;
      for (let i = 0; i < 3; i++) kept.keep('a>b', (at + 100 * i) >>> 0, bytes(100, 100 * i), round === 0 && i === 0);
      expect(kept.take('a>b', at, 150, true)).toEqual(bytes(150));
      expect(kept.take('a>b', (at + 150) >>> 0, 150, true)).toEqual(bytes(150, 150));
      // Read already: not handed out again.
      expect(kept.take('a>b', at, 150, true)).toBeUndefined();
    }
    expect(kept.stats()).toEqual({ flows: 1, bytes: 0, allocatedBytes: 4096, listed: 0, pairedReads: 0, missing: 100, evictedForMemory: 0 });
  });

  it('hands out the bytes before and after a sender\'s record that is missing, not a read across it', () => {
    const kept = new SentBytes();
    kept.keep('a>b', 0, bytes(100), false);
    kept.keep('a>b', 200, bytes(100, 200), false); // [100, 200) lost
    expect(kept.take('a>b', 0, 100, true)).toEqual(bytes(100));
    expect(kept.take('a>b', 100, 150, true)).toBeUndefined();
    expect(kept.take('a>b', 250, 50, true)).toEqual(bytes(50, 250));
    expect(kept.stats()).toMatchObject({ bytes: 0, missing: 1 });
  });

  it('drops what a flow held on its next connection\'s first record; a whole read drops what it passed', () => {
    const kept = new SentBytes();
    kept.keep('a>b', 0, bytes(100), false);
    kept.keep('a>b', 5000, bytes(10), true);
    expect(kept.take('a>b', 0, 100, true)).toBeUndefined();
    kept.keep('a>b', 5010, bytes(10, 10), false);
    expect(kept.take('a>b', 5000, 15, false)).toBeUndefined();
    expect(kept.take('a>b', 5015, 5, true)).toEqual(bytes(5, 15));
    kept.keep('a>b', 5020, bytes(10), false);
    kept.forget('a>b');
    expect(kept.stats()).toMatchObject({ flows: 1, bytes: 0, missing: 1 });
  });

  it('keeps the flows\' buffers under its bound: the least recently written flow goes first, counted if it held bytes', () => {
    const kept = new SentBytes(10_000);
    kept.keep('a>b', 0, bytes(4096), false);
    kept.keep('c>d', 0, bytes(4096), false);
    // a>b's buffer grows to 8 KiB: with c>d's 4 KiB over the bound, c>d (written before a>b) goes.
    kept.keep('a>b', 4096, bytes(4096, 4096), false);
    expect(kept.stats()).toEqual({ flows: 1, bytes: 8192, allocatedBytes: 8192, listed: 0, pairedReads: 0, missing: 0, evictedForMemory: 1 });
    expect(kept.take('a>b', 0, 8192, true)).toEqual(bytes(8192));
    expect(kept.take('c>d', 0, 4096, true)).toBeUndefined();
    // a>b, read to the end, goes with nothing lost for e>f's buffer.
    kept.keep('e>f', 0, bytes(10), false);
    expect(kept.stats()).toEqual({ flows: 1, bytes: 10, allocatedBytes: 4096, listed: 0, pairedReads: 0, missing: 1, evictedForMemory: 1 });
  });

  it('pairs a read with the sender\'s messages only when it holds them whole, end to end, all listed', () => {
    const kept = new SentBytes(1 << 20, 3);
    const m = (size: number, truncated = false) => ({ size, truncated }) as Message;
    /** The messages a read completes, or undefined when it is not paired. */
    const read = (seq: number, len: number) => {
      const completed: Message[] = [];
      return kept.read('a>b', seq, len, (c) => completed.push(c)) ? completed : undefined;
    };
    const flow = kept.keep('a>b', 0, bytes(400), false);
    const [m1, m2] = [m(100), m(100)];
    kept.list(flow, 100, m1);
    kept.list(flow, 200, m2);
    kept.list(flow, 150, m(50)); // out of order (its framing was lost): not listed
    expect(read(0, 150)).toBeUndefined(); // ends inside m2
    expect(read(0, 200)).toEqual([m1, m2]);
    // [200, 250) is no message (garbage, say): the read of it and of the message after it is framed.
    kept.list(flow, 400, m(150));
    expect(read(200, 200)).toBeUndefined();
    expect(kept.take('a>b', 200, 200, true)).toEqual(bytes(200, 200));
    expect(kept.stats()).toMatchObject({ bytes: 0, listed: 0, pairedReads: 1 });
    // A message cut is not listed, nor one past the bound: the reads of them are framed.
    kept.keep('a>b', 400, bytes(600, 400), false);
    kept.list(flow, 500, m(100, true));
    expect(read(400, 100)).toBeUndefined();
    expect(kept.take('a>b', 400, 100, true)).toEqual(bytes(100, 400));
    for (const end of [600, 700, 800, 900]) kept.list(flow, end, m(100));
    expect(kept.stats()).toMatchObject({ listed: 3 });
    expect(read(500, 300)).toHaveLength(3);
    kept.list(flow, 1000, m(100));
    expect(read(800, 200)).toBeUndefined();
    expect(kept.take('a>b', 800, 200, true)).toEqual(bytes(200, 800));
    // Bytes not kept: nothing is paired, and take() counts the read.
    kept.keep('a>b', 1100, bytes(100, 1100), false);
    kept.list(flow, 1200, m(100));
    expect(read(1000, 200)).toBeUndefined();
    expect(kept.take('a>b', 1000, 200, true)).toBeUndefined();
    expect(kept.stats()).toMatchObject({ bytes: 0, listed: 0, pairedReads: 2, missing: 1 });
  });

  it('lets go of a flow whose buffer grew for a large message once it is read', () => {
    const kept = new SentBytes();
    kept.keep('a>b', 0, bytes(100_000), false);
    expect(kept.stats()).toMatchObject({ flows: 1, bytes: 100_000, allocatedBytes: 100_000 });
    expect(kept.take('a>b', 0, 100_000, true)).toEqual(bytes(100_000));
    expect(kept.stats()).toMatchObject({ flows: 0, bytes: 0, allocatedBytes: 0 });
  });
});
