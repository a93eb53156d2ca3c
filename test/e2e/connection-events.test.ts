/**
 * Connection events on the real agent (bpf/conn_events.bpf.h, src/enrich/connection-events.ts):
 * TCP connect, accept and close of a SIP connection, sent as HEP type 100 with the Call-ID of the SIP
 * it carried, and a TLS handshake that fails certificate verification against Kamailio, with both ends.
 * Ground truth: the test's own sockets (TCP), and for TLS the client's own error and ports.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { startKamailioTlsHop, type KamailioTlsHop } from '../helpers/kamailio-tls.js';
import { startTail, type RunningTail } from '../helpers/tail.js';

const why = kernelSuiteSkipReason('end-to-end connection event tests');

interface EventJson {
  Protocol: string;
  Event: string;
  Status: string;
  Message: string;
}
const eventsOf = (c: HepCollector) =>
  c.packets.map((raw) => decodeHep(raw)).filter((p) => p.protoType === 100).map((p) => ({ p, json: JSON.parse(p.payload!.toString()) as EventJson }));
const ends = (p: HepPacket) => `${p.srcIp}:${p.srcPort} -> ${p.dstIp}:${p.dstPort}`;

/** One TCP connection to a server on `host`: INVITE, 200 OK, then both ends close. Its ports are the ground truth. */
async function inviteOverTcp(callId: string, host = '127.0.0.1'): Promise<{ clientPort: number; serverPort: number }> {
  const invite = Buffer.from(`INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-1\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n`);
  const ok = Buffer.from(`SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-1\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n`);
  let serverSide: Socket | undefined;
  const serverRead: Buffer[] = [];
  const server = createServer((s) => {
    serverSide = s;
    s.on('data', (d) => {
      serverRead.push(d);
      if (Buffer.concat(serverRead).length === invite.length) s.write(ok);
    });
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const serverPort = (server.address() as AddressInfo).port;
  const client = createConnection(serverPort, host);
  const clientRead: Buffer[] = [];
  client.on('data', (d) => clientRead.push(d));
  await new Promise<void>((r) => client.once('connect', () => r()));
  const clientPort = client.localPort!;
  client.write(invite);
  await until('client read the 200', () => Buffer.concat(clientRead).length === ok.length);
  await new Promise<void>((r) => {
    client.end(() => undefined);
    serverSide!.once('end', () => serverSide!.end(r));
  });
  server.close();
  return { clientPort, serverPort };
}

describe.skipIf(!!why)('connection events', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let hep: HepCollector;
  let agent: RunningAgent;
  let tail: RunningTail;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-conn-'));
    env = { ...process.env, HEPBPF_SOCKET: join(dir, 'run', 'hepbpf.sock') };
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url, '--connection-events'], env);
    tail = await startTail([], env);
  });

  afterAll(async () => {
    await tail?.stop();
    await agent?.stop();
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('TCP: connect, accept and close of a SIP connection, each with its Call-ID, in time order around the SIP', async () => {
    const callId = `conn-tcp-${process.pid}`;
    const { clientPort, serverPort } = await inviteOverTcp(callId);
    await until('4 events of the connection', () => eventsOf(hep).filter(({ p }) => p.correlationId === callId).length >= 4);
    await hep.waitFor(0, 1, 500);

    const wire = `127.0.0.1:${clientPort} -> 127.0.0.1:${serverPort}`;
    const events = eventsOf(hep).filter(({ p }) => p.srcPort === clientPort || p.dstPort === clientPort);
    // Both ends' sockets are on this host: the client's CONNECTED and CLOSED, the server's ACCEPTED and CLOSED.
    expect(events.map(({ p, json }) => `${json.Protocol} ${json.Event} ${json.Status} ${ends(p)} ${p.correlationId}`).sort()).toEqual(
      [`TCP ACCEPTED SUCCESS ${wire} ${callId}`, `TCP CLOSED SUCCESS ${wire} ${callId}`, `TCP CLOSED SUCCESS ${wire} ${callId}`, `TCP CONNECTED SUCCESS ${wire} ${callId}`].sort(),
    );
    // Dated when they happened: connect and accept before the INVITE, the closes after the 200.
    const ts = (p: HepPacket) => p.tsSec! * 1e6 + p.tsUsec!;
    const sip = hep.packets.map((raw) => decodeHep(raw)).filter((p) => p.protoType === 1 && p.correlationId === callId);
    expect(sip.map((p) => p.payload!.toString().split('\r\n')[0])).toEqual(['INVITE sip:b@127.0.0.1 SIP/2.0', 'SIP/2.0 200 OK']);
    for (const { p, json } of events) {
      if (json.Event === 'CLOSED') expect(ts(p)).toBeGreaterThanOrEqual(ts(sip[1]));
      else expect(ts(p)).toBeLessThanOrEqual(ts(sip[0]));
    }
    await tail.waitForOutput((out) => out.split('\n').filter((l) => l.includes(callId) && l.includes('TCP CLOSED')).length === 2);
    expect(tail.out()).toContain(`127.0.0.1:${clientPort} -> 127.0.0.1:${serverPort} TCP`);
  });

  describe('TLS handshake failure against Kamailio', () => {
    let hop: KamailioTlsHop;

    beforeAll(async () => {
      hop = await startKamailioTlsHop(dir);
    });

    afterAll(async () => {
      await hop?.stop();
    });

    it('a client failing certificate verification: both sides\' failures reach the collector and tail, with both ends', async () => {
      // Python's ssl with the system CAs: Kamailio's self-signed certificate fails verification in SSL_do_handshake.
      const script = join(dir, 'verify_fail.py');
      writeFileSync(
        script,
        `import socket, ssl, sys
ctx = ssl.create_default_context()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
try:
    ctx.wrap_socket(s, server_hostname="kamailio-core.test")
except ssl.SSLCertVerificationError as e:
    print("verify failed:", e.verify_message, flush=True)
    s.close()
    sys.exit(0)
sys.exit(1)
`,
      );
      const py = spawn('python3', [script, String(hop.corePort)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      py.stdout!.on('data', (d) => (out += d));
      const code = await new Promise((r) => py.once('exit', r));
      expect(code, out).toBe(0);
      expect(out).toContain('verify failed');
      const clientPort = Number(out.split('\n')[0]);
      const wire = `127.0.0.1:${clientPort} -> 127.0.0.1:${hop.corePort}`;
      const failures = () => eventsOf(hep).filter(({ p }) => p.srcPort === clientPort || p.dstPort === clientPort);
      // Fewer: the assertion below shows every event that came.
      await until('both handshake failures', () => failures().length >= 2).catch(() => undefined);
      await hep.waitFor(0, 1, 500);
      const all = eventsOf(hep).map(({ p, json }) => `${json.Event} ${json.Status} ${ends(p)} ${json.Message}`).join('\n');
      expect(failures().map(({ p, json }) => `${json.Protocol} ${json.Event} ${json.Status} ${ends(p)} ${p.correlationId}`).sort(), all).toEqual(
        [`TLS ACCEPTED FAILURE ${wire} tls:${wire.replace(' -> ', '-')}`, `TLS CONNECTED FAILURE ${wire} tls:${wire.replace(' -> ', '-')}`].sort(),
      );
      expect(failures().map(({ json }) => json.Message).sort()).toEqual([
        'TLS handshake failed: SSL_accept returned -1, then the connection closed',
        'TLS handshake failed: SSL_do_handshake returned -1, then the connection closed',
      ]);
      await tail.waitForOutput((o) => o.split('\n').filter((l) => l.includes(`127.0.0.1:${clientPort}`) && l.includes('TLS handshake failed')).length === 2);
    });
  });

  describe('with selective forwarding', () => {
    // Two agents beside the first: one selecting a Call-ID, one an address; one call each on its own connection.
    let byCallId: { hep: HepCollector; agent: RunningAgent };
    let byAddress: { hep: HepCollector; agent: RunningAgent };
    const selectedCall = `conn-sel-${process.pid}`;
    const otherCall = `conn-other-${process.pid}`;

    const start = async (args: string[]) => {
      const c = await udpCollector();
      return { hep: c, agent: await startAgent(['run', '--hep', c.url, '--connection-events', ...args], env) };
    };

    beforeAll(async () => {
      byCallId = await start(['--call-id', selectedCall]);
      byAddress = await start(['--address', '127.0.0.2']);
    });

    afterAll(async () => {
      for (const a of [byCallId, byAddress]) {
        await a?.agent.stop();
        await a?.hep.close();
      }
    });

    it('only the events of connections that carried selected messages, with their Call-ID; the others counted as filtered', async () => {
      const a = await inviteOverTcp(selectedCall); // 127.0.0.1 -> 127.0.0.1
      const b = await inviteOverTcp(otherCall, '127.0.0.2'); // 127.0.0.1 -> 127.0.0.2
      const wireA = `127.0.0.1:${a.clientPort} -> 127.0.0.1:${a.serverPort}`;
      const wireB = `127.0.0.1:${b.clientPort} -> 127.0.0.2:${b.serverPort}`;
      const fourEvents = (wire: string, callId: string) => ['ACCEPTED', 'CLOSED', 'CLOSED', 'CONNECTED'].map((e) => `TCP ${e} SUCCESS ${wire} ${callId}`);
      const eventsOn = (c: HepCollector, ...ports: number[]) =>
        eventsOf(c).filter(({ p }) => ports.includes(p.srcPort!) || ports.includes(p.dstPort!)).map(({ p, json }) => `${json.Protocol} ${json.Event} ${json.Status} ${ends(p)} ${p.correlationId}`).sort();
      // The agent without filters saw all eight: the connections are complete.
      await until('8 events on the unfiltered agent', () => eventsOn(hep, a.clientPort, b.clientPort).length >= 8);
      expect(eventsOn(hep, a.clientPort, b.clientPort)).toEqual([...fourEvents(wireA, selectedCall), ...fourEvents(wireB, otherCall)].sort());
      await until('4 events on each selective agent', () => eventsOn(byCallId.hep, a.clientPort).length >= 4 && eventsOn(byAddress.hep, b.clientPort).length >= 4);
      // Stopped, the agents send or leave out what still waits: then nothing more can come.
      const stats: number[] = [];
      for (const x of [byCallId, byAddress]) {
        const { code, final } = await x.agent.stop();
        expect(code).toBe(0);
        stats.push((final as { capture: { selection: { filtered: { selection: number } } } }).capture.selection.filtered.selection);
      }
      await byAddress.hep.waitFor(0, 1, 500);
      expect(eventsOn(byCallId.hep, a.clientPort, b.clientPort)).toEqual(fourEvents(wireA, selectedCall).sort());
      expect(eventsOn(byAddress.hep, a.clientPort, b.clientPort)).toEqual(fourEvents(wireB, otherCall).sort());
      const ports = [a.clientPort, b.clientPort];
      const sipOf = (c: HepCollector) =>
        c.packets.map((raw) => decodeHep(raw)).filter((p) => p.protoType === 1 && (ports.includes(p.srcPort!) || ports.includes(p.dstPort!))).map((p) => p.correlationId);
      expect([sipOf(byCallId.hep), sipOf(byAddress.hep)]).toEqual([[selectedCall, selectedCall], [otherCall, otherCall]]);
      // Each left out the other call: its INVITE, its 200 and its connection's four events (and any other traffic of the host).
      for (const filtered of stats) expect(filtered).toBeGreaterThanOrEqual(6);
    });
  });
});

