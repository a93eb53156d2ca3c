/**
 * Diameter on the real kernel with real peers: two freeDiameter daemons over TCP (CER/CEA, DWR/DWA,
 * DPR/DPA). Ground truth is tcpdump on lo, framed independently (test/helpers/wire.ts), and
 * tshark's Diameter dissector for the decoding. One agent forwards raw bytes (compared byte by
 * byte), a second one the JSON decoding (compared field by field with tshark).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { startFreeDiameter } from '../helpers/freediameter.js';
import { LoopbackCapture, splitDiameter, type WireMessage } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end Diameter tests');

/** What tshark's dissector says about each Diameter PDU in a capture. */
interface TsharkPdu {
  cmd: number;
  request: boolean;
  app: number;
  hopByHop: number;
  endToEnd: number;
  avpCodes: number[];
  originHost?: string;
}

function tsharkDecode(pcap: string, ports: number[]): TsharkPdu[] {
  const args = ['-r', pcap, ...ports.flatMap((p) => ['-d', `tcp.port==${p},diameter`]), '-Y', 'diameter', '-T', 'pdml'];
  const pdml = execFileSync('tshark', args, { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  const field = (block: string, name: string) => new RegExp(`<field name="${name.replace(/\./g, '\\.')}"[^>]*?show="([^"]*)"`).exec(block)?.[1];
  return pdml
    .split('<proto name="diameter"')
    .slice(1)
    .map((block) => block.slice(0, block.indexOf('\n  </proto>') >>> 0))
    .map((block) => ({
      cmd: Number(field(block, 'diameter.cmd.code')),
      request: field(block, 'diameter.flags.request') === 'True' || field(block, 'diameter.flags.request') === '1',
      app: Number(field(block, 'diameter.applicationId')),
      hopByHop: Number(field(block, 'diameter.hopbyhopid')),
      endToEnd: Number(field(block, 'diameter.endtoendid')),
      avpCodes: [...block.matchAll(/<field name="diameter\.avp\.code"[^>]*?show="(\d+)"/g)].map((m) => Number(m[1])),
      originHost: field(block, 'diameter.Origin-Host'),
    }));
}

interface AvpJson {
  code: number;
  name?: string;
  value?: unknown;
  avps?: AvpJson[];
}
const flatCodes = (avps: AvpJson[]): number[] => avps.flatMap((a) => [a.code, ...(a.avps ? flatCodes(a.avps) : [])]);

const hostPort = (ip: string, port: number) => `${ip}:${port}`;
/** The correlation id README promises for base messages: the two ends of the connection, lower first. */
const connectionId = (m: { srcIp: string; srcPort: number; dstIp: string; dstPort: number }) =>
  `diameter:${[hostPort(m.srcIp, m.srcPort), hostPort(m.dstIp, m.dstPort)].sort().join('-')}`;

const wireKey = (m: WireMessage) => `${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('hex')}`;
const hepKey = (p: HepPacket) => `${p.srcIp}|${p.srcPort}|${p.dstIp}|${p.dstPort}|${p.payload!.toString('hex')}`;

describe.skipIf(!!why)('Diameter between real freeDiameter peers', () => {
  let dir: string;
  let raw: RunningAgent;
  let json: RunningAgent;
  let hepRaw: HepCollector;
  let hepJson: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-diameter-'));
    [hepRaw, hepJson] = [await udpCollector(), await udpCollector()];
    raw = await startAgent(['run', '--hep', hepRaw.url, '--diameter-payload', 'raw']);
    json = await startAgent(['run', '--hep', hepJson.url]);
  });

  afterAll(async () => {
    expect((await raw?.stop())?.code).toBe(0);
    expect((await json?.stop())?.code).toBe(0);
    await hepRaw?.close();
    await hepJson?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every CER/CEA, DWR/DWA, DPR/DPA forwarded once, byte-exact, decoded as tshark decodes it', async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    const a = { identity: 'a.test', port: portA };
    const b = { identity: 'b.test', port: portB };
    const pcap = join(dir, 'peers.pcap');
    const capture = await LoopbackCapture.start(pcap, [portA, portB]);
    const fdB = await startFreeDiameter(dir, b, [a]);
    const fdA = await startFreeDiameter(dir, a, [b]);
    try {
      // Tw is 6 s: wait for one watchdog round, then stop (DPR/DPA on the way out).
      await new Promise((r) => setTimeout(r, 8000));
    } finally {
      await fdA.stop();
      await fdB.stop();
    }
    const wire = await capture.stop(splitDiameter);
    const commands = wire.map((m) => `${m.payload.readUIntBE(5, 3)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    for (const c of ['257R', '257A', '280R', '280A']) expect(commands, fdA.log() + fdB.log()).toContain(c);

    // Raw payloads: exactly the wire's messages, once each, with their addresses and the connection's id.
    const forwardedRaw = (await hepRaw.waitFor(wire.length)).map((p) => decodeHep(p));
    expect(forwardedRaw.map(hepKey).sort()).toEqual(wire.map(wireKey).sort());
    for (const p of forwardedRaw) {
      expect(p.protoType).toBe(56);
      expect(p.ipProto).toBe(6);
      expect(p.correlationId).toBe(connectionId(p as Required<HepPacket>));
    }

    // JSON payloads: the same messages, decoded as tshark decodes them.
    const forwardedJson = (await hepJson.waitFor(wire.length)).map((p) => decodeHep(p));
    expect(forwardedJson.length).toBe(wire.length);
    const truth = tsharkDecode(pcap, [portA, portB]);
    expect(truth.length).toBe(wire.length);
    // Matched by command, ids and direction flag; each tshark PDU is used once.
    const idsOf = (cmd: number, hbh: number, e2e: number, req: boolean) => `${cmd}:${hbh}:${e2e}:${req}`;
    const left = truth.map((t) => ({ key: idsOf(t.cmd, t.hopByHop, t.endToEnd, t.request), t }));
    for (const p of forwardedJson) {
      expect(p.protoType).toBe(56);
      const d = JSON.parse(p.payload!.toString());
      const i = left.findIndex((l) => l.key === idsOf(d.commandCode, d.hopByHop, d.endToEnd, d.flags.request));
      expect(i, JSON.stringify(d)).toBeGreaterThanOrEqual(0);
      const t = left.splice(i, 1)[0].t;
      expect({ cmd: d.commandCode, app: d.applicationId, avpCodes: flatCodes(d.avps) }).toEqual({ cmd: t.cmd, app: t.app, avpCodes: t.avpCodes });
      expect(d.avps.find((x: AvpJson) => x.name === 'Origin-Host')?.value).toBe(t.originHost);
      expect(p.correlationId).toBe(connectionId(p as Required<HepPacket>));
    }
  }, 60_000);
});
