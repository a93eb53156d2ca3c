import { createSocket } from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { splitHepStream } from '../../src/hep/decode.js';
import { TcpHepSender } from '../../src/output/hep-sender-tcp.js';
import { UdpHepSender } from '../../src/output/hep-sender-udp.js';
import { parseHepTarget } from '../../src/output/target.js';

const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hepPacket = (n: number) => {
  const b = Buffer.alloc(32, n);
  b.write('HEP3', 0, 'latin1');
  b.writeUInt16BE(32, 4);
  return b;
};

describe('collector URLs', () => {
  it('parses udp/tcp with IPv4, names and bracketed IPv6', () => {
    expect(parseHepTarget('udp://127.0.0.1:9060')).toMatchObject({ transport: 'udp', host: '127.0.0.1', port: 9060 });
    expect(parseHepTarget('tcp://[::1]:9061')).toMatchObject({ transport: 'tcp', host: '::1', port: 9061 });
    expect(parseHepTarget('udp://homer.local:9060')).toMatchObject({ host: 'homer.local' });
    expect(parseHepTarget('tls://homer.local:9062', { insecure: true })).toMatchObject({ transport: 'tls', port: 9062, tls: { insecure: true } });
    expect(parseHepTarget('tcp://homer.local:9061', { insecure: true }).tls).toBeUndefined();
  });
  it('rejects what it cannot send to, with the expected form', () => {
    for (const bad of ['http://x:1', 'udp://x', 'udp://x:0', 'udp://x:70000', 'tlsv1://x:1', 'udp://::1:9060'])
      expect(() => parseHepTarget(bad)).toThrow(/expected udp:\/\/HOST:PORT/);
  });
});

describe('HEP senders', () => {
  it('UDP: a collector that is down costs errors or drops, never an exception; packets flow once it is up', async () => {
    const probe = createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
    const port = probe.address().port;
    await new Promise<void>((r) => probe.close(() => r()));

    const lines: string[] = [];
    const sender = new UdpHepSender(parseHepTarget(`udp://127.0.0.1:${port}`), pino({ level: 'info' }, { write: (l: string) => lines.push(l) }));
    await sleep(50);
    for (let i = 0; i < 20; i++) {
      sender.send(hepPacket(i));
      await sleep(2);
    }
    await sleep(100);
    const down = sender.stats();
    expect(down.sent + down.dropped + down.errors).toBeGreaterThanOrEqual(20);
    expect(down.errors).toBeGreaterThan(0); // ICMP port unreachable surfaced as counted errors
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['HEP UDP sends failing']); // not one line per packet

    const rx = createSocket('udp4');
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    await new Promise<void>((r) => rx.bind(port, '127.0.0.1', r));
    const packet = hepPacket(7);
    sender.send(packet);
    packet.fill(0); // the sender copied it: reusing the caller's buffer must not change what is sent
    await sleep(100);
    expect(got.map((b) => b.equals(hepPacket(7)))).toEqual([true]);
    await sender.close();
    await new Promise<void>((r) => rx.close(() => r()));
  });

  it('TCP: queues while the collector is down, reconnects, delivers everything in order', async () => {
    const received: Buffer[] = [];
    const conns = new Set<import('node:net').Socket>();
    const shut = async (srv: Server) => {
      for (const c of conns) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    };
    const listen = (port = 0) =>
      new Promise<Server>((resolve) => {
        const srv = createServer((c) => {
          conns.add(c);
          c.on('close', () => conns.delete(c));
          let pending = Buffer.alloc(0);
          c.on('data', (d: Buffer) => {
            pending = Buffer.concat([pending, d]);
            pending = pending.subarray(splitHepStream(pending, (p) => received.push(Buffer.from(p))));
          });
        });
        srv.listen(port, '127.0.0.1', () => resolve(srv));
      });
    let srv = await listen();
    const port = (srv.address() as AddressInfo).port;
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log);
    for (let i = 0; i < 5; i++) sender.send(hepPacket(i));
    await sleep(200);
    expect(received.length).toBe(5);

    await shut(srv);
    await sleep(100);
    for (let i = 5; i < 10; i++) sender.send(hepPacket(i)); // collector down: queued
    srv = await listen(port);
    for (let i = 0; i < 60 && received.length < 10; i++) await sleep(100);
    expect(received.map((p) => p[10])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await sender.close();
    await shut(srv);
  });

  it('UDP: flush resolves once every datagram is handed over; the caller may reuse its buffer', async () => {
    const rx = createSocket('udp4');
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
    const sender = new UdpHepSender(parseHepTarget(`udp://127.0.0.1:${rx.address().port}`), log);
    await sleep(20);
    const packet = Buffer.alloc(32);
    for (let i = 0; i < 100; i++) {
      packet.set(hepPacket(i));
      sender.send(packet);
    }
    await sender.flush();
    expect(sender.stats()).toEqual({ sent: 100, dropped: 0, errors: 0, queued: 0, queuedBytes: 0 });
    for (let i = 0; i < 50 && got.length < 100; i++) await sleep(10);
    expect(got.map((p) => p[10])).toEqual(Array.from({ length: 100 }, (_, i) => i));
    await sender.close();
    await new Promise<void>((r) => rx.close(() => r()));
  });

  it('TCP: delivers 5000 packets across slab boundaries in order, byte for byte', async () => {
    const { port, received, close } = await tcpCollector();
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log);
    const big = (i: number) => {
      const b = Buffer.alloc(1000, i & 0xff);
      b.write('HEP3', 0, 'latin1');
      b.writeUInt16BE(1000, 4);
      b.writeUInt32BE(i, 6);
      return b;
    };
    const reused = Buffer.alloc(1000);
    for (let i = 0; i < 5000; i++) {
      reused.set(big(i));
      sender.send(reused);
    }
    await sender.flush();
    expect(sender.stats()).toMatchObject({ sent: 5000, dropped: 0, queued: 0 });
    for (let i = 0; i < 100 && received.length < 5000; i++) await sleep(20);
    expect(received.length).toBe(5000);
    expect(received.every((p, i) => p.equals(big(i)))).toBe(true);
    await sender.close();
    await close();
  });

  it('TCP: a collector that is not up yet gets what was queued; past the queue bound packets are dropped and counted', async () => {
    const { port, close: closeProbe } = await tcpCollector();
    await closeProbe();
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log, { maxQueueBytes: 32 * 10 });
    for (let i = 0; i < 15; i++) sender.send(hepPacket(i));
    expect(sender.stats()).toMatchObject({ sent: 0, dropped: 5, queued: 10, queuedBytes: 320 });
    await sender.flush(); // collector down: resolves at once, the queue stays
    expect(sender.stats().queued).toBe(10);
    await sleep(150);
    expect(sender.stats().errors).toBeGreaterThan(0); // ECONNREFUSED, counted, not thrown
    const { received, close } = await tcpCollector(port);
    for (let i = 0; i < 60 && received.length < 10; i++) await sleep(100);
    expect(received.map((p) => p[10])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(sender.stats()).toMatchObject({ sent: 10, dropped: 5, queued: 0 });
    await sender.close();
    await close();
  });

  it('TCP: close with the collector down counts what is left as dropped and returns', async () => {
    const { port, close: closeProbe } = await tcpCollector();
    await closeProbe();
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log);
    for (let i = 0; i < 3; i++) sender.send(hepPacket(i));
    await sender.close();
    expect(sender.stats()).toMatchObject({ sent: 0, dropped: 3, queued: 0 });
    sender.send(hepPacket(9));
    expect(sender.stats().dropped).toBe(4);
  });
});

