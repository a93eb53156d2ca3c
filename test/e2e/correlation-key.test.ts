/**
 * Correlation by the operator's own key, on the real kernel with sipp and freeDiameter: two
 * B2BUA-like legs (two Call-IDs) sharing an X-CID (--correlation-header), a test-session header
 * across several calls (--correlation-regex, given as HEPBPF_CORRELATION_REGEX), plain calls, and an
 * Rx AAR/AAA and STR/STA tied by icid to a call carrying X-CID. Only the INVITE carries the key; every
 * message on the wire (tcpdump on lo) must reach the collector with the id expected for it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { startFreeDiameter, type FreeDiameter } from '../helpers/freediameter.js';
import { APP, connectClientPeer, startServerPeer } from '../helpers/diameter-peer.js';
import { TGPP } from '../helpers/diameter.js';
import { sippUac, sippUas, uacScenarioWith } from '../helpers/sipp.js';
import { callIdOf, LoopbackCapture, splitDiameter, splitSip, type WireMessage } from '../helpers/wire.js';

const why = kernelSuiteSkipReason("end-to-end tests of the operator's correlation key");

const CALLS_PER_LEG = 3;
const SESSION_CALLS = 4;
const SESSION_REGEX = 'X-Test-Session: *([^\\r\\n]+)';

const wireKey = (m: WireMessage) => `${m.transport}|${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('base64')}`;
const hepKey = (p: HepPacket) => `${p.ipProto === 17 ? 'udp' : 'tcp'}|${p.srcIp}|${p.srcPort}|${p.dstIp}|${p.dstPort}|${p.payload!.toString('base64')}`;
/** A header's value in a SIP message, read independently of src/. */
const headerOf = (payload: Buffer, name: string) => new RegExp(`\\r\\n${name}[ \\t]*:[ \\t]*([^\\r\\n]+)`, 'i').exec(payload.toString('latin1').split('\r\n\r\n')[0])?.[1].trim();
const hostPort = (ip: string, port: number) => `${ip}:${port}`;
/** Base Diameter messages (no Session-Id): the connection's id. */
const connectionId = (m: WireMessage) => `diameter:${[hostPort(m.srcIp, m.srcPort), hostPort(m.dstIp, m.dstPort)].sort().join('-')}`;

