import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent.js';
import { ReplaySource, syntheticSipBatches } from '../../src/capture/replay.js';
import { ContainerResolver } from '../../src/enrich/containers.js';
import type { CaptureEvent } from '../../src/enrich/event.js';

describe('the synthetic SIP that warms the pipeline up before the probes attach', () => {
  it('takes the paths real traffic takes: each message forwarded once, UDP paired with its header-only copy, TCP framed', async () => {
    const events: CaptureEvent[] = [];
    const source = new ReplaySource();
    const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: new ContainerResolver(undefined, {}), sink: (ev) => events.push({ ...ev, payload: Buffer.from(ev.payload) }) });
    await agent.start();
    for (const batch of syntheticSipBatches(200)) {
      source.replay(batch);
      await new Promise((r) => setImmediate(r));
    }
    await agent.stop();
    const udp = events.filter((e) => e.message.transport === 'udp');
    const tcp = events.filter((e) => e.message.transport === 'tcp');
    expect(udp.map((e) => e.sip!.callId)).toEqual(Array.from({ length: 200 }, (_, i) => `${i}@127.0.0.1`));
    expect(tcp.map((e) => e.sip!.callId)).toEqual(Array.from({ length: 20 }, (_, i) => `${200 + i}@127.0.0.1`));
    expect(events.every((e) => e.payload.toString('latin1').startsWith('INVITE sip:bob@example.test SIP/2.0\r\n') && e.message.direction === 'egress')).toBe(true);
    expect(agent.stats()).toMatchObject({ forwarded: 220, duplicates: 220, unpairedReceiverCopies: 0, notSip: 0, streams: { discardedBytes: 0 } });
  });
});
