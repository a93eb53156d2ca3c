/**
 * The capture spine end to end: sipp UAC/UAS on the real kernel, the agent run as a user runs it,
 * ground truth from tcpdump on lo. Every SIP message on the wire must reach the collectors exactly
 * once, byte for byte, with the right addresses, ports, IP protocol and Call-ID as correlation id.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, tcpCollector, udpCollector, type HepCollector } from '../helpers/collector.js';
import { sippUac, sippUas } from '../helpers/sipp.js';
import { callIdOf, LoopbackCapture, type WireMessage } from '../helpers/wire.js';
import { startSipCapture, startSngrep } from '../helpers/receivers.js';

const hepjs = createRequire(import.meta.url)('hep-js') as { decapsulate(b: Buffer): { rcinfo: Record<string, unknown>; payload: string } };

const why = kernelSuiteSkipReason('end-to-end SIP capture tests');

const CAPTURE_ID = 2001;
const CALLS = 100;

/** One line per message: what must match between the wire and HEP, payload included. */
const wireKey = (m: WireMessage) => `${m.transport}|${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('base64')}`;
const hepKey = (p: HepPacket) =>
  `${p.ipProto === 17 ? 'udp' : p.ipProto === 6 ? 'tcp' : `proto${p.ipProto}`}|${p.srcIp}|${p.srcPort}|${p.dstIp}|${p.dstPort}|${p.payload!.toString('base64')}`;

function counts(keys: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}

/** Asserts the HEP packets carry exactly the wire's messages (as a multiset) and well-formed HEP fields. */
export function expectSameMessages(wire: WireMessage[], packets: Buffer[], startUs: number): HepPacket[] {
  const decoded = packets.map((p) => decodeHep(p));
  const missing: string[] = [];
  const hepCounts = counts(decoded.map(hepKey));
  for (const [k, n] of counts(wire.map(wireKey))) if ((hepCounts.get(k) ?? 0) !== n) missing.push(`${k.slice(0, 120)}: wire ${n}, hep ${hepCounts.get(k) ?? 0}`);
  expect(missing, 'messages on the wire not forwarded exactly once').toEqual([]);
  expect(decoded.length, 'HEP packets beyond the wire messages').toBe(wire.length);
  const nowUs = Date.now() * 1000;
  for (const p of decoded) {
    expect(p.protoType).toBe(1);
    expect(p.captureId).toBe(CAPTURE_ID);
    expect(p.family).toBe(2);
    expect(p.correlationId).toBe(callIdOf(p.payload!));
    const ts = p.tsSec! * 1e6 + p.tsUsec!;
    expect(ts).toBeGreaterThanOrEqual(startUs - 1e6);
    expect(ts).toBeLessThanOrEqual(nowUs);
  }
  return decoded;
}

describe.skipIf(!!why)('SIP over UDP and TCP, sipp to sipp', () => {
  let dir: string;
  let agent: RunningAgent;
  let hepUdp: HepCollector;
  let hepTcp: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-e2e-'));
    hepUdp = await udpCollector();
    hepTcp = await tcpCollector();
    agent = await startAgent(['run', '--hep', hepUdp.url, '--hep', hepTcp.url, '--hep-id', String(CAPTURE_ID)]);
  });

  afterAll(async () => {
    const stopped = await agent?.stop();
    expect(stopped?.code).toBe(0);
    await hepUdp?.close();
    await hepTcp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const transport of ['u1', 't1'] as const) {
    it(`forwards every message of ${CALLS} calls over ${transport === 'u1' ? 'UDP' : 'TCP'} once, byte-identical`, async () => {
      hepUdp.packets.length = 0;
      hepTcp.packets.length = 0;
      const uasPort = await freePort();
      const uacPort = await freePort();
      const startUs = Date.now() * 1000;
      const capture = await LoopbackCapture.start(join(dir, `${transport}.pcap`), [uasPort, uacPort]);
      const uas = await sippUas(uasPort, transport, dir);
      const code = await sippUac(uasPort, uacPort, transport, CALLS, dir);
      await uas.stop();
      const wire = await capture.stop();
      expect(code, 'sipp UAC: every call must succeed').toBe(0);
      // sipp's default scenarios: INVITE, 180, 200, ACK, BYE, 200 per call (more if UDP retransmits).
      expect(wire.length).toBeGreaterThanOrEqual(CALLS * 6);
      expect(new Set(wire.map((m) => m.transport))).toEqual(new Set([transport === 'u1' ? 'udp' : 'tcp']));

      const viaUdp = expectSameMessages(wire, await hepUdp.waitFor(wire.length), startUs);
      expectSameMessages(wire, await hepTcp.waitFor(wire.length), startUs);

      // An independent decoder agrees (hep-js is reliable for IPv4 SIP only).
      for (const [i, raw] of hepUdp.packets.entries()) {
        const { rcinfo, payload } = hepjs.decapsulate(raw);
        expect(rcinfo).toMatchObject({
          protocolFamily: 2,
          srcIp: viaUdp[i].srcIp,
          dstIp: viaUdp[i].dstIp,
          srcPort: viaUdp[i].srcPort,
          dstPort: viaUdp[i].dstPort,
          payloadType: 1,
          captureId: CAPTURE_ID,
          correlation_id: viaUdp[i].correlationId,
        });
        expect(payload).toBe(viaUdp[i].payload!.toString());
      }
    });
  }
});

describe.skipIf(!!why)('real HEP receivers: Kamailio sipcapture and sngrep', () => {
  it(`store every message of ${CALLS} UDP calls as the wire carried it`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hepbpf-receivers-'));
    const sipcapture = await startSipCapture(dir, await freePort());
    const sngrep = await startSngrep(dir, await freePort());
    const agent = await startAgent(['run', '--hep', `udp://127.0.0.1:${sipcapture.port}`, '--hep', `udp://127.0.0.1:${sngrep.port}`]);
    try {
      const [uasPort, uacPort] = [await freePort(), await freePort()];
      const capture = await LoopbackCapture.start(join(dir, 'wire.pcap'), [uasPort, uacPort]);
      const uas = await sippUas(uasPort, 'u1', dir);
      const code = await sippUac(uasPort, uacPort, 'u1', CALLS, dir);
      await uas.stop();
      const wire = await capture.stop();
      expect(code, 'sipp UAC: every call must succeed').toBe(0);
      expect(wire.length).toBeGreaterThanOrEqual(CALLS * 6);

      const want = wire.map((m) => `${callIdOf(m.payload)}|${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('latin1')}`).sort();
      for (let i = 0; i < 100 && sipcapture.rows().length < wire.length; i++) await new Promise((r) => setTimeout(r, 100));
      const rows = sipcapture.rows();
      expect(rows.map((r) => `${r.callid}|${r.source_ip}|${r.source_port}|${r.destination_ip}|${r.destination_port}|${r.msg}`).sort()).toEqual(want);
      // proto is Kamailio's own transport enum, where 1 is PROTO_UDP.
      expect(rows.filter((r) => r.correlation_id !== r.callid || r.proto !== 1).slice(0, 2)).toEqual([]);

      await agent.stop();
      const seen = await sngrep.stop();
      expect(seen.map((m) => `${callIdOf(m.payload)}|${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('latin1')}`).sort()).toEqual(want);
    } finally {
      await agent.stop();
      await sngrep.stop().catch(() => []);
      await sipcapture.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
