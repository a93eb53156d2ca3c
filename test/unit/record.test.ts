import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CaptureRecord, COUNTER_NAMES, decodeBatch, F_COUNTERPART, RECORD_HEADER_SIZE } from '../../src/capture/record.js';
import { MonotonicClock } from '../../src/capture/clock.js';
import { batchOf, encodeRecord } from '../../src/capture/replay.js';
import { sipMessage } from './records.js';

const mapped = (a: number, b: number, c: number, d: number) => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d];

function decodeOne(rec: Buffer) {
  const seen: Array<Record<string, unknown>> = [];
  const malformed = decodeBatch(batchOf([rec]), (r) =>
    seen.push({ ipVersion: r.ipVersion, local: r.localAddr(), remote: r.remoteAddr(), data: r.data.toString(), comm: r.comm() }),
  );
  return { seen, malformed };
}

describe('ring-buffer records', () => {
  it('decodes every field at the offsets of bpf/hepbpf.h', () => {
    const data = sipMessage('f');
    const rec = encodeRecord({ tsNs: 123456789012345n, sockId: 0xffff8880deadbeefn, pid: 4242, direction: 1, ipProto: 6, localPort: 5060, remotePort: 40000, comm: 'kamailio', data, origLen: data.length + 5 });
    let got: CaptureRecord | undefined;
    let fields: Record<string, unknown> = {};
    decodeBatch(batchOf([rec]), (r) => {
      got = r;
      fields = { tsNs: r.tsNs, cgroupId: r.cgroupId, sockId: r.sockId, pid: r.pid, tid: r.tid, origLen: r.origLen, dataLen: r.dataLen, direction: r.direction, family: r.family, ipProto: r.ipProto, l7: r.l7, source: r.source, flags: r.flags, truncated: r.truncated, localPort: r.localPort, remotePort: r.remotePort, fd: r.fd, comm: r.comm(), local: r.localAddr(), remote: r.remoteAddr() };
    });
    expect(got).toBeDefined();
    expect(fields).toEqual({ tsNs: 123456789012345n, cgroupId: 42n, sockId: 0xffff8880deadbeefn, pid: 4242, tid: 4242, origLen: data.length + 5, dataLen: data.length, direction: 1, family: 2, ipProto: 6, l7: 1, source: 3, flags: 1, truncated: true, localPort: 5060, remotePort: 40000, fd: 7, comm: 'kamailio', local: '127.0.0.1', remote: '127.0.0.1' });
  });

  it('decodes a header-only receiver\'s copy: counterpart flag, message hash, size without data', () => {
    const rec = encodeRecord({ direction: 1, data: Buffer.alloc(0), origLen: 800, flags: F_COUNTERPART, msgHash: 0x9e3779b9 });
    const seen: Array<Record<string, unknown>> = [];
    const malformed = decodeBatch(batchOf([rec]), (r) => seen.push({ flags: r.flags, msgHash: r.msgHash, origLen: r.origLen, dataLen: r.dataLen, truncated: r.truncated }));
    expect(malformed).toBe(0);
    expect(seen).toEqual([{ flags: F_COUNTERPART, msgHash: 0x9e3779b9, origLen: 800, dataLen: 0, truncated: false }]);
  });

  it('names the kernel counters in the order of HEPBPF_CNT_*', () => {
    const h = readFileSync(new URL('../../bpf/hepbpf.h', import.meta.url), 'utf8');
    const names = [...h.matchAll(/#define HEPBPF_CNT_(\w+) (\d+)/g)].filter(([, n]) => n !== 'MAX').map(([, , i]) => Number(i));
    expect(names).toEqual(COUNTER_NAMES.map((_, i) => i));
    expect(COUNTER_NAMES.slice(5)).toEqual(['receiverCopyReduced', 'receiverCopyWhole', 'tcpReadReduced', 'tcpReadWhole']);
  });

  it('exposes the raw 16-byte addresses', () => {
    const v6 = [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 9];
    let raw: string[] = [];
    decodeBatch(batchOf([encodeRecord({ family: 10, localAddr: v6, remoteAddr: mapped(1, 2, 3, 4), data: sipMessage('raw') })]), (r) => {
      raw = [r.localAddrBytes().toString('hex'), r.remoteAddrBytes().toString('hex')];
    });
    expect(raw).toEqual([Buffer.from(v6).toString('hex'), Buffer.from(mapped(1, 2, 3, 4)).toString('hex')]);
  });

  it('reads a 16-character comm that has no NUL', () => {
    expect(decodeOne(encodeRecord({ comm: 'abcdefghijklmnop', data: sipMessage('c') })).seen[0].comm).toBe('abcdefghijklmnop');
  });

  it('the text and ids records repeat are cached by value: more distinct values than the caches hold, each decoded right every time', () => {
    const n = 20_000; // several times the caches' slots: values share slots and take them from each other
    const hi = (i: number) => (i >> 8) & 0xff;
    const lo = (i: number) => i & 0xff;
    // IPv4, IPv4-mapped IPv6 (a dual-stack socket), and IPv6, in turn
    const addresses = (i: number) =>
      i % 3 === 0
        ? { family: 2 as const, localAddr: [10, 0, hi(i), lo(i)], remoteAddr: [203, 0, 113, lo(i)], text: [`10.0.${hi(i)}.${lo(i)}`, `203.0.113.${lo(i)}`] }
        : i % 3 === 1
          ? { family: 10 as const, localAddr: mapped(10, 1, hi(i), lo(i)), remoteAddr: mapped(198, 51, 100, lo(i)), text: [`10.1.${hi(i)}.${lo(i)}`, `198.51.100.${lo(i)}`] }
          : {
              family: 10 as const,
              localAddr: [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, hi(i), lo(i)],
              remoteAddr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi(i), lo(i)],
              text: [`2001:db8:1::${(i & 0xffff).toString(16)}`, `2001:db8::${(i & 0xffff).toString(16)}`],
            };
    const spec = (i: number) => ({
      cgroupId: BigInt(i + 1),
      sockId: 0xffff888000000000n + BigInt(i) * 0x800n,
      tlsId: i % 4 ? 0n : (BigInt(i) << 40n) | 7n,
      comm: `worker-${i % 5000}`,
      data: sipMessage('x'),
      ...addresses(i),
    });
    const records = Array.from({ length: n }, (_, i) => encodeRecord(spec(i)));
    let wrong = 0;
    for (const step of [1, 7]) {
      for (let i = 0; i < n; i += step) {
        decodeBatch(batchOf([records[i]]), (r) => {
          const s = spec(i);
          const got = [r.cgroupId, r.sockId, r.tlsId, r.localAddr(), r.remoteAddr(), r.comm()];
          if (got.join() !== [s.cgroupId, s.sockId, s.tlsId, ...s.text, s.comm].join()) wrong++;
        });
      }
    }
    expect(wrong).toBe(0);
  });

  it('formats IPv6 per RFC 5952 and folds IPv4-mapped addresses of dual-stack sockets to IPv4', () => {
    const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x0a];
    expect(decodeOne(encodeRecord({ family: 10, localAddr: v6, remoteAddr: [...Array(15).fill(0), 1], data: sipMessage('6') })).seen[0]).toMatchObject({ ipVersion: 6, local: '2001:db8::1:0:0:a', remote: '::1' });
    expect(decodeOne(encodeRecord({ family: 10, localAddr: mapped(127, 0, 0, 1), remoteAddr: mapped(127, 0, 0, 2), data: sipMessage('m') })).seen[0]).toMatchObject({ ipVersion: 4, local: '127.0.0.1', remote: '127.0.0.2' });
    // Unconnected dual-stack socket bound to [::]: the local side is unspecified, the peer mapped.
    expect(decodeOne(encodeRecord({ family: 10, localAddr: Array(16).fill(0), remoteAddr: mapped(10, 1, 2, 3), data: sipMessage('w') })).seen[0]).toMatchObject({ ipVersion: 4, local: '0.0.0.0', remote: '10.1.2.3' });
    // Both sides unspecified: nothing says it is IPv4.
    expect(decodeOne(encodeRecord({ family: 10, localAddr: Array(16).fill(0), remoteAddr: Array(16).fill(0), data: sipMessage('u') })).seen[0]).toMatchObject({ ipVersion: 6, local: '::', remote: '::' });
  });

  it('counts and skips records whose lengths or enums do not add up, and decodes the rest', () => {
    const good = encodeRecord({ data: sipMessage('ok') });
    const corrupt = (edit: (b: Buffer) => void) => {
      const b = Buffer.from(good);
      edit(b);
      return b;
    };
    const bad = [
      corrupt((b) => b.writeUInt32LE(1 << 20, 44)), // data_len past the record
      corrupt((b) => b.writeUInt32LE(3, 40)), // orig_len < data_len
      corrupt((b) => (b[48] = 2)), // direction
      corrupt((b) => (b[49] = 1)), // family
      good.subarray(0, RECORD_HEADER_SIZE - 1), // shorter than the header
    ];
    const seen: string[] = [];
    const malformed = decodeBatch(batchOf([...bad, good]), (r) => seen.push(r.data.toString()));
    expect(malformed).toBe(bad.length);
    expect(seen).toEqual([sipMessage('ok').toString()]);
  });

  it('stops at a batch whose framing runs past its end, counting it once', () => {
    const batch = batchOf([encodeRecord({ data: sipMessage('a') }), encodeRecord({ data: sipMessage('b') })]);
    const seen: string[] = [];
    expect(decodeBatch(batch.subarray(0, batch.length - 16), (r) => seen.push(r.data.toString()))).toBe(1);
    expect(seen).toEqual([sipMessage('a').toString()]);
  });

  it('reuses one record object for the whole batch', () => {
    const objs = new Set<CaptureRecord>();
    decodeBatch(batchOf([1, 2, 3].map((i) => encodeRecord({ data: sipMessage(`r${i}`) }))), (r) => objs.add(r));
    expect(objs.size).toBe(1);
  });
});

describe('monotonic to wall clock', () => {
  it('maps now on CLOCK_MONOTONIC to now on the wall clock, within a millisecond', () => {
    const clock = new MonotonicClock();
    const wall = Date.now() * 1000;
    expect(Math.abs(clock.toWallMicros(process.hrtime.bigint()) - wall)).toBeLessThan(2000);
    expect(clock.toWallMicros(5_000_000_123n) - clock.toWallMicros(5_000_000_000n)).toBe(0);
    expect(clock.toWallMicros(5_000_001_000n) - clock.toWallMicros(5_000_000_000n)).toBe(1);
  });

  it('follows a step of the wall clock, noticed within 10 s of capture time', () => {
    let stepMs = 0;
    const clock = new MonotonicClock(() => Date.now() + stepMs);
    const now = process.hrtime.bigint();
    const before = clock.toWallMicros(now);
    stepMs = 3_600_000; // the wall clock jumps an hour ahead
    expect(clock.toWallMicros(now)).toBe(before); // not checked again yet
    const later = now + 11_000_000_000n;
    expect(Math.abs(clock.toWallMicros(later) - (before + 11_000_000 + 3_600_000_000))).toBeLessThan(2000);
  });
});
