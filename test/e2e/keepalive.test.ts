/**
 * RFC 5626 keep-alives on the real agent: a CRLFCRLF ping or CRLF pong written in front of a message
 * (RFC 3261 7.5), alone, or between pipelined messages must not hide the connection from the kernel's
 * protocol inference, and each is counted once (both ends are on this host: two copies of each).
 * Ground truth is tcpdump on lo; traffic comes from test/fixtures/sip_traffic.py (python3 sockets).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { LoopbackCapture } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end keep-alive tests');

const key = (src: string, sport: number, dst: string, dport: number, payload: Buffer) => `${src}|${sport}|${dst}|${dport}|${payload.toString('latin1')}`;

describe.skipIf(!!why)('SIP keep-alives over TCP', () => {
  let dir: string;
  let agent: RunningAgent;
  let hep: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-keepalive-'));
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url]);
  });

  afterAll(async () => {
    await agent?.stop();
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('captures every message after a keep-alive and counts each ping and pong once', async () => {
    const port = await freePort();
    const capture = await LoopbackCapture.start(join(dir, 'keepalive.pcap'), [port]);
    let stopping;
    try {
      const r = spawnSync('python3', [resolve(REPO, 'test/fixtures/sip_traffic.py'), 'tcp-keepalive', String(port)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    } finally {
      stopping = capture.stop(); // tcpdump must not outlive a failed test
    }
    const wire = await stopping;
    // 10 requests and their 10 answers, then 3 pipelined requests; the ground truth splits without the CR/LF runs.
    expect(wire.length).toBe(23);
    const forwarded = (await hep.waitFor(wire.length)).map((p) => decodeHep(p));
    const want = wire.map((m) => key(m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)).sort();
    const got = forwarded.map((p) => key(p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!)).sort();
    expect(got.map((k) => k.slice(0, 100))).toEqual(want.map((k) => k.slice(0, 100)));
    expect(got).toEqual(want);

    const { code, final } = await agent.stop();
    expect(code).toBe(0);
    const stats = final!.capture as { keepAlives: number; forwarded: number; streams: { discardedBytes: number } };
    // 10 pings in front of requests, 5 pongs in front of answers, a ping and a pong alone, 2 pings between pipelined requests.
    expect(stats.keepAlives).toBe(19);
    expect(stats.forwarded).toBe(23);
    expect(stats.streams.discardedBytes).toBe(0);
    expect(hep.packets.length).toBe(23);
  });
});