describe('HEP over TLS', () => {
  /** A self-signed certificate for 127.0.0.1, made by the openssl CLI. */
  function selfSigned() {
    const dir = mkdtempSync(join(tmpdir(), 'hepbpf-hep-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'c'), '-days', '2', '-subj', '/CN=collector', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
      return { cert: readFileSync(join(dir, 'c')), key: readFileSync(join(dir, 'k')) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const id = selfSigned();

  async function deliver(tls: { ca?: Buffer; insecure?: boolean }) {
    const collector = await tcpCollector(0, id);
    const sender = new TcpHepSender(parseHepTarget(`tls://127.0.0.1:${collector.port}`, tls), log);
    for (let i = 0; i < 3; i++) sender.send(hepPacket(i));
    await sleep(500);
    const result = { received: collector.received.length, stats: sender.stats() };
    await sender.close();
    await collector.close();
    return result;
  }

  it('sends to a collector whose certificate chains to --hep-ca', async () => {
    expect((await deliver({ ca: id.cert })).received).toBe(3);
  });

  it('by default refuses a certificate it cannot verify: nothing is sent, the failure is counted', async () => {
    const r = await deliver({});
    expect(r.received).toBe(0);
    expect(r.stats.sent).toBe(0);
    expect(r.stats.errors).toBeGreaterThan(0);
  });

  it('sends without verifying only when told to (--hep-insecure)', async () => {
    expect((await deliver({ insecure: true })).received).toBe(3);
  });
});

/** A HEP-over-TCP (or, with a certificate, TLS) receiver on 127.0.0.1 that splits the stream into packets. */
async function tcpCollector(port = 0, tls?: { cert: Buffer; key: Buffer }) {
  const received: Buffer[] = [];
  const conns = new Set<import('node:net').Socket>();
  const onConnection = (c: import('node:net').Socket) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    let pending = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      pending = pending.subarray(splitHepStream(pending, (p) => received.push(Buffer.from(p))));
    });
  };
  const srv = tls ? createTlsServer(tls, onConnection) : createServer(onConnection);
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  return {
    port: (srv.address() as AddressInfo).port,
    received,
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
