/**
 * Edge cases of the capture spine on the real kernel: IPv6, connected and unconnected UDP,
 * sendmmsg/recvmmsg, a 60 KiB message over TCP, 200 pipelined messages, garbage and half messages.
 * Ground truth is tcpdump on lo; traffic comes from test/fixtures (python3 sockets, a C sendmmsg program).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { callIdOf, LoopbackCapture, type WireMessage } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end edge-case tests');

const FIXTURES = resolve(REPO, 'test/fixtures');
const SIP_START = /^(?:[A-Z]+ \S+ SIP\/2\.0|SIP\/2\.0 \d{3})/;

const key = (transport: string, family: number, src: string, sport: number, dst: string, dport: number, payload: Buffer) =>
  `${transport}|${family}|${src}|${sport}|${dst}|${dport}|${payload.toString('base64')}`;

describe.skipIf(!!why)('capture edge cases', () => {
  let dir: string;
  let agent: RunningAgent;
  let hep: HepCollector;
  let mmsg: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-edge-'));
    mmsg = join(dir, 'mmsg');
    execFileSync('cc', ['-O2', '-Wall', '-o', mmsg, join(FIXTURES, 'mmsg.c')]);
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url]);
  });

  afterAll(async () => {
    expect((await agent?.stop())?.code).toBe(0);
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `traffic(port, port2)` under a capture; returns what crossed lo and what the agent forwarded. */
  async function exchange(name: string, traffic: (port: number, port2: number) => void, ports?: [number, number]) {
    hep.packets.length = 0;
    const [port, port2] = ports ?? [await freePort(), await freePort()];
    const capture = await LoopbackCapture.start(join(dir, `${name}.pcap`), [port, port2]);
    let stopping;
    try {
      traffic(port, port2);
    } finally {
      stopping = capture.stop(); // tcpdump must not outlive a failed test
    }
    const wire = await stopping;
    // Only SIP is forwarded: datagrams of random bytes are on the wire but not ours.
    const expected = wire.filter((m) => SIP_START.test(m.payload.toString('latin1')));
    const packets = await hep.waitFor(expected.length);
    return { wire, expected, forwarded: packets.map((p) => decodeHep(p)) };
  }

  function expectExactly(expected: WireMessage[], forwarded: ReturnType<typeof decodeHep>[]) {
    const want = expected.map((m) => key(m.transport, m.family, m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)).sort();
    const got = forwarded
      .map((p) => key(p.ipProto === 17 ? 'udp' : 'tcp', p.family === 2 ? 4 : 6, p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!))
      .sort();
    // Compare the readable heads first so a failure names the message; then every byte.
    expect(got.map((k) => k.slice(0, 100))).toEqual(want.map((k) => k.slice(0, 100)));
    expect(got).toEqual(want);
    // The Call-ID, or for a message without one (a half message) an id naming its flow: never empty.
    for (const p of forwarded)
      expect(p.correlationId).toBe(callIdOf(p.payload!) ?? `${p.ipProto === 17 ? 'udp' : 'tcp'}:${p.srcIp}:${p.srcPort}-${p.dstIp}:${p.dstPort}`);
  }

  const py = (mode: string) => (port: number, port2: number) => {
    const r = spawnSync('python3', [join(FIXTURES, 'sip_traffic.py'), mode, String(port), String(port2)], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  };

  it('IPv6 UDP with sendto/recvfrom and sendmsg/recvmsg', async () => {
    const { expected, forwarded } = await exchange('udp6', py('udp6'));
    expect(expected.length).toBe(2);
    expect(expected.every((m) => m.family === 6 && m.srcIp === '::1')).toBe(true);
    expectExactly(expected, forwarded);
    expect(forwarded.every((p) => p.family === 10)).toBe(true);
  });

  it('connected UDP (send/recv, write/read) and unconnected UDP (sendto/recvfrom)', async () => {
    const connected = await exchange('udp-connected', py('udp-connected'));
    expect(connected.expected.length).toBe(2);
    expectExactly(connected.expected, connected.forwarded);
    const unconnected = await exchange('udp-unconnected', py('udp-unconnected'));
    expect(unconnected.expected.length).toBe(1);
    expectExactly(unconnected.expected, unconnected.forwarded);
  });

  it('sendmmsg/recvmmsg with 8 datagrams', async () => {
    const { expected, forwarded } = await exchange('mmsg', (port, port2) => {
      expect(spawnSync(mmsg, [String(port2), String(port), '8']).status).toBe(0);
    });
    expect(expected.length).toBe(8);
    expectExactly(expected, forwarded);
  });

  it('a 60 KiB SIP message over TCP arrives whole', async () => {
    const { expected, forwarded } = await exchange('tcp-big', py('tcp-big'));
    expect(expected.length).toBe(1);
    expect(expected[0].payload.length).toBeGreaterThan(60 * 1024);
    expectExactly(expected, forwarded);
  });

  it('a SIP message over 64 KiB is forwarded cut (a prefix of the wire bytes) and the next one whole', async () => {
    const { expected, forwarded } = await exchange('tcp-huge', py('tcp-huge'));
    expect(expected.map((m) => m.payload.length > 100 * 1024)).toEqual([true, false]);
    expect(forwarded.map((p) => p.correlationId)).toEqual(['tcp-huge', 'after-huge']);
    const [cut, next] = forwarded;
    expect(cut.payload!.length).toBeLessThan(65536);
    expect(cut.payload!.equals(expected[0].payload.subarray(0, cut.payload!.length))).toBe(true);
    expect(next.payload!.equals(expected[1].payload)).toBe(true);
  });

  it('200 back-to-back pipelined messages in one TCP stream', async () => {
    const { expected, forwarded } = await exchange('tcp-pipelined', py('tcp-pipelined'));
    expect(expected.length).toBe(200);
    expectExactly(expected, forwarded);
  });

  it('TCP sendto/recvfrom that carry addresses, mixed with send/recv, both ways', async () => {
    const { expected, forwarded } = await exchange('tcp-addressed', py('tcp-addressed'));
    expect(expected.length).toBe(6);
    expectExactly(expected, forwarded);
  });

  it('random bytes and half messages on a SIP port: the agent survives and captures the next message', async () => {
    const { wire, expected, forwarded } = await exchange('garbage', py('garbage'));
    // On the wire: garbage datagram, half datagram, a real datagram; over TCP one full message before the noise and one after.
    expect(wire.length).toBeGreaterThan(expected.length);
    const ids = forwarded.map((p) => p.correlationId);
    expect(ids).toEqual(expect.arrayContaining(['after-garbage-udp', 'tcp-first', 'after-garbage-tcp']));
    expectExactly(expected, forwarded);
    expect(agent.proc.exitCode).toBeNull();
  });

  // Last: it restarts the agent with its ports only, so that the kernel counters are this exchange's.
  it('local UDP: the receiver\'s copy crosses the ring buffer header only, whole when it gave no address buffer', async () => {
    expect((await agent.stop()).code).toBe(0);
    const ports: [number, number] = [await freePort(), await freePort()];
    agent = await startAgent(['run', '--hep', hep.url, '--sip-ports', ports.join(',')]);
    const { expected, forwarded } = await exchange('udp-local-copies', py('udp-local-copies'), ports);
    expect(expected.length).toBe(41);
    expectExactly(expected, forwarded);
    const { code, final } = await agent.stop();
    expect(code).toBe(0);
    const stats = final!.capture as { kernel: Record<string, number>; duplicates: number; forwarded: number; unpairedReceiverCopies: number };
    // 20 to a bound and 20 to a wildcard-bound receiver: header only; the recv() without address: whole.
    expect(stats.kernel).toMatchObject({ receiverCopyReduced: 40, receiverCopyWhole: 1, emitted: 41 + 40 + 1, ringbufFull: 0 });
    expect([stats.forwarded, stats.duplicates, stats.unpairedReceiverCopies]).toEqual([41, 41, 0]);
  });
});
