/**
 * RFC 5626 keep-alives on the real agent: a CRLFCRLF ping or CRLF pong written in front of a message
 * (RFC 3261 7.5), alone, or between pipelined messages must not hide the connection from the kernel's
 * protocol inference, and each is counted once (both ends are on this host: two copies of each).
 * Ground truth: tcpdump on lo for TCP (traffic from test/fixtures/sip_traffic.py); for TLS, what the
 * test wrote into Node tls peers (test/fixtures/tls_pipe.mjs) and what each peer decrypted.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, REPO, startAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { LoopbackCapture } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end keep-alive tests');

const PING = Buffer.from('\r\n\r\n');
const PONG = Buffer.from('\r\n');

const key = (src: string, sport: number, dst: string, dport: number, payload: Buffer) => `${src}|${sport}|${dst}|${dport}|${payload.toString('latin1')}`;
const keysOf = (packets: HepPacket[]) => packets.map((p) => key(p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!)).sort();

/** A message with compact headers (RFC 3261 7.3.3): v, f, t, i, l. */
const compact = (callId: string, start: string, body = '') =>
  Buffer.from(
    `${start}\r\nv: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-${callId}\r\nf: <sip:t@127.0.0.1>;tag=f-${callId}\r\nt: <sip:ka@127.0.0.1>\r\n` +
      `i: ${callId}\r\nCSeq: 1 MESSAGE\r\nl: ${body.length}\r\n\r\n${body}`,
  );

interface Stats {
  keepAlives: number;
  forwarded: number;
  duplicates: number;
  streams: { discardedBytes: number; localTcp: { missing: number } };
  kernel: { tcpReadReduced: number };
  tls: { unattributed: number };
}

describe.skipIf(!!why)('SIP keep-alives', () => {
  let dir: string;
  let hep: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-keepalive-'));
    hep = await udpCollector();
  });

  afterAll(async () => {
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `traffic` under a fresh agent; returns what it forwarded (waiting for `expected` packets) and its final stats. */
  async function underAgent(expected: number, traffic: () => Promise<void>) {
    hep.packets.length = 0;
    const agent = await startAgent(['run', '--hep', hep.url]);
    let stopped;
    try {
      await traffic();
      await hep.waitFor(expected);
    } finally {
      stopped = await agent.stop();
    }
    expect(stopped.code).toBe(0);
    return { forwarded: hep.packets.map((p) => decodeHep(p)), stats: stopped.final!.capture as Stats };
  }

  it('TCP: every message after a keep-alive is captured once, and each ping and pong counted once', async () => {
    const port = await freePort();
    const capture = await LoopbackCapture.start(join(dir, 'keepalive.pcap'), [port]);
    let wireKeys: string[] = [];
    // 10 requests and their 10 answers, then 3 pipelined requests (see tcp_keepalive in sip_traffic.py).
    const { forwarded, stats } = await underAgent(23, async () => {
      let stopping;
      try {
        const r = spawnSync('python3', [resolve(REPO, 'test/fixtures/sip_traffic.py'), 'tcp-keepalive', String(port)], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
      } finally {
        stopping = capture.stop(); // tcpdump must not outlive a failed test
      }
      const wire = await stopping;
      // The ground truth splits the byte streams into messages without the CR/LF runs.
      expect(wire.length).toBe(23);
      wireKeys = wire.map((m) => key(m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)).sort();
    });
    const got = keysOf(forwarded);
    expect(got.map((k) => k.slice(0, 100))).toEqual(wireKeys.map((k) => k.slice(0, 100)));
    expect(got).toEqual(wireKeys);
    // 10 pings in front of requests, 5 pongs in front of answers, a ping and a pong alone, 2 pings between pipelined requests.
    expect(stats).toMatchObject({ keepAlives: 19, forwarded: 23, duplicates: 23, streams: { discardedBytes: 0 } });
    // Both ends here: the receiver's reads went header only once the sender's records carried their bytes
    // (bpf/local_copies.bpf.h), and the receiver's copies above were framed from those bytes.
    expect(stats.kernel.tcpReadReduced).toBeGreaterThan(0);
    expect(stats.streams.localTcp.missing).toBe(0);
  });

  it('TLS (Node tls client and server): the same, checked against what each peer wrote', async () => {
    const cert = join(dir, 'cert.pem');
    const certKey = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', certKey, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
    const port = await freePort();
    const pipe = resolve(REPO, 'test/fixtures/tls_pipe.mjs');
    const reqs = Array.from({ length: 10 }, (_, i) => compact(`tls-ka-${i}`, 'MESSAGE sip:ka@127.0.0.1 SIP/2.0', `ping ${i}`));
    const resps = reqs.map((_, i) => compact(`tls-ka-${i}`, 'SIP/2.0 200 OK'));
    const pipelined = [0, 1].map((i) => compact(`tls-ka-pipelined-${i}`, 'MESSAGE sip:ka@127.0.0.1 SIP/2.0'));
    const procs: ChildProcess[] = [];
    const start = (args: string[]) => {
      const p = spawn(process.execPath, [pipe, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      p.stdout!.on('data', (d: Buffer) => out.push(d));
      let err = '';
      p.stderr!.on('data', (d) => (err += d));
      procs.push(p);
      return { p, out: () => Buffer.concat(out), err: () => err };
    };
    const { forwarded, stats } = await underAgent(22, async () => {
      try {
        const srv = start(['server', String(port), cert, certKey]);
        await until('TLS server listening', () => srv.err().includes('listening'));
        const cli = start(['client', String(port)]);
        await until('TLS client connected', () => cli.err().includes('connected'));
        // Each write reaches the peer (one SSL_write) before the next is made.
        const send = async (from: ReturnType<typeof start>, to: ReturnType<typeof start>, data: Buffer) => {
          const want = to.out().length + data.length;
          from.p.stdin!.write(data);
          await until('TLS peer decrypted the write', () => to.out().length >= want);
        };
        for (let i = 0; i < 10; i++) {
          await send(cli, srv, Buffer.concat([PING, reqs[i]]));
          await send(srv, cli, Buffer.concat([i % 2 === 0 ? PONG : Buffer.alloc(0), resps[i]]));
        }
        await send(cli, srv, Buffer.concat([pipelined[0], PING, pipelined[1]]));
        // The peers' own output: every byte crossed the connection as written.
        expect(srv.out().toString('latin1')).toBe(Buffer.concat([...reqs.map((r) => Buffer.concat([PING, r])), pipelined[0], PING, pipelined[1]]).toString('latin1'));
      } finally {
        for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
        await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)));
      }
    });
    const toServer = forwarded.filter((p) => p.dstPort === port);
    const fromServer = forwarded.filter((p) => p.srcPort === port);
    expect(toServer.length + fromServer.length).toBe(forwarded.length);
    expect(toServer.map((p) => p.payload!.toString('latin1')).sort()).toEqual([...reqs, ...pipelined].map((m) => m.toString('latin1')).sort());
    expect(fromServer.map((p) => p.payload!.toString('latin1')).sort()).toEqual(resps.map((m) => m.toString('latin1')).sort());
    for (const p of forwarded) expect(p.ipProto, 'HEP IP protocol of TLS').toBe(22);
    // 10 pings in front of requests, 5 pongs in front of answers, 1 ping between pipelined requests.
    expect(stats).toMatchObject({ keepAlives: 16, forwarded: 22, duplicates: 22, streams: { discardedBytes: 0 }, tls: { unattributed: 0 } });
  });
});
