import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent.js';
import { ReplaySource } from '../../src/capture/replay.js';
import { decodeHep } from '../../src/hep/decode.js';
import { HepForwarder } from '../../src/output/hep-forwarder.js';
import { NodeNameTemplate } from '../../src/output/node-name.js';
import { aaa, aar, invite, maa, memoryContainers, memorySender, ok, PCSCF, Recorder, record, SCSCF } from '../../bench/traffic.js';
import { L7_SIP } from '../../src/capture/record.js';
import { eventSummary, type CaptureEvent } from '../../src/enrich/event.js';

/** The recorded INVITE with its SDES key masked, spelt out here rather than by the redaction code. */
const maskedInvite = (callId: string, icid: string) => {
  const text = invite(callId, icid).toString('latin1');
  const key = /inline:([A-Za-z0-9+/=]+)/.exec(text)![1];
  return Buffer.from(text.replace(key, 'X'.repeat(key.length)), 'latin1');
};

/**
 * `rec` through an agent forwarding as HEP into memory (each event shown to `onEvent` first), until
 * `expected` packets came out: the packets and the stopped agent.
 */
async function replayed(rec: Recorder, expected: number, o: { captureId: number; nodeName: string; recordsPerBatch?: number; onEvent?: (ev: CaptureEvent) => void }) {
  const packets: Buffer[] = [];
  const forwarder = new HepForwarder([memorySender(packets)], { captureId: o.captureId }, { diameterPayload: 'raw', nodeName: new NodeNameTemplate(o.nodeName) });
  const source = new ReplaySource();
  const sink = (ev: CaptureEvent) => {
    o.onEvent?.(ev);
    forwarder.forward(ev);
  };
  const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: memoryContainers(), sink });
  await agent.start();
  for (const batch of rec.batches(o.recordsPerBatch)) source.replay(batch);
  // Names come from the (in-memory) runtime asynchronously; the hold releases each message once they are known.
  while (packets.length < expected) await new Promise((r) => setImmediate(r));
  await agent.stop();
  return { packets, agent };
}

