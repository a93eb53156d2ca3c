import { setImmediate as nextTurn } from 'node:timers/promises';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent.js';
import { Shedder } from '../../src/capture/shed.js';
import { RING_BUFFER_MIB, ringBufferBytes } from '../../src/capture/socket-capture.js';
import { batchOf, encodeRecord, ReplaySource, syntheticSipBatches } from '../../src/capture/replay.js';
import { decodeBatch, SRC_EXEC, SRC_TCP_CLOSE, SRC_TLS_CONN } from '../../src/capture/record.js';
import { memoryContainers } from '../../bench/traffic.js';
import { sipMessage } from './records.js';

/** A logger whose lines the test reads. */
function recordingLog() {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { log, lines };
}

const data = (n: number, source = 3) => encodeRecord({ source, data: sipMessage(`shed-${n}`) });
const control = (source: number) => encodeRecord({ source, data: Buffer.alloc(0) });
const sources = (batch: Buffer) => {
  const out: number[] = [];
  decodeBatch(batch, (r) => out.push(r.source));
  return out;
};

describe('overload shedding (src/capture/shed.ts)', () => {
  it('passes batches through while the loop turns or the ring buffer holds, then drops exactly the data records of lagging batches and keeps control records', async () => {
    let now = 0;
    let lostInKernel = 7;
    const { log, lines } = recordingLog();
    const shedder = new Shedder(log, () => lostInKernel, 1000, () => now);
    const first = batchOf([data(1), data(2, 8)]);
    expect(shedder.admit(first)).toBe(first);
    now = 1000; // as long as allowed without a turn
    expect(shedder.admit(first)).toBe(first);
    now = 5000; // longer, but the ring buffer absorbs it: the kernel loses nothing
    expect(shedder.admit(first)).toBe(first);
    expect(shedder.admit(first)).toBe(first);
    expect(shedder.shed.lag).toBe(0);

    lostInKernel = 8; // the ring buffer overflowed during the stretch
    const mixed = batchOf([data(3), control(SRC_EXEC), data(4, 6), control(SRC_TLS_CONN), data(5, 11), control(SRC_TCP_CLOSE)]);
    expect(sources(shedder.admit(mixed))).toEqual([SRC_EXEC, SRC_TLS_CONN, SRC_TCP_CLOSE]);
    expect(shedder.shed.lag).toBe(3);
    expect(sources(shedder.admit(batchOf([data(6), data(7)])))).toEqual([]);
    expect(shedder.shed.lag).toBe(5);
    expect(lines.map((l) => l.msg)).toEqual([expect.stringMatching(/^overload: .*shedding data records/)]);

    // The loop turned: the next batch starts a new busy stretch and goes through whole.
    await nextTurn();
    const after = batchOf([data(8)]);
    expect(shedder.admit(after)).toBe(after);
    expect(shedder.shed.lag).toBe(5);

    // The episode ends in the log once nothing was shed for 5 s, with how many it shed.
    await nextTurn();
    now = 5000 + 5000;
    shedder.admit(after);
    expect(lines.slice(1)).toEqual([expect.objectContaining({ msg: 'overload over: no record shed for 5 s', shed: 5 })]);
  });

  it('counts every record the agent sheds: each data record counted once, none of them forwarded', async () => {
    // A source whose kernel keeps losing records: every batch after the first (which reads where the count stands) sheds.
    const source = new (class extends ReplaySource {
      private lost = 0;
      counters = () => ({ ringbufFull: this.lost++ });
    })();
    let forwarded = 0;
    // A negative allowance: every batch counts as lagging.
    const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: memoryContainers(), maxBusyMs: -1, sink: () => forwarded++ });
    await agent.start();
    const [first, ...rest] = syntheticSipBatches(100, 16);
    source.replay(first);
    let records = 0;
    for (const batch of rest) {
      records += decodeBatch(batch, () => {}) === 0 ? sources(batch).length : NaN;
      source.replay(batch);
    }
    await agent.stop();
    expect(records).toBeGreaterThan(200);
    expect(agent.stats().shed).toEqual({ lag: records });
    // The first batch's 8 datagrams (sender's copy and receiver's header each) are all that went out.
    expect(forwarded).toBe(8);
    expect(agent.stats().forwarded).toBe(8);
  });

  it('sheds nothing without the option (recorded records replayed as fast as they go)', async () => {
    const source = new ReplaySource();
    let forwarded = 0;
    const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: memoryContainers(), hold: { heldBytes: 1 << 20 }, sink: () => forwarded++ });
    await agent.start();
    for (const batch of syntheticSipBatches(100, 16)) source.replay(batch);
    await agent.stop();
    expect(agent.stats().shed).toEqual({ lag: 0 });
    expect(forwarded).toBe(110);
  });
});

describe('ring buffer size (HEPBPF_RING_BUFFER_MIB)', () => {
  it('defaults to 8 MiB, takes a power of two from 1 to 1024 MiB, and refuses anything else by name', () => {
    expect(ringBufferBytes({})).toBe(RING_BUFFER_MIB << 20);
    expect(ringBufferBytes({ HEPBPF_RING_BUFFER_MIB: '8' })).toBe(8 << 20);
    expect(ringBufferBytes({ HEPBPF_RING_BUFFER_MIB: '1024' })).toBe(1024 << 20);
    for (const bad of ['0', '3', '2048', '8.5', 'x', '-4']) expect(() => ringBufferBytes({ HEPBPF_RING_BUFFER_MIB: bad })).toThrow(`HEPBPF_RING_BUFFER_MIB=${bad}: expected a power of two from 1 to 1024`);
  });
});