describe.skipIf(!!why)("correlation by the operator's key (--correlation-header, --correlation-regex)", () => {
  let dir: string;
  let agent: RunningAgent;
  let hep: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-corrkey-'));
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url, '--diameter-payload', 'raw', '--correlation-header', 'X-CID'], { ...process.env, HEPBPF_CORRELATION_REGEX: SESSION_REGEX });
  });

  afterAll(async () => {
    const stopped = await agent?.stop();
    expect(stopped?.code).toBe(0);
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('B2BUA legs sharing X-CID, a test session across calls, the Rx of a keyed call: every message carries its expected id', async () => {
    const ports = await Promise.all(Array.from({ length: 11 }, () => freePort()));
    const [uasA, uacA, uasB, uacB, uasS, uacS, uasP, uacP, relayPort, serverPort, clientPort] = ports;
    const run = `${process.pid}-${Date.now()}`;
    const cid = `b2bua-${run}`;
    const session = `session-${run}`;
    const icid = `icid-${run}`;
    const capture = await LoopbackCapture.start(join(dir, 'wire.pcap'), ports);
    const uases = await Promise.all([uasA, uasB, uasS, uasP].map((p) => sippUas(p, 'u1', dir)));
    let server: Awaited<ReturnType<typeof startServerPeer>> | undefined;
    let relay: FreeDiameter | undefined;
    let wire: WireMessage[] = [];
    try {
      server = await startServerPeer(serverPort, 'server.test', []);
      relay = await startFreeDiameter(dir, { identity: 'relay.test', port: relayPort }, [
        { identity: 'server.test', port: serverPort },
        { identity: 'client.test', port: clientPort },
      ]);
      const relayLog = relay.log;
      await until('the relay connected to the server peer', () => /STATE_OPEN'\s+'server\.test'/.test(relayLog()), 15_000);

      // Leg A carries the icid the Rx refers to; call n of each leg shares the X-CID `cid-n`.
      const legA = uacScenarioWith(dir, 'leg-a', [`X-CID: ${cid}-[call_number]`, `P-Charging-Vector: icid-value=${icid}-[call_number];icid-generated-at=[local_ip]`]);
      const legB = uacScenarioWith(dir, 'leg-b', [`x-cid: ${cid}-[call_number]`]);
      const tests = uacScenarioWith(dir, 'session', [`X-Test-Session: ${session}`]);
      const codes = await Promise.all([
        sippUac(uasA, uacA, 'u1', CALLS_PER_LEG, dir, 20, ['-sf', legA]),
        sippUac(uasB, uacB, 'u1', CALLS_PER_LEG, dir, 20, ['-sf', legB]),
        sippUac(uasS, uacS, 'u1', SESSION_CALLS, dir, 20, ['-sf', tests]),
        sippUac(uasP, uacP, 'u1', 2, dir, 20),
      ]);
      expect(codes, 'sipp UACs: every call must succeed').toEqual([0, 0, 0, 0]);

      // The AAR after the calls: the agent reads the kernel's records in order, so it has the icid by then.
      const client = await connectClientPeer(relayPort, 'client.test');
      const sid = `client.test;rx;${run}`;
      expect((await client.request(client.routedRequest(265, APP.rx, sid, [{ code: 505, vendor: TGPP, value: `${icid}-1` }]))).command).toBe(265);
      expect((await client.request(client.routedRequest(275, APP.rx, sid, [{ code: 295, value: 0 }]))).command).toBe(275);
      client.close();
    } finally {
      await Promise.all(uases.map((u) => u.stop()));
      await relay?.stop();
      await server?.close();
      wire = await capture.stop((stream) => (stream[0] === 1 ? splitDiameter(stream) : splitSip(stream)));
    }

    // What each message's id must be, from the wire alone: a Call-ID whose INVITE carried the key has it.
    const keyOfCall = new Map<string, string>();
    for (const m of wire) {
      if (m.payload[0] === 1) continue;
      const key = headerOf(m.payload, 'x-cid') ?? headerOf(m.payload, 'x-test-session');
      if (key && !keyOfCall.has(callIdOf(m.payload)!)) keyOfCall.set(callIdOf(m.payload)!, key);
    }
    const expected = (m: WireMessage) => {
      if (m.payload[0] !== 1) return keyOfCall.get(callIdOf(m.payload)!) ?? callIdOf(m.payload);
      return m.payload.readUInt32BE(8) === APP.rx ? `${cid}-1` : connectionId(m);
    };
    const keys = [...keyOfCall.values()];
    expect(keys.filter((k) => k === session).length, 'calls of the test session').toBe(SESSION_CALLS);
    for (let n = 1; n <= CALLS_PER_LEG; n++) expect(keys.filter((k) => k === `${cid}-${n}`).length, `legs sharing ${cid}-${n}`).toBe(2);
    const rxOnWire = wire.filter((m) => m.payload[0] === 1 && m.payload.readUInt32BE(8) === APP.rx).map((m) => `${m.payload.readUIntBE(5, 3)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    expect(rxOnWire.sort(), `AAR/AAA and STR/STA on both hops\n${relay!.log()}`).toEqual(['265A', '265A', '265R', '265R', '275A', '275A', '275R', '275R']);

    // Message by message: each wire message forwarded once, with its expected id.
    const forwarded = (await hep.waitFor(wire.length)).map((p) => decodeHep(p)).filter((p) => ports.includes(p.srcPort!) || ports.includes(p.dstPort!));
    const idsByMessage = new Map<string, string[]>();
    for (const p of forwarded) idsByMessage.set(hepKey(p), [...(idsByMessage.get(hepKey(p)) ?? []), p.correlationId!]);
    const wrong: string[] = [];
    for (const m of wire) {
      const got = idsByMessage.get(wireKey(m))?.shift();
      if (got !== expected(m)) wrong.push(`${m.payload.toString('latin1', 0, 40).split('\r')[0]} (${callIdOf(m.payload) ?? 'Diameter'}): expected ${expected(m)}, got ${got}`);
    }
    expect(wrong, 'messages with the wrong correlation id or not forwarded').toEqual([]);
    expect(forwarded.length, 'forwarded beyond the wire').toBe(wire.length);
  }, 90_000);
});
