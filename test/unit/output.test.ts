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
import { ids, numberedPacket, range } from '../helpers/hep-packets.js';

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
    expect(sender.stats()).toEqual({ sent: 100, dropped: 0, errors: 0, queued: 0, queuedBytes: 0, up: 1 });
    for (let i = 0; i < 50 && got.length < 100; i++) await sleep(10);
    expect(got.map((p) => p[10])).toEqual(Array.from({ length: 100 }, (_, i) => i));
    await sender.close();
    await new Promise<void>((r) => rx.close(() => r()));
  });

  describe.each(['127.0.0.1', '::1'])('UDP to %s: sendmmsg batches', (ip) => {
    const url = (port: number) => `udp://${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
    /** Packet i: its own length (32 to 1400 bytes), its number at byte 6, a pattern derived from it. */
    const numbered = (i: number) => {
      const b = Buffer.alloc(32 + ((i * 97) % 1369));
      for (let j = 10; j < b.length; j++) b[j] = (i + j) & 0xff;
      b.write('HEP3', 0, 'latin1');
      b.writeUInt16BE(b.length, 4);
      b.writeUInt32BE(i, 6);
      return b;
    };

    it('every packet arrives once, byte for byte, in order: batches of 1, of many, and past one sendmmsg call', async () => {
      const rx = await udpCollector(ip);
      const sender = new UdpHepSender(parseHepTarget(url(rx.port)), log);
      const reused = Buffer.alloc(1400);
      let next = 0;
      const batch = (n: number) => {
        for (let i = 0; i < n; i++) {
          const p = numbered(next++);
          p.copy(reused);
          sender.send(reused.subarray(0, p.length));
          reused.fill(0); // copied at send(): reusing the buffer changes nothing
        }
      };
      batch(1);
      expect(sender.stats()).toMatchObject({ sent: 0, queued: 1 }); // leaves after the current turn
      await rx.until(1);
      batch(300);
      await rx.until(301);
      batch(2500); // past the queue's 1024 datagrams (one sendmmsg call): sent at once, the rest after the turn
      expect(sender.stats()).toMatchObject({ sent: 301 + 2048, queued: 452, dropped: 0, errors: 0 });
      await sender.flush();
      expect(sender.stats()).toEqual({ sent: 2801, dropped: 0, errors: 0, queued: 0, queuedBytes: 0, up: 1 });
      await rx.until(2801);
      expect(rx.got.length).toBe(2801);
      expect(rx.got.every((p, i) => p.equals(numbered(i)))).toBe(true);
      await sender.close();
      await rx.close();
    });

    it('close() sends what is queued; send() after close is dropped and counted', async () => {
      const rx = await udpCollector(ip);
      const sender = new UdpHepSender(parseHepTarget(url(rx.port)), log);
      for (let i = 0; i < 50; i++) sender.send(numbered(i));
      await sender.close();
      expect(sender.stats()).toEqual({ sent: 50, dropped: 0, errors: 0, queued: 0, queuedBytes: 0, up: 0 });
      sender.send(numbered(50));
      expect(sender.stats().dropped).toBe(1);
      await rx.until(50);
      expect(rx.got.every((p, i) => p.equals(numbered(i)))).toBe(true);
      await rx.close();
    });

    it('a collector that is down: every packet is counted sent or as an error, nothing throws', async () => {
      const rx = await udpCollector(ip);
      const port = rx.port;
      await rx.close();
      const sender = new UdpHepSender(parseHepTarget(url(port)), log);
      let offered = 0;
      // the port's ICMP unreachable fails a later send: batches until one has
      for (let i = 0; i < 200 && sender.stats().errors === 0; i++) {
        for (let j = 0; j < 10; j++, offered++) sender.send(numbered(offered));
        await sender.flush();
        await new Promise((r) => setImmediate(r));
      }
      const s = sender.stats();
      expect(s.errors).toBeGreaterThan(0);
      expect(s.sent + s.errors).toBe(offered);
      expect(s).toMatchObject({ dropped: 0, queued: 0 });
      await sender.close();
    });
  });

  it('TCP: delivers 5000 packets across slab boundaries in order, byte for byte', async () => {
    const { port, received, close } = await tcpCollector();
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log);
    const reused = Buffer.alloc(1000);
    for (let i = 0; i < 5000; i++) {
      reused.set(numberedPacket(i, 1000));
      sender.send(reused);
    }
    await sender.flush();
    expect(sender.stats()).toMatchObject({ sent: 5000, dropped: 0, queued: 0 });
    for (let i = 0; i < 100 && received.length < 5000; i++) await sleep(20);
    expect(received.length).toBe(5000);
    expect(received.every((p, i) => p.equals(numberedPacket(i, 1000)))).toBe(true);
    await sender.close();
    await close();
  });

  /**
   * Connects a sender with a 2 MiB queue, then sends `n` numbered 1000-byte packets within one
   * event-loop turn, as the agent does working through a backlog of kernel records. Returns what
   * the sender dropped in that turn, the numbers the collector then got, and the sender's counts.
   */
  async function burstInOneTurn(n: number) {
    const { port, received, close } = await tcpCollector();
    const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${port}`), log, { maxQueueBytes: 2 << 20 });
    sender.send(hepPacket(0));
    for (let i = 0; i < 100 && received.length < 1; i++) await sleep(20);
    expect(received.length, 'connected').toBe(1);
    for (let i = 1; i <= n; i++) sender.send(numberedPacket(i, 1000));
    const { dropped } = sender.stats();
    await sender.flush();
    for (let i = 0; i < 250 && received.length < n - dropped + 1; i++) await sleep(20);
    const stats = sender.stats();
    await sender.close();
    await close();
    return { dropped, got: ids(received.slice(1)), stats };
  }

  it('TCP: a burst longer than the queue bound within one event-loop turn is written slab by slab as it comes, nothing dropped', async () => {
    const { dropped, got, stats } = await burstInOneTurn(6000); // 6 MB, three times the queue bound
    expect(dropped).toBe(0);
    expect(got).toEqual(range(1, 6001));
    expect(stats).toMatchObject({ sent: 6001, dropped: 0, queued: 0 });
  });

  it('TCP: a burst in one turn that the socket cannot take drops the newest past the queue bound, counted; what was kept arrives in order, once', async () => {
    // 20 MB: more than the kernel, Node's socket buffer (4 MiB) and the queue hold before the collector reads.
    const { dropped, got, stats } = await burstInOneTurn(20_000);
    expect(dropped).toBeGreaterThan(0);
    const kept = 20_000 - dropped;
    expect(got).toEqual(range(1, kept + 1));
    expect(stats).toMatchObject({ sent: kept + 1, dropped, queued: 0 });
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

/** A UDP receiver on `ip` with a receive buffer that holds a few sendmmsg calls' worth. */
async function udpCollector(ip: string) {
  const rx = createSocket({ type: ip.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20 });
  const got: Buffer[] = [];
  rx.on('message', (m) => got.push(m));
  await new Promise<void>((r) => rx.bind(0, ip, r));
  return {
    port: rx.address().port,
    got,
    /** Waits until n packets arrived (at most 5 s). */
    async until(n: number) {
      for (let i = 0; i < 500 && got.length < n; i++) await sleep(10);
    },
    close: () => new Promise<void>((r) => rx.close(() => r())),
  };
}

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
