/**
 * Diameter on the real kernel with real peers: two freeDiameter daemons over TCP (CER/CEA, DWR/DWA,
 * DPR/DPA). Ground truth is tcpdump on lo, framed independently (test/helpers/wire.ts), and
 * tshark's Diameter dissector for the decoding. One agent forwards raw bytes (compared byte by
 * byte), a second one the JSON decoding (compared field by field with tshark).
 */
import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { makeTestCa, startFreeDiameter, type FreeDiameter } from '../helpers/freediameter.js';
import { APP, cer, connectClientPeer, startServerPeer } from '../helpers/diameter-peer.js';
import { diameterMessage, TGPP, type AvpSpec } from '../helpers/diameter.js';
import { sippUas } from '../helpers/sipp.js';
import { until } from '../helpers/wait.js';
import { callIdOf, decryptedTlsStreams, LoopbackCapture, splitDiameter, splitSip, type WireMessage } from '../helpers/wire.js';

// The npm `diameter` package (CommonJS, no types): the Gx/Ro client.
const npmDiameter = createRequire(import.meta.url)('diameter');

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

/**
 * Resolves once `collector` got a DWA on a connection to one of `ports`: a watchdog round is over (Tw is
 * 6 s, and freeDiameter adds up to 2 s of jitter). Only a signal to go on: the test then compares
 * everything the agent forwarded with the wire, which must hold the DWR and DWA.
 */
