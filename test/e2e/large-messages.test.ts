/**
 * Messages longer than 64 KiB over TCP and TLS on the real agent: each is forwarded once, as the first
 * bytes of what was on the wire (as many as fit one HEP packet: 65535 bytes to a TCP collector, 65507
 * to a UDP one), counted (`forwardedTruncated`, `hep.cutToFit`), shown cut in tail, and the message
 * after it on the same connection is forwarded whole. Ground truth: what each peer read.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { tcpCollector, udpCollector, type HepCollector } from '../helpers/collector.js';
import { startTlsPeers } from '../helpers/tls-pipe.js';
import { startTail, type RunningTail } from '../helpers/tail.js';

const why = kernelSuiteSkipReason('end-to-end large message tests');

const BODY_BYTES = 100_000;
const sip = (start: string, callId: string, body = '') =>
  Buffer.from(`${start}\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-${callId}\r\nFrom: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: ${callId}\r\nCSeq: 1 MESSAGE\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
/** A MESSAGE of about 100 KB (one write), the MESSAGE after it, and the answer to that. */
const scenario = (tag: string) => ({
  big: sip('MESSAGE sip:b@127.0.0.1 SIP/2.0', `big-${tag}`, 'x'.repeat(BODY_BYTES)),
  next: sip('MESSAGE sip:b@127.0.0.1 SIP/2.0', `next-${tag}`, 'small'),
  ok: sip('SIP/2.0 200 OK', `next-${tag}`),
});

describe.skipIf(!!why)('messages over 64 KiB on TCP and TLS', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let udp: HepCollector;
  let tcp: HepCollector;
  let agent: RunningAgent;
  let tail: RunningTail;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-large-'));
    env = { ...process.env, HEPBPF_SOCKET: join(dir, 'run', 'hepbpf.sock') };
    [udp, tcp] = await Promise.all([udpCollector(), tcpCollector()]);
    agent = await startAgent(['run', '--hep', udp.url, '--hep', tcp.url], env);
    tail = await startTail([], env);
  });

  afterAll(async () => {
    await tail?.stop();
    const stopped = await agent?.stop();
    await Promise.all([udp?.close(), tcp?.close()]);
    rmSync(dir, { recursive: true, force: true });
    // Both scenarios' long messages: once each in the agent, cut to fit by each collector's packet size.
    expect(stopped?.final).toMatchObject({ capture: { forwardedTruncated: 2 }, hep: { cutToFit: 4 } });
  });

  /** The SIP packets of `tag`'s scenario at one collector, by Call-ID (its connection's events are HEP type 100). */
  const packetsOf = (c: HepCollector, tag: string) =>
    c.packets.map((p) => ({ raw: p, hep: decodeHep(p) })).filter(({ hep }) => hep.protoType === 1 && hep.correlationId!.endsWith(`-${tag}`));

  async function expectForwarded(tag: string, wire: ReturnType<typeof scenario>) {
    for (const c of [udp, tcp]) await until(`3 ${tag} packets at ${c.url}`, () => packetsOf(c, tag).length >= 3);
    await tcp.waitFor(0, 1, 500); // settle: an extra packet would be seen
    for (const [c, limit] of [[udp, 65507], [tcp, 65535]] as const) {
      const got = packetsOf(c, tag);
      expect(got.map(({ hep }) => hep.correlationId)).toEqual([`big-${tag}`, `next-${tag}`, `next-${tag}`]);
      const [big, next, ok] = got;
      // The long one: a packet of exactly the collector's limit whose payload is the wire message's start.
      expect(big.raw.length).toBe(limit);
      const cut = big.hep.payload!;
      expect(cut.length).toBeLessThan(limit);
      expect(cut.length).toBeGreaterThan(limit - 400);
      expect(cut.equals(wire.big.subarray(0, cut.length))).toBe(true);
      // Framing went on after it: the next message and its answer, whole.
      expect(next.hep.payload!.equals(wire.next)).toBe(true);
      expect(ok.hep.payload!.equals(wire.ok)).toBe(true);
    }
    await tail.waitForOutput((out) => out.includes(`big-${tag}`) && out.includes(`next-${tag}`));
    // The message's line, not its connection's events (which carry the same Call-ID).
    const lines = tail.out().split('\n').filter((l) => l.includes(`big-${tag}`) && l.includes(' MESSAGE'));
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain(`[truncated: 65536 of ${wire.big.length} bytes]`);
  }

  it('TCP: the long message forwarded cut once, the next one whole', async () => {
    const wire = scenario('tcp');
    const received: Buffer[] = [];
    let serverSide: Socket | undefined;
    const server = createServer((s) => {
      serverSide = s;
      s.on('data', (d) => received.push(d));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = createConnection((server.address() as AddressInfo).port, '127.0.0.1');
    const answered: Buffer[] = [];
    client.on('data', (d) => answered.push(d));
    try {
      await new Promise<void>((r) => client.once('connect', () => r()));
      client.write(wire.big);
      client.write(wire.next);
      const sent = wire.big.length + wire.next.length;
      await until('server read both messages', () => Buffer.concat(received).length >= sent);
      serverSide!.write(wire.ok);
      await until('client read the answer', () => Buffer.concat(answered).length >= wire.ok.length);
    } finally {
      client.destroy();
      serverSide?.destroy();
      await new Promise((r) => server.close(r));
    }
    expect(Buffer.concat(received).equals(Buffer.concat([wire.big, wire.next]))).toBe(true);
    await expectForwarded('tcp', wire);
  });

  it('TLS (Node tls peers): the same', async () => {
    const wire = scenario('tls');
    const peers = await startTlsPeers(dir);
    try {
      await peers.send(peers.client, Buffer.concat([wire.big, wire.next]));
      await peers.send(peers.server, wire.ok);
      expect(peers.server.out().equals(Buffer.concat([wire.big, wire.next]))).toBe(true);
    } finally {
      await peers.stop();
    }
    await expectForwarded('tls', wire);
  });
});

