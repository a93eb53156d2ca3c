/**
 * The spool (on-disk queue) and failover groups of the HEP TCP sender, against real sockets on
 * 127.0.0.1 and real files. The agent-level tests (real kernel, real traffic) are in
 * test/e2e/spool.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, chownSync, closeSync, lstatSync, openSync, writeSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { splitHepStream } from '../../src/hep/decode.js';
import { TcpHepSender } from '../../src/output/hep-sender-tcp.js';
import { Spool } from '../../src/output/spool.js';
import { parseHepGroup, parseHepTarget } from '../../src/output/target.js';
import { tcpCollector } from '../helpers/collector.js';
import { ids, numberedPacket, range } from '../helpers/hep-packets.js';
import { until } from '../helpers/wait.js';

const log = pino({ level: 'silent' });

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'hepbpf-spool-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function readAll(spool: Spool): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let r = await spool.read(1 << 16); r; r = await spool.read(1 << 16)) {
    for (let at = 0; at < r.packets.length; at += r.packets.readUInt16BE(at + 4)) out.push(Buffer.from(r.packets.subarray(at, at + r.packets.readUInt16BE(at + 4))));
    r.done();
  }
  return out;
}

describe('spool', () => {
  it('gives packets back in order, byte for byte, also after a restart', async () => {
    const dir = join(tempDir(), 'spool');
    let spool = new Spool(dir, 64 << 20);
    expect(lstatSync(dir).mode & 0o777).toBe(0o700);
    for (let i = 0; i < 3000; i++) spool.append(numberedPacket(i, 100 + (i % 500)));
    const first = await spool.read(10_000);
    first!.done();
    expect(first!.records).toBeGreaterThan(0);
    await spool.close();
    spool = new Spool(dir, 64 << 20);
    // What was handed out before the restart and whose segment was not finished is given again: at least once.
    const again = await readAll(spool);
    expect(ids(again)).toEqual(range(0, 3000));
    expect(again.every((p, i) => p.equals(numberedPacket(i, 100 + (i % 500))))).toBe(true);
    expect(spool.stats()).toMatchObject({ records: 0, torn: 0, droppedOldest: 0 });
    await spool.close();
  });

  it('a torn tail (the agent died mid-write) is cut off and counted; the records before it are kept', async () => {
    const dir = tempDir();
    const spool = new Spool(dir, 64 << 20);
    for (let i = 0; i < 50; i++) spool.append(numberedPacket(i));
    await spool.close();
    const seg = join(dir, readdirSync(dir)[0]);
    appendFileSync(seg, Buffer.from([0, 0, 0, 100, 1, 2, 3, 4, 0x48, 0x45])); // a header and 2 of 100 bytes
    const after = new Spool(dir, 64 << 20);
    expect(after.stats()).toMatchObject({ records: 50, torn: 1 });
    expect(ids(await readAll(after))).toEqual(range(0, 50));
    expect(lstatSync(seg, { throwIfNoEntry: false })).toBeUndefined(); // read to its end and released
    await after.close();
  });

  it('a record whose CRC does not match ends its segment there, counted', async () => {
    const dir = tempDir();
    const spool = new Spool(dir, 64 << 20);
    for (let i = 0; i < 10; i++) spool.append(numberedPacket(i));
    await spool.close();
    const seg = join(dir, readdirSync(dir)[0]);
    const fd = openSync(seg, 'r+');
    writeSync(fd, Buffer.from('X'), 0, 1, 5 * 108 + 8 + 20); // inside record 5's packet
    closeSync(fd);
    const after = new Spool(dir, 64 << 20);
    expect(after.stats()).toMatchObject({ records: 5, torn: 1 });
    expect(ids(await readAll(after))).toEqual(range(0, 5));
    await after.close();
  });

  it('when full, drops the oldest segment and counts exactly what it held; the newest stay, in order', async () => {
    const dir = tempDir();
    const max = 1 << 20; // segments of 128 KiB: 1213 records of 108 bytes each
    const spool = new Spool(dir, max);
    const n = 30_000;
    for (let i = 0; i < n; i++) spool.append(numberedPacket(i));
    const s = spool.stats();
    expect(s.bytes).toBeLessThanOrEqual(max);
    expect(s.droppedOldest + s.records).toBe(n);
    expect(s.droppedOldest).toBeGreaterThan(0);
    const left = ids(await readAll(spool));
    expect(left).toEqual(range(s.droppedOldest, n));
    await spool.close();
  });

  it('refuses a symbolic link and a directory another user owns, with the reason', () => {
    const base = tempDir();
    mkdirSync(join(base, 'real'));
    symlinkSync(join(base, 'real'), join(base, 'link'));
    expect(() => new Spool(join(base, 'link'), 1 << 20)).toThrow(/symbolic link/);
    mkdirSync(join(base, 'theirs'));
    chownSync(join(base, 'theirs'), 65534, 65534);
    expect(() => new Spool(join(base, 'theirs'), 1 << 20)).toThrow(/owned by uid 65534/);
    writeFileSync(join(base, 'file'), '');
    expect(() => new Spool(join(base, 'file'), 1 << 20)).toThrow(/not a directory|EEXIST/);
  });
});

describe('TCP sender with a spool', () => {
  it('collector down: packets go to disk; back: the spool is replayed in order, then new packets follow, none twice', async () => {
    const c1 = await tcpCollector();
    const dir = tempDir();
    const sender = new TcpHepSender(parseHepTarget(c1.url), log, { spool: new Spool(dir, 64 << 20) });
    for (let i = 0; i < 100; i++) sender.send(numberedPacket(i));
    await until('first 100', () => c1.packets.length === 100);
    await c1.close();
    await until('the sender sees the collector gone', () => sender.stats().up === 0);
    for (let i = 100; i < 20_100; i++) sender.send(numberedPacket(i, 500));
    await until('all spooled on disk', () => sender.stats().spool!.records === 20_000);
    const c2 = await tcpCollector(undefined, c1.port);
    for (let i = 20_100; i < 20_200; i++) sender.send(numberedPacket(i));
    await until('everything delivered', () => c2.packets.length >= 20_100, 20_000);
    expect(ids([...c1.packets, ...c2.packets])).toEqual(range(0, 20_200));
    expect(sender.stats()).toMatchObject({ dropped: 0, resent: 0, spool: { records: 0, droppedOldest: 0, torn: 0 } });
    await sender.close();
    expect(readdirSync(dir).length).toBeLessThanOrEqual(1); // replayed segments are deleted
    await c2.close();
  });

  it('a burst in one turn larger than the socket and the memory queue take: the rest goes to disk, then everything arrives in order, none twice', async () => {
    const c = await tcpCollector();
    const sender = new TcpHepSender(parseHepTarget(c.url), log, { spool: new Spool(tempDir(), 64 << 20) });
    sender.send(numberedPacket(0));
    await until('connected', () => c.packets.length === 1);
    // 20 MB: more than the kernel, Node's socket buffer (4 MiB) and the memory queue (4 MiB before spilling) hold before the collector reads.
    for (let i = 1; i <= 20_000; i++) sender.send(numberedPacket(i, 1000));
    expect(sender.stats().spool!.spooled).toBeGreaterThan(0);
    await until('everything delivered', () => c.packets.length >= 20_001, 20_000);
    expect(ids(c.packets)).toEqual(range(0, 20_001));
    expect(sender.stats()).toMatchObject({ dropped: 0, resent: 0, spool: { records: 0, droppedOldest: 0, droppedDiskSlow: 0 } });
    await sender.close();
    await c.close();
  });
});

describe('TLS sender with a spool', () => {
  it('collector down, then back: the spool is replayed in order over TLS, none twice', async () => {
    const dir = tempDir();
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'c'), '-days', '2', '-subj', '/CN=collector', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const id = { cert: readFileSync(join(dir, 'c')), key: readFileSync(join(dir, 'k')) };
    const c1 = await tcpCollector(id);
    const sender = new TcpHepSender(parseHepTarget(c1.url, { ca: id.cert }), log, { spool: new Spool(join(dir, 'spool'), 64 << 20) });
    for (let i = 0; i < 100; i++) sender.send(numberedPacket(i));
    await until('first 100', () => c1.packets.length === 100);
    await c1.close();
    await until('the sender sees the collector gone', () => sender.stats().up === 0);
    for (let i = 100; i < 5100; i++) sender.send(numberedPacket(i, 500));
    await until('all spooled', () => sender.stats().spool!.records === 5000);
    const c2 = await tcpCollector(id, c1.port);
    await until('everything delivered', () => c2.packets.length >= 5000, 20_000);
    expect(ids([...c1.packets, ...c2.packets])).toEqual(range(0, 5100));
    expect(sender.stats()).toMatchObject({ dropped: 0, spool: { records: 0, droppedOldest: 0, torn: 0 } });
    await sender.close();
    await c2.close();
  });
});

describe('failover group', () => {
  it('parses tcp/tls groups, refuses UDP in a group', () => {
    expect(parseHepGroup('tcp://a:1|tls://b:2').map((t) => t.url)).toEqual(['tcp://a:1', 'tls://b:2']);
    expect(() => parseHepGroup('udp://a:1|tcp://b:2')).toThrow(/failover needs tcp/);
  });

  it('primary gone: the backup gets the rest within 1 s; primary back: it gets the rest again; none lost or twice', async () => {
    const primary = await tcpCollector();
    const backup = await tcpCollector();
    const sender = new TcpHepSender(parseHepGroup(`${primary.url}|${backup.url}`), log);
    let n = 0;
    const pump = setInterval(() => {
      for (let i = 0; i < 100; i++) sender.send(numberedPacket(n++)); // 10,000/s: runs of many packets, cut anywhere by a lost connection
    }, 10);
    try {
      await until('primary receives', () => primary.packets.length > 2000);
      await primary.close();
      const downAt = Date.now();
      const backupBefore = backup.packets.length;
      await until('backup receives', () => backup.packets.length > backupBefore);
      expect(Date.now() - downAt).toBeLessThan(1000);
      await until('backup carries a while', () => backup.packets.length > 5000);
      const again = await tcpCollector(undefined, primary.port);
      const upAt = Date.now();
      await until('primary receives again', () => again.packets.length > 0);
      expect(Date.now() - upAt).toBeLessThan(1000);
      await until('primary carries a while', () => again.packets.length > 2000);
      clearInterval(pump);
      await sender.flush();
      await until('all arrived', () => primary.packets.length + backup.packets.length + again.packets.length >= n);
      const all = ids([...primary.packets, ...backup.packets, ...again.packets]).sort((a, b) => a - b);
      expect(all).toEqual(range(0, n));
      expect(sender.stats()).toMatchObject({ dropped: 0, failovers: 2, active: primary.url, up: 1 });
      await again.close();
    } finally {
      clearInterval(pump);
      await sender.close();
      await backup.close();
    }
  });

  it('a primary that stops reading (silent): after 0.5 s without acknowledgements the backup gets the rest; what the primary had acknowledged it still reads; none lost or twice', async () => {
    // The silent primary: it reads 2000 packets, then nothing until told to go on.
    const got: Buffer[] = [];
    let stalled: import('node:net').Socket | undefined;
    const silent = createServer((c) => {
      let pending = Buffer.alloc(0);
      c.on('error', () => {}); // the sender resets the connection it gave up on
      c.on('data', (d: Buffer) => {
        pending = Buffer.concat([pending, d]);
        pending = pending.subarray(splitHepStream(pending, (p) => got.push(Buffer.from(p))));
        if (got.length >= 2000 && !stalled) {
          stalled = c;
          c.pause();
        }
      });
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const backup = await tcpCollector();
    const sender = new TcpHepSender(parseHepGroup(`tcp://127.0.0.1:${(silent.address() as AddressInfo).port}|${backup.url}`), log);
    let n = 0;
    const pump = setInterval(() => {
      for (let i = 0; i < 100; i++) sender.send(numberedPacket(n++, 1000)); // 10,000/s of 1000 bytes: fills the primary's buffers
    }, 10);
    try {
      await until('the primary stops reading', () => !!stalled);
      const stalledAt = Date.now();
      await until('the backup takes over', () => backup.packets.length > 0, 10_000);
      const switchMs = Date.now() - stalledAt;
      await until('the backup carries a while', () => backup.packets.length > 2000);
      clearInterval(pump);
      await sender.flush();
      await until('the backup has the rest', () => sender.stats().queued === 0 && backup.packets.length > 0);
      stalled!.resume(); // what its kernel acknowledged is still there to read
      await until('all arrived', () => got.length + backup.packets.length >= n, 10_000);
      expect(ids([...got, ...backup.packets]).sort((a, b) => a - b)).toEqual(range(0, n));
      // The switch waited for the buffers to fill (they are several MB on loopback) and then 0.5 s.
      expect(switchMs).toBeLessThan(5000);
    } finally {
      clearInterval(pump);
      await sender.close();
      await backup.close();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});

