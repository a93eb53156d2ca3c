/**
 * Delivery when collectors go away, on the real agent and the real kernel: the spool
 * (--spool-dir) across 60 s outages at 1k and 10k msg/s, across a SIGKILL of the agent, and at
 * its bound; a failover group switching and back. Traffic: bench/udp_load.c's flood, 800-byte SIP
 * MESSAGEs over UDP whose Call-ID carries a sequence number; every phase uses its own port, so
 * each message is known by (port, sequence). Collectors: HEP/TCP receivers in this file that
 * decode every packet (src/hep/decode.ts) and count each (port, sequence) they get; a message
 * missing or received twice fails the test, not only a count.
 *
 * One agent runs the phases one after the other (they are long): phase 3 kills it with SIGKILL
 * and starts a second one, with a small spool bound for phase 4.
 */
import { execFileSync, execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, splitHepStream } from '../../src/hep/decode.js';
import { freePort } from '../helpers/collector.js';
import { kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';

const why = kernelSuiteSkipReason('spool and failover end-to-end tests');
const OUTAGE_S = 60;

/** Sequences per flood port: at most this many (the 10k/s phase sends 600,000). */
const MAX_SEQ = 1_000_000;

/** A HEP/TCP collector that can go down and come back on the same port; counts each (port, sequence). */
class CountingCollector {
  /** Per flood port: how often each sequence arrived, and the sequences in arrival order. */
  private readonly counts = new Map<number, Uint8Array>();
  readonly order = new Map<number, number[]>();
  private server?: Server;
  private readonly conns = new Set<Socket>();
  constructor(readonly port: number) {}

  get url() {
    return `tcp://127.0.0.1:${this.port}`;
  }

  count(port: number): number {
    return this.order.get(port)?.length ?? 0;
  }

  /** How often each sequence arrived for `port`. */
  sequences(port: number): Uint8Array {
    return this.counts.get(port) ?? new Uint8Array(MAX_SEQ);
  }

  async up(): Promise<void> {
    this.server = createServer((c) => {
      this.conns.add(c);
      c.on('close', () => this.conns.delete(c));
      let pending: Buffer = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d;
        pending = pending.subarray(splitHepStream(pending, (p) => this.add(p)));
      });
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
  }

  private add(packet: Buffer): void {
    const hep = decodeHep(packet);
    const m = /Call-ID: load-(\d{10})/.exec(hep.payload!.toString('latin1', 0, 300));
    if (!m) return;
    const port = hep.dstPort!;
    const seq = Number(m[1]);
    if (!this.counts.has(port)) {
      this.counts.set(port, new Uint8Array(MAX_SEQ));
      this.order.set(port, []);
    }
    const counts = this.counts.get(port)!;
    if (seq < MAX_SEQ) counts[seq] = Math.min(255, counts[seq] + 1);
    this.order.get(port)!.push(seq);
  }

  /** Stops listening and closes its connections (as a collector that stops does). */
  async down(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((r) => this.server!.close(() => r()));
    this.server = undefined;
  }
}

/** Each of 0..n-1 exactly once in `got` (one or more collectors' counts for one port, `from` the first): the differences otherwise. */
function exactlyOnce(n: number, got: Uint8Array[], from = 0): { missing: number[]; twice: number[]; extra: number[] } {
  const missing: number[] = [];
  const twice: number[] = [];
  const extra: number[] = [];
  for (let seq = 0; seq < MAX_SEQ; seq++) {
    const c = got.reduce((a, g) => a + g[seq], 0);
    const wanted = seq >= from && seq < from + n;
    if (wanted && c === 0) missing.push(seq);
    if (wanted && c > 1) twice.push(seq);
    if (!wanted && c > 0) extra.push(seq);
  }
  return { missing: missing.slice(0, 20), twice: twice.slice(0, 20), extra: extra.slice(0, 20) };
}

/** Records in a spool directory's segment files (valid length and CRC) whose HEP destination port is `port`, and the bytes on disk. */
function onDisk(dir: string, port: number): { records: number; bytes: number } {
  let records = 0;
  let bytes = 0;
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.seg'));
  } catch {
    return { records, bytes };
  }
  for (const name of names) {
    let buf: Buffer;
    try {
      buf = readFileSync(join(dir, name));
    } catch {
      continue; // deleted meanwhile
    }
    bytes += buf.length;
    for (let at = 0; at + 8 <= buf.length; ) {
      const len = buf.readUInt32BE(at);
      const packet = buf.subarray(at + 8, at + 8 + len);
      if (packet.length < len || crc32(packet) !== buf.readUInt32BE(at + 4)) break;
      if (decodeHep(packet).dstPort === port) records++;
      at += 8 + len;
    }
  }
  return { records, bytes };
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

describe.skipIf(!!why)('spool and failover on the real agent', () => {
  const FLOOD = join(mkdtempSync(join(tmpdir(), 'hepbpf-spool-bin-')), 'udp_load');
  const spoolDir = mkdtempSync(join(tmpdir(), 'hepbpf-spool-e2e-'));
  let spooled: CountingCollector;
  let primary: CountingCollector;
  let backup: CountingCollector;
  let ports: number[];
  let agent: RunningAgent;
  const rss: number[] = [];
  let rssTimer: NodeJS.Timeout | undefined;

  /** udp_load flood: RATE messages/s for SECS s to PORT; every one sent (none failed), and received by the local peer. */
  const flood = (rate: number, secs: number, port: number) =>
    new Promise<number>((res, rej) =>
      execFile(FLOOD, ['flood', String(rate), String(secs), String(port)], (err, out) => {
        if (err) return rej(err);
        const m = /sent (\d+) received (-?\d+) failed (\d+)/.exec(out);
        if (!m || m[3] !== '0' || m[1] !== m[2]) return rej(new Error(`flood: ${out}`));
        res(Number(m[1]));
      }),
    );
  const args = (maxMb: number) => [
    'run', '--hep', spooled.url, '--hep', `${primary.url}|${backup.url}`, '--spool-dir', spoolDir, '--spool-max-mb', String(maxMb), '--sip-ports', ports.join(','),
  ];
  const spoolOf = (c: CountingCollector) => join(spoolDir, `tcp_127.0.0.1_${c.port}`);
  /** Takes the spooled collector down and waits until the agent saw it go, so the whole flood meets it down. */
  const outage = async () => {
    const lost = () => agent.logs.filter((l) => l.msg === 'HEP TCP collector lost' && l.collector === spooled.url).length;
    const before = lost();
    await spooled.down();
    await until('the agent sees the collector gone', () => lost() > before, 5000);
  };
  const sampleRss = (pid: number) => {
    clearInterval(rssTimer);
    rssTimer = setInterval(() => {
      try {
        rss.push(rssMb(pid));
      } catch {
        /* the agent is gone (phase 3 kills it) */
      }
    }, 500);
  };

  beforeAll(async () => {
    execFileSync('cc', ['-O2', '-o', FLOOD, resolve(REPO, 'bench/udp_load.c')]);
    ports = [await freePort(), await freePort(), await freePort(), await freePort()];
    spooled = new CountingCollector(await freePort());
    primary = new CountingCollector(await freePort());
    backup = new CountingCollector(await freePort());
    await Promise.all([spooled.up(), primary.up(), backup.up()]);
    // 600,000 messages of the 10k/s phase take about 560 MB: a bound of 1 GiB per collector holds them.
    agent = await startAgent(args(2048));
    sampleRss(agent.proc.pid!);
  }, 60_000);

  afterAll(async () => {
    clearInterval(rssTimer);
    if (agent?.proc.exitCode === null) await agent.stop();
    for (const c of [spooled, primary, backup]) await c?.down().catch(() => {});
    rmSync(spoolDir, { recursive: true, force: true });
    rmSync(resolve(FLOOD, '..'), { recursive: true, force: true });
  });

  it(`collector down ${OUTAGE_S} s at 1k msg/s: every message arrives once it is back, in order; meanwhile the failover group switches to its backup and back within 1 s, none lost or twice`, async () => {
    const port = ports[0];
    await outage();
    const sending = flood(1000, OUTAGE_S, port);
    await until('the primary gets the flood', () => primary.count(port) >= 5000, 20_000);
    await primary.down();
    const downAt = Date.now();
    const onBackup = backup.count(port);
    await until('the backup takes over', () => backup.count(port) > onBackup, 5000);
    const switchMs = Date.now() - downAt;
    await until('the backup carries 10 s', () => backup.count(port) >= onBackup + 10_000, 30_000);
    const primaryHad = primary.count(port);
    await primary.up();
    const upAt = Date.now();
    await until('the primary takes over again', () => primary.count(port) > primaryHad, 5000);
    const backMs = Date.now() - upAt;
    const sent = await sending;
    expect(sent).toBe(OUTAGE_S * 1000);
    expect(onDisk(spoolOf(spooled), port).records).toBeGreaterThan(0); // the outage went to disk
    await spooled.up();
    await until('every message at the spooled collector', () => spooled.count(port) >= sent, 60_000);
    await until('every message at the group', () => primary.count(port) + backup.count(port) >= sent, 10_000);
    expect(exactlyOnce(sent, [spooled.sequences(port)])).toEqual({ missing: [], twice: [], extra: [] });
    expect(exactlyOnce(sent, [primary.sequences(port), backup.sequences(port)])).toEqual({ missing: [], twice: [], extra: [] });
    expect(ascending(spooled.order.get(port)!)).toBe(true); // the outage replayed in order, before what came after
    expect(switchMs).toBeLessThan(1000);
    expect(backMs).toBeLessThan(1000);
    console.log(`phase 1: ${sent} messages, outage ${OUTAGE_S} s; failover ${switchMs} ms, back ${backMs} ms; agent RSS peak ${Math.max(...rss).toFixed(0)} MB`);
  }, 180_000);

  it(`collector down ${OUTAGE_S} s at 10k msg/s: every message arrives once it is back; the spool stays in its bound and memory stays bounded`, async () => {
    const port = ports[1];
    const rssBefore = rss[rss.length - 1];
    rss.length = 0;
    await outage();
    let diskPeak = 0;
    const diskTimer = setInterval(() => (diskPeak = Math.max(diskPeak, onDiskBytes(spoolOf(spooled)))), 1000);
    const sent = await flood(10_000, OUTAGE_S, port).finally(() => clearInterval(diskTimer));
    expect(sent).toBe(OUTAGE_S * 10_000);
    diskPeak = Math.max(diskPeak, onDiskBytes(spoolOf(spooled)));
    await spooled.up();
    await until('every message at the spooled collector', () => spooled.count(port) >= sent, 120_000);
    await until('every message at the group', () => primary.count(port) + backup.count(port) >= sent, 10_000);
    expect(exactlyOnce(sent, [spooled.sequences(port)])).toEqual({ missing: [], twice: [], extra: [] });
    expect(exactlyOnce(sent, [primary.sequences(port), backup.sequences(port)])).toEqual({ missing: [], twice: [], extra: [] });
    expect(ascending(spooled.order.get(port)!)).toBe(true);
    expect(diskPeak).toBeLessThanOrEqual(1024 * 1024 * 1024);
    const peak = Math.max(...rss);
    const stalls = agent.logs.filter((l) => l.msg === 'HEP TCP collector acknowledges nothing: failing over').length;
    console.log(`phase 2: ${sent} messages, ${(diskPeak / 1e6).toFixed(0)} MB spooled; agent RSS ${rssBefore.toFixed(0)} MB before, peak ${peak.toFixed(0)} MB; group failovers on a silent collector so far: ${stalls}`);
    // The outage is on disk, not in memory: the agent grows by far less than the 560 MB it spooled.
    expect(peak - rssBefore).toBeLessThan(150);
  }, 300_000);

  it('the agent is killed (SIGKILL) mid-outage and started again: what it had spooled arrives', async () => {
    const port = ports[2];
    await outage();
    const sent = await flood(1000, 3, port);
    await until('the outage on disk', () => onDisk(spoolOf(spooled), port).records === sent, 15_000);
    agent.proc.kill('SIGKILL');
    await new Promise((r) => (agent.proc.exitCode === null ? agent.proc.once('exit', r) : r(null)));
    // Phase 4 needs a small bound: the restarted agent has one (4 MB per collector), larger than what phase 3 left.
    agent = await startAgent(args(8));
    sampleRss(agent.proc.pid!);
    expect(agent.logs.some((l) => l.msg === 'HEP spool: sending what an earlier run kept')).toBe(true);
    await spooled.up();
    await until('every spooled message', () => spooled.count(port) >= sent, 30_000);
    expect(exactlyOnce(sent, [spooled.sequences(port)])).toEqual({ missing: [], twice: [], extra: [] });
    console.log(`phase 3: ${sent} messages spooled, agent killed with SIGKILL, restarted: ${spooled.count(port)} delivered`);
  }, 120_000);

  it('a full spool drops its oldest segments and counts exactly what they held; the newest arrive, once each', async () => {
    const port = ports[3];
    await outage();
    const sent = await flood(10_000, 2, port);
    const full = (l: Record<string, unknown>) => l.msg === 'HEP spool full: oldest segment dropped' && l.spool === spoolOf(spooled);
    const dropped = () => Number(agent.logs.findLast(full)?.droppedOldest ?? 0);
    await until('every message spooled or dropped', () => onDisk(spoolOf(spooled), port).records + dropped() === sent, 15_000);
    const bytes = onDiskBytes(spoolOf(spooled));
    const d = dropped();
    await spooled.up();
    await until('what the spool kept arrives', () => spooled.count(port) >= sent - d, 30_000);
    const { final } = await agent.stop();
    const stats = (final as { hep: { collectors: Record<string, { spool: { droppedOldest: number; torn: number } }> } }).hep.collectors[spooled.url];
    expect(stats.spool.droppedOldest).toBe(d);
    expect(d).toBeGreaterThan(0);
    expect(bytes).toBeLessThanOrEqual(4 * 1024 * 1024);
    // Exactly the newest sent - d, each once; the oldest d are the ones dropped.
    expect(exactlyOnce(sent - d, [spooled.sequences(port)], d)).toEqual({ missing: [], twice: [], extra: [] });
    console.log(`phase 4: ${sent} messages into a 4 MB spool: ${d} oldest dropped (counted), ${sent - d} delivered`);
  }, 60_000);
});

const ascending = (seqs: number[]) => seqs.every((s, i) => i === 0 || s > seqs[i - 1]);

/** Bytes of a spool directory's segment files. */
function onDiskBytes(dir: string): number {
  let bytes = 0;
  try {
    for (const n of readdirSync(dir)) if (n.endsWith('.seg')) bytes += statSync(join(dir, n), { throwIfNoEntry: false })?.size ?? 0;
  } catch {
    /* not created yet */
  }
  return bytes;
}