async function watchdogAnswered(collector: HepCollector, ports: number[], timeoutMs = 30_000): Promise<void> {
  const dwa = (raw: Buffer) => {
    const p = decodeHep(raw);
    return (ports.includes(p.srcPort!) || ports.includes(p.dstPort!)) && p.payload!.length >= 20 && p.payload!.readUIntBE(5, 3) === 280 && !(p.payload![4] & 0x80);
  };
  for (const deadline = Date.now() + timeoutMs; !collector.packets.some(dwa) && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
}

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
    let fdA: FreeDiameter | undefined;
    let fdB: FreeDiameter | undefined;
    let wire: WireMessage[] = [];
    try {
      fdB = await startFreeDiameter(dir, b, [a]);
      fdA = await startFreeDiameter(dir, a, [b]);
      // One watchdog round, then stop (DPR/DPA on the way out).
      await watchdogAnswered(hepRaw, [portA, portB]);
    } finally {
      await fdA?.stop();
      await fdB?.stop();
      wire = await capture.stop(splitDiameter);
    }
    const commands = wire.map((m) => `${m.payload.readUIntBE(5, 3)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    for (const c of ['257R', '257A', '280R', '280A']) expect(commands, fdA!.log() + fdB!.log()).toContain(c);

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

  it('freeDiameter peers over TLS (GnuTLS): every CER/CEA, DWR/DWA, DPR/DPA as tshark decrypts it with the peers\' own session keys, forwarded once', async () => {
    const ca = makeTestCa(dir);
    const keyLog = join(dir, 'tls-keys.log');
    const a = { identity: 'tls-a.test', port: await freePort(), tlsPort: await freePort() };
    const b = { identity: 'tls-b.test', port: await freePort(), tlsPort: await freePort() };
    const pcap = join(dir, 'tls-peers.pcap');
    const capture = await LoopbackCapture.start(pcap, [a.tlsPort, b.tlsPort]);
    const hepBefore = hepRaw.packets.length;
    let fdA: FreeDiameter | undefined;
    let fdB: FreeDiameter | undefined;
    try {
      fdB = await startFreeDiameter(dir, b, [a], { ca, keyLog });
      fdA = await startFreeDiameter(dir, a, [b], { ca, keyLog });
      await watchdogAnswered(hepRaw, [a.tlsPort, b.tlsPort]); // one watchdog round, then DPR/DPA on the way out
    } finally {
      await fdA?.stop();
      await fdB?.stop();
      await capture.stop();
    }
    expect(fdA!.log()).toMatch(/Connected to 'tls-b\.test' \(TCP,TLS/);
    const wire = decryptedTlsStreams(pcap, keyLog, [a.tlsPort, b.tlsPort]).flatMap((s) => splitDiameter(s.payload).map((payload) => ({ ...s, payload })));
    const commands = wire.map((m) => `${m.payload.readUIntBE(5, 3)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    for (const c of ['257R', '257A', '280R', '280A']) expect(commands, fdA!.log() + fdB!.log()).toContain(c);

    const ports = new Set([a.tlsPort, b.tlsPort]);
    const forwarded = (await hepRaw.waitFor(hepBefore + wire.length)).slice(hepBefore).map((p) => decodeHep(p)).filter((p) => ports.has(p.srcPort!) || ports.has(p.dstPort!));
    expect(forwarded.map(hepKey).sort()).toEqual(wire.map(wireKey).sort());
    for (const p of forwarded) {
      expect(p.protoType).toBe(56);
      expect(p.ipProto, 'TLS').toBe(22);
      expect(p.correlationId).toBe(connectionId(p as Required<HepPacket>));
    }
  }, 60_000);

  it('Gx/Ro CCR/CCA (npm diameter), Rx AAR/AAA and Cx MAR/MAA through freeDiameter: Rx/Ro tied to the INVITE by icid, Cx to the REGISTER in progress, secrets masked', async () => {
    hepRaw.packets.length = 0;
    hepJson.packets.length = 0;
    const ports = await Promise.all(Array.from({ length: 6 }, () => freePort()));
    const [relayPort, serverPort, sipUas, sipUac, regUas, regUac] = ports;
    const icid = `hepbpf-icid-${process.pid}-${Date.now()}`;
    const pcap = join(dir, 'apps.pcap');
    const capture = await LoopbackCapture.start(pcap, ports);
    // Secret values no other byte sequence in the exchange contains.
    const secrets: AvpSpec[] = [
      { code: 609, vendor: TGPP, value: Buffer.alloc(32, 0xa5) },
      { code: 610, vendor: TGPP, value: Buffer.alloc(16, 0xa6) },
      { code: 625, vendor: TGPP, value: Buffer.alloc(16, 0xa7) },
      { code: 626, vendor: TGPP, value: Buffer.alloc(16, 0xa8) },
    ];
    const [clientPort, npmPort] = [await freePort(), await freePort()];
    let server: Awaited<ReturnType<typeof startServerPeer>> | undefined;
    let relay: FreeDiameter | undefined;
    const uas = await sippUas(sipUas, 'u1', dir);
    // A registrar that answers the REGISTER after a second, like one waiting for the HSS.
    writeFileSync(join(dir, 'uas-reg.xml'), UAS_REGISTER);
    writeFileSync(join(dir, 'uac-reg.xml'), UAC_REGISTER);
    const registrar = spawn('sipp', ['-sf', 'uas-reg.xml', '-i', '127.0.0.1', '-p', String(regUas), '-t', 'u1', '-nostdin'], { cwd: dir, stdio: 'ignore' });
    let callId = '';
    let wire: WireMessage[] = [];
    try {
      server = await startServerPeer(serverPort, 'server.test', secrets);
      relay = await startFreeDiameter(dir, { identity: 'relay.test', port: relayPort }, [
        { identity: 'server.test', port: serverPort },
        { identity: 'client.test', port: clientPort },
        { identity: 'npm.test', port: npmPort },
      ]);
      const relayLog = relay.log;
      // The relay must have exchanged CER/CEA with the server before it can route to it.
      for (let i = 0; i < 150 && !/STATE_OPEN'\s+'server\.test'/.test(relayLog()); i++) await new Promise((r) => setTimeout(r, 100));

      // The INVITE carrying the icid (sipp UAC, one call).
      const scenario = join(dir, 'uac-pcv.xml');
      writeFileSync(scenario, uacScenario(icid));
      const uac = spawn('sipp', ['-sf', scenario, `127.0.0.1:${sipUas}`, '-i', '127.0.0.1', '-p', String(sipUac), '-t', 'u1', '-m', '1', '-nostdin', '-timeout', '20', '-timeout_error'], { cwd: dir, stdio: 'ignore' });
      expect(await new Promise((r) => uac.once('exit', r)), 'sipp UAC call').toBe(0);

      // Rx and Cx from our own peer (see test/helpers/diameter-peer.ts for why not npm diameter).
      const client = await connectClientPeer(relayPort, 'client.test');
      const req = client.routedRequest;
      const aaa = await client.request(req(265, APP.rx, 'client.test;rx;1', [{ code: 505, vendor: TGPP, value: icid }]));
      expect(aaa.command).toBe(265);
      // Alice's REGISTER is in progress while the S-CSCF asks the HSS for her vectors.
      const reg = spawn('sipp', ['-sf', 'uac-reg.xml', `127.0.0.1:${regUas}`, '-i', '127.0.0.1', '-p', String(regUac), '-t', 'u1', '-m', '1', '-nostdin', '-timeout', '20', '-timeout_error'], { cwd: dir, stdio: 'ignore' });
      const regDone = new Promise((r) => reg.once('exit', r));
      // In progress: the agent has seen it (the registrar answers only after a second).
      const registerSeen = () => hepRaw.packets.some((p) => decodeHep(p).payload!.toString('latin1').startsWith('REGISTER '));
      for (let i = 0; i < 200 && !registerSeen(); i++) await new Promise((r) => setTimeout(r, 50));
      const maa = await client.request(req(303, APP.cx, 'client.test;cx;1', [{ code: 1, value: 'alice@test' }, { code: 601, vendor: TGPP, value: 'sip:alice@test' }]));
      expect(maa.bytes.includes(Buffer.alloc(32, 0xa5)), 'the MAA really carries the vector').toBe(true);
      expect(await regDone, 'sipp REGISTER').toBe(0);
      client.close();

      // Gx and Ro from the npm diameter package.
      await npmCreditControl(relayPort, icid);
    } finally {
      await uas.stop();
      if (registrar.exitCode === null) registrar.kill('SIGTERM');
      await relay?.stop();
      await server?.close();
      wire = await capture.stop((stream) => (stream[0] === 1 ? splitDiameter(stream) : splitSip(stream)));
    }
    callId = callIdOf(wire.find((m) => m.payload.toString('latin1').startsWith('INVITE '))!.payload)!;
    const registerCallId = callIdOf(wire.find((m) => m.payload.toString('latin1').startsWith('REGISTER '))!.payload)!;
    expect(callId).toBeTruthy();
    expect(registerCallId).toBeTruthy();
    const wireDiameter = wire.filter((m) => m.payload[0] === 1);
    const cmds = wireDiameter.map((m) => `${m.payload.readUIntBE(5, 3)}/${m.payload.readUInt32BE(8)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    for (const c of ['265/16777236R', '265/16777236A', '303/16777216R', '303/16777216A', '272/4R', '272/4A', '272/16777238R', '272/16777238A'])
      expect(cmds.filter((x) => x === c).length, `${c} relayed through freeDiameter: ${cmds}\n${relay!.log()}`).toBe(2);

    // Raw: every Diameter message once, byte-exact except the secrets, which are masked in place.
    const mask = (b: Buffer) => {
      const out = Buffer.from(b);
      for (const s of secrets) {
        const v = s.value as Buffer;
        for (let at = out.indexOf(v); at >= 0; at = out.indexOf(v, at + 1)) out.fill(0x58, at, at + v.length);
      }
      return out;
    };
    // SIP: the SDES key of the INVITE's a=crypto line is masked, same length.
    const maskSdes = (b: Buffer) => Buffer.from(b.toString('latin1').replace(SDES_KEY, 'X'.repeat(SDES_KEY.length)), 'latin1');
    expect(wire.some((m) => m.payload.includes(SDES_KEY)), 'the INVITE really carries the key').toBe(true);
    const expected = wire.map((m) => ({ ...m, payload: m.payload[0] === 1 ? mask(m.payload) : maskSdes(m.payload) }));
    const forwarded = (await hepRaw.waitFor(expected.length)).map((p) => decodeHep(p)).filter((p) => ports.includes(p.srcPort!) || ports.includes(p.dstPort!));
    expect(forwarded.map(hepKey).sort()).toEqual(expected.map(wireKey).sort());

    // Correlation: Rx and Ro carry the INVITE's Call-ID, on every hop, requests and answers alike.
    for (const p of forwarded.filter((p) => p.protoType === 56)) {
      const cmd = p.payload!.readUIntBE(5, 3);
      const app = p.payload!.readUInt32BE(8);
      if (app === APP.rx || app === APP.ro) expect(p.correlationId, `${cmd}/${app}`).toBe(callId);
      else if (app === APP.cx) expect(p.correlationId, `${cmd}/${app}`).toBe(registerCallId);
      else if (app === APP.gx) expect(p.correlationId, `${cmd}/${app}`).toBe(sessionIdOf(p.payload!));
      else expect(p.correlationId, `${cmd}/${app}`).toBe(connectionId(p as Required<HepPacket>));
    }
    // JSON: the MAA's SIP-Auth-Data-Item carries masked values only.
    const maaJson = (await hepJson.waitFor(expected.length))
      .map((p) => decodeHep(p))
      .filter((p) => p.protoType === 56)
      .map((p) => JSON.parse(p.payload!.toString()))
      .filter((d) => d.commandCode === 303 && !d.flags.request);
    expect(maaJson.length).toBe(2);
    for (const d of maaJson) {
      const item = d.avps.find((a: AvpJson) => a.name === 'SIP-Auth-Data-Item');
      expect(item.avps.filter((a: AvpJson & { hex?: string }) => a.hex).map((a: AvpJson & { hex?: string }) => [a.name, /^(58)+$/.test(a.hex!)])).toEqual([
        ['SIP-Authenticate', true],
        ['SIP-Authorization', true],
        ['Confidentiality-Key', true],
        ['Integrity-Key', true],
      ]);
    }
  }, 90_000);

  it('a peer the agent cannot see (it sends with sendfile(), not hooked): freeDiameter reads the 4-byte header first, the CER is still forwarded', async () => {
    hepRaw.packets.length = 0;
    const port = await freePort();
    const fd = await startFreeDiameter(dir, { identity: 'solo.test', port }, [{ identity: 'client.test', port: await freePort() }]);
    const sent = [cer('client.test', 0x6000), diameterMessage({ request: true, command: 280, app: 0, hopByHop: 0x6001, endToEnd: 0x6001, avps: [{ code: 264, value: 'client.test' }, { code: 296, value: 'test' }] })];
    const files = sent.map((m, i) => {
      const f = join(dir, `sendfile-${i}.bin`);
      writeFileSync(f, m);
      return f;
    });
    const py = [
      'import socket, sys',
      `s = socket.create_connection(("127.0.0.1", ${port}))`,
      'for f in sys.argv[1:]:',
      '    s.sendfile(open(f, "rb"))',
      '    s.recv(65536)',
      'print(s.getsockname()[1])',
      's.close()',
    ].join('\n');
    let clientPort: number;
    try {
      clientPort = Number(execFileSync('python3', ['-c', py, ...files], { encoding: 'utf8', timeout: 15_000 }).trim());
    } finally {
      await fd.stop();
    }
    const forwarded = (await hepRaw.waitFor(0, 3000, 1500)).map((p) => decodeHep(p)).filter((p) => p.dstPort === port && p.srcPort === clientPort);
    expect(forwarded.map((p) => p.payload!.toString('hex'))).toEqual(sent.map((m) => m.toString('hex')));
    expect(forwarded.every((p) => p.srcIp === '127.0.0.1' && p.correlationId === connectionId(p as Required<HepPacket>))).toBe(true);
  }, 30_000);

  it('malformed input to a Diameter port: counted, the agent survives, the next valid messages are captured', async () => {
    hepRaw.packets.length = 0;
    hepJson.packets.length = 0;
    const serverPort = await freePort();
    const server = await startServerPeer(serverPort, 'server.test', []);
    const client = await connectClientPeer(serverPort, 'client.test');
    const dwr = (n: number) => diameterMessage({ request: true, command: 280, app: 0, hopByHop: 0x7000 + n, endToEnd: 0x7000 + n, avps: [{ code: 264, value: 'client.test' }, { code: 296, value: 'test' }] });
    const tooLong = Buffer.from(dwr(0));
    tooLong.writeUIntBE(0xfffffc, 1, 3); // a 16 MiB claim
    const avpPastEnd = Buffer.from(dwr(0));
    avpPastEnd.writeUIntBE(400, 20 + 5, 3);
    let deep: AvpSpec = { code: 444, value: 'x' };
    for (let i = 0; i < 12; i++) deep = { code: 443, value: [deep] };
    const tooDeep = diameterMessage({ request: true, command: 272, app: 4, hopByHop: 0x7100, endToEnd: 0x7100, avps: [{ code: 263, value: 'deep;1' }, deep] });
    const isForwarded = (m: Buffer) => () => hepRaw.packets.some((p) => decodeHep(p).payload!.equals(m));
    try {
      // Each malformed run in a write of its own: the next goes once the valid DWR after it is out.
      for (const [bad, n] of [[dwr(0).subarray(0, 12), 1], [tooLong.subarray(0, 30), 2], [avpPastEnd, 3]] as const) {
        await client.write(Buffer.concat([bad, dwr(n)]));
        await until(`DWR ${n} after malformed run ${n} forwarded`, isForwarded(dwr(n)));
      }
      await client.write(tooDeep);
      await client.write(dwr(4));
      // The agent forwards the client's messages from its writes: once the last one is out, the rest are.
      await until('the last DWR forwarded', isForwarded(dwr(4)));
    } finally {
      client.close();
      await server.close();
    }
    // A settle, so anything forwarded beyond the expected messages would be seen too.
    const forwarded = (await hepRaw.waitFor(0, 0, 1000)).map((p) => decodeHep(p)).filter((p) => p.srcPort === serverPort || p.dstPort === serverPort);
    const payloads = forwarded.map((p) => p.payload!.toString('hex'));
    for (const m of [dwr(1), dwr(2), dwr(3), tooDeep, dwr(4)]) expect(payloads.filter((x) => x === m.toString('hex')).length).toBe(1);
    // From the client exactly its CER, the four DWRs and the deep CCR (no garbage); from the server only answers.
    const fromClient = forwarded.filter((p) => p.dstPort === serverPort);
    expect(fromClient.map((p) => p.payload!.toString('hex')).sort()).toEqual([cer('client.test', 0x5000), dwr(1), dwr(2), dwr(3), tooDeep, dwr(4)].map((m) => m.toString('hex')).sort());
    expect(forwarded.filter((p) => p.srcPort === serverPort).every((p) => (p.payload![4] & 0x80) === 0)).toBe(true);
    expect(raw.proc.exitCode).toBeNull();
    const deepJson = (await hepJson.waitFor(0, 1000, 500)).map((p) => decodeHep(p)).filter((p) => p.protoType === 56).map((p) => JSON.parse(p.payload!.toString())).find((d) => d.hopByHop === 0x7100 && d.flags.request);
    expect(deepJson.malformed).toMatch(/nested deeper/);
    // Counted: the three malformed runs on the client's stream (its copy and the server's) and the deep AVP.
    const { final } = await raw.stop();
    const capture = final!.capture as { streams: { diameter: { malformed: number } }; diameterMalformed: number };
    expect(capture.streams.diameter.malformed).toBeGreaterThanOrEqual(3);
    expect(capture.diameterMalformed).toBe(1);
  }, 30_000);
});

const sessionIdOf = (payload: Buffer) => {
  for (let o = 20; o + 8 <= payload.length; ) {
    const len = payload.readUIntBE(o + 5, 3);
    if (payload.readUInt32BE(o) === 263) return payload.toString('utf8', o + 8, o + len);
    o += (len + 3) & ~3;
  }
  return undefined;
};

/** An SDES master key||salt (base64, 40 characters) in the INVITE's SDP: must never leave the agent. */
const SDES_KEY = 'PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR';

const UAC_REGISTER = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="REGISTER alice">
  <send retrans="500"><![CDATA[
REGISTER sip:test SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@test>;tag=[pid]reg[call_number]
To: <sip:alice@test>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
Authorization: Digest username="alice@test", realm="test", uri="sip:test", nonce="", response=""
Max-Forwards: 70
Expires: 600
Content-Length: 0

]]></send>
  <recv response="200"></recv>
</scenario>
`;

const UAS_REGISTER = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar">
  <recv request="REGISTER"></recv>
  <pause milliseconds="1000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]regok[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:alice@[remote_ip]:[remote_port]>;expires=600
Content-Length: 0

]]></send>
</scenario>
`;

/** A sipp UAC scenario whose INVITE carries a P-Charging-Vector with this icid, and SDES keys in its SDP. */
function uacScenario(icid: string): string {
  return `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac with P-Charging-Vector">
  <send retrans="500"><![CDATA[
INVITE sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: sut <sip:service@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
P-Charging-Vector: icid-value=${icid};icid-generated-at=[local_ip]
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:${SDES_KEY}|2^20|1:32
a=rtpmap:0 PCMU/8000

]]></send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="200" rtd="true"></recv>
  <send><![CDATA[
ACK sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: sut <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
BYE sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: sut <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"></recv>
</scenario>
`;
}

/** Gx and Ro Credit-Control through the relay with the npm diameter package; the Ro CCR carries the icid. */
async function npmCreditControl(port: number, icid: string): Promise<void> {
  const socket = npmDiameter.createConnection({ host: '127.0.0.1', port, timeout: 5000 }, () => undefined);
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  const conn = socket.diameterConnection;
  socket.on('diameterMessage', (ev: { message: { command: string }; response: { body: unknown[] }; callback(r: unknown): void }) => {
    if (ev.message.command === 'Device-Watchdog') {
      ev.response.body.push(['Result-Code', 'DIAMETER_SUCCESS'], ['Origin-Host', 'npm.test'], ['Origin-Realm', 'test']);
      ev.callback(ev.response);
    }
  });
  const send = (app: string, command: string, sid: string | undefined, body: unknown[]) => {
    const r = conn.createRequest(app, command, sid);
    if (sid === undefined) r.body = []; // CER has no Session-Id
    r.header.flags.proxiable = command !== 'Capabilities-Exchange';
    r.body.push(...body);
    return conn.sendRequest(r);
  };
  const ok = (a: { body: Array<[string, unknown]> }) => expect(a.body.find(([n]) => n === 'Result-Code')?.[1]).toBe('DIAMETER_SUCCESS');
  ok(
    await send('Diameter Common Messages', 'Capabilities-Exchange', undefined, [
      ['Origin-Host', 'npm.test'],
      ['Origin-Realm', 'test'],
      ['Host-IP-Address', '127.0.0.1'],
      ['Vendor-Id', 0],
      ['Product-Name', 'npm-diameter'],
      ['Auth-Application-Id', 4],
      ['Auth-Application-Id', 16777238],
    ]),
  );
  const common = (app: number) => [
    ['Origin-Host', 'npm.test'],
    ['Origin-Realm', 'test'],
    ['Destination-Realm', 'test'],
    ['Destination-Host', 'server.test'],
    ['Auth-Application-Id', app],
    ['CC-Request-Type', 1],
    ['CC-Request-Number', 0],
  ];
  ok(await send('3GPP Gx', 'Credit-Control', 'npm.test;gx;1', common(16777238)));
  ok(
    await send('Diameter Credit Control Application', 'Credit-Control', 'npm.test;ro;1', [
      ...common(4),
      ['Service-Context-Id', '32260@3gpp.org'],
      ['Service-Information', [['IMS-Information', [['IMS-Charging-Identifier', icid]]]]],
    ]),
  );
  socket.destroy();
}