describe('the composition root over recorded records (no kernel)', () => {
  it('forwards a SIP/UDP call and a Diameter exchange between two containers once each, as exact HEP packets', async () => {
    const start = process.hrtime.bigint();
    const rec = new Recorder(start);
    record(rec, 'SIP/UDP', 1);
    record(rec, 'Diameter', 1);
    const summaries: string[] = [];
    const onEvent = (ev: CaptureEvent) => summaries.push(eventSummary(ev));
    const { packets, agent } = await replayed(rec, 5, { captureId: 2001, nodeName: '{project}/{container}', recordsPerBatch: 3, onEvent });

    const hep = packets.map(decodeHep);
    const t0 = hep[0].tsSec! * 1e6 + hep[0].tsUsec!;
    expect(Math.abs(t0 / 1000 - Date.now())).toBeLessThan(5000);
    expect(
      hep.map((p) => ({
        at: p.tsSec! * 1e6 + p.tsUsec! - t0,
        ...{ family: p.family, ipProto: p.ipProto, src: `${p.srcIp}:${p.srcPort}`, dst: `${p.dstIp}:${p.dstPort}` },
        ...{ protoType: p.protoType, captureId: p.captureId, correlationId: p.correlationId, nodeName: p.nodeName },
        payload: p.payload!.toString('latin1'),
        chunks: p.chunks.map((c) => c.type),
      })),
    ).toEqual([
      // Forwarded from the sender's copy, at its capture time: records are 10 µs apart, the receiver's copy in between.
      { at: 0, family: 2, ipProto: 17, src: '127.0.0.1:5070', dst: '127.0.0.1:5060', protoType: 1, captureId: 2001, correlationId: 'SIP/UDP-0', nodeName: 'ims/pcscf', payload: maskedInvite('SIP/UDP-0', 'icid-0').toString('latin1'), chunks: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 17, 15, 19] },
      { at: 20, family: 2, ipProto: 17, src: '127.0.0.1:5060', dst: '127.0.0.1:5070', protoType: 1, captureId: 2001, correlationId: 'SIP/UDP-0', nodeName: 'ims/scscf', payload: ok('SIP/UDP-0').toString('latin1'), chunks: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 17, 15, 19] },
      // The AAR carries the call's icid: correlated to its Call-ID; its answer takes the request's id.
      { at: 40, family: 2, ipProto: 6, src: '127.0.0.1:40000', dst: '127.0.0.1:3868', protoType: 56, captureId: 2001, correlationId: 'SIP/UDP-0', nodeName: 'ims/pcscf', payload: aar('pcscf.ims.test;0', 'icid-0', 1).toString('latin1'), chunks: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 17, 15, 19] },
      { at: 70, family: 2, ipProto: 6, src: '127.0.0.1:3868', dst: '127.0.0.1:40000', protoType: 56, captureId: 2001, correlationId: 'SIP/UDP-0', nodeName: 'ims/scscf', payload: aaa('pcscf.ims.test;0', 1).toString('latin1'), chunks: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 17, 15, 19] },
      // The Cx answer's authentication vector is masked ('X' = 0x58), its length fields untouched.
      { at: 90, family: 2, ipProto: 6, src: '127.0.0.1:3868', dst: '127.0.0.1:40000', protoType: 56, captureId: 2001, correlationId: 'pcscf.ims.test;0;cx', nodeName: 'ims/scscf', payload: maa('pcscf.ims.test;0;cx', 2, 0x58).toString('latin1'), chunks: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 17, 15, 19] },
    ]);
    // What tail shows of each: the AAA answers its AAR 30 µs later.
    expect(summaries).toEqual(['INVITE sip:bob@ims.test', '200 OK', 'AAR Rx', 'AAA 2001 (0 ms)', 'MAA 2001']);
    expect(agent.stats()).toMatchObject({ forwarded: 5, duplicates: 5, redacted: 2, notSip: 0, notDiameter: 0, containers: { unnamed: 0, counterpartMissed: 0 } });
  });

  // Header only: as the kernel records a local connection's reads once the sender's records carried their
  // bytes; each read ends where a write ended, so the assembler pairs it with the sender's messages.
  it.each([['whole', false], ['header only', true]])('counts RFC 5626 keep-alives in front of, between and apart from TCP messages once each, and forwards every message (receiver\'s reads %s)', async (_, receiverHeaderOnly) => {
    const rec = new Recorder(process.hrtime.bigint());
    const sip = { from: PCSCF, to: SCSCF, fromPort: 40000, toPort: 5060, ipProto: 6 as const, l7: L7_SIP, receiverHeaderOnly };
    const back = { from: SCSCF, to: PCSCF, fromPort: 5060, toPort: 40000, ipProto: 6 as const, l7: L7_SIP, receiverHeaderOnly };
    const ping = Buffer.from('\r\n\r\n');
    const pong = Buffer.from('\r\n');
    const [a, b, c] = ['ka-a', 'ka-b', 'ka-c'].map((id) => invite(id, 'icid-ka'));
    // Both ends are local: each write is recorded leaving one socket and entering the other.
    rec.exchange({ ...sip, writes: [Buffer.concat([ping, a])], messages: 1 });
    rec.exchange({ ...back, writes: [Buffer.concat([pong, ok('ka-a')])], messages: 1 });
    rec.exchange({ ...sip, writes: [Buffer.concat([b, ping, c])], messages: 2 });
    rec.exchange({ ...sip, writes: [ping], messages: 0 });
    rec.exchange({ ...back, writes: [pong], messages: 0 });
    const { packets, agent } = await replayed(rec, 4, { captureId: 1, nodeName: '{container}' });

    expect(packets.map((p) => decodeHep(p).payload!.toString('latin1'))).toEqual(
      // The INVITEs' SDES keys are masked (redaction is on by default).
      [maskedInvite('ka-a', 'icid-ka'), ok('ka-a'), maskedInvite('ka-b', 'icid-ka'), maskedInvite('ka-c', 'icid-ka')].map((m) => m.toString('latin1')),
    );
    expect(agent.stats()).toMatchObject({
      forwarded: 4, duplicates: 4, keepAlives: 5, unpairedReceiverCopies: 0, notSip: 0,
      streams: { discardedBytes: 0, localTcp: { pairedReads: receiverHeaderOnly ? 5 : 0, listed: 0, missing: 0 } },
      containers: { counterpartMissed: 0 },
    });
  });

  it('forwards each message of local TCP connections once, whatever the receiver\'s reads, their receivers named', async () => {
    const rec = new Recorder(process.hrtime.bigint());
    // Pipelined INVITEs read in three pieces (framed from the sender's bytes), answers read together (paired).
    record(rec, 'SIP/TCP local', 3);
    const { packets, agent } = await replayed(rec, rec.messages, { captureId: 1, nodeName: '{container}' });
    expect(packets.map((p) => decodeHep(p).correlationId)).toEqual(['SIP/TCP local-0a', 'SIP/TCP local-0b', 'SIP/TCP local-0a', 'SIP/TCP local-0b',
      'SIP/TCP local-1a', 'SIP/TCP local-1b', 'SIP/TCP local-1a', 'SIP/TCP local-1b', 'SIP/TCP local-2a', 'SIP/TCP local-2b', 'SIP/TCP local-2a', 'SIP/TCP local-2b']);
    expect(agent.stats()).toMatchObject({
      forwarded: 12, duplicates: 12, unpairedReceiverCopies: 0, streams: { localTcp: { pairedReads: 3, listed: 0, bytes: 0, missing: 0 } },
      containers: { unnamed: 0, counterpartMissed: 0 },
    });
  });
});
