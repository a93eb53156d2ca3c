import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent.js';
import { ReplaySource } from '../../src/capture/replay.js';
import { COUNTER_NAMES } from '../../src/capture/record.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HepForwarder } from '../../src/output/hep-forwarder.js';
import { TcpHepSender } from '../../src/output/hep-sender-tcp.js';
import { Spool } from '../../src/output/spool.js';
import { parseHepGroup } from '../../src/output/target.js';
import { ControlServer } from '../../src/output/control-server.js';
import { metricsRegistry, MetricsServer, parseListenAddress, TOP_CONTAINERS, uncoveredStats, type MetricsSource } from '../../src/output/metrics.js';
import { memoryContainers, memorySender, Recorder, record } from '../../bench/traffic.js';

const silent = pino({ level: 'silent' });

/** The stats tree `run` logs, from the real stages over recorded records; the kernel and TLS parts as SocketCapture reports them. */
async function realStatsTree() {
  const rec = new Recorder(process.hrtime.bigint());
  record(rec, 'SIP/UDP', 1);
  record(rec, 'Diameter', 1);
  const sender = memorySender();
  const forwarder = new HepForwarder([sender], { captureId: 2001 });
  const source = new ReplaySource();
  const agent = new Agent({ source, log: silent, containers: memoryContainers(), sink: (ev) => forwarder.forward(ev) });
  await agent.start();
  for (const batch of rec.batches(3)) source.replay(batch);
  while (sender.packets < 5) await new Promise((r) => setImmediate(r));
  await agent.stop();
  const capture = {
    ...agent.stats(),
    kernel: Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])),
    tls: { filesChecked: 1, attached: 1, failed: 0, refused: 0, ...agent.stats().tls },
    failures: { stream: 1, message: 2, sink: 3 },
  };
  // A failover group with a spool (nothing listens on port 9: it only has to report its counters).
  const dir = mkdtempSync(join(tmpdir(), 'hepbpf-metrics-spool-'));
  const spool = new Spool(dir, 1 << 20);
  const group = new TcpHepSender(parseHepGroup('tcp://127.0.0.1:9|tcp://127.0.0.1:9'), silent, { spool });
  const hep = { ...forwarder.stats(), collectors: { ...forwarder.stats().collectors, [group.name]: group.stats() } };
  await group.close();
  await spool.close();
  rmSync(dir, { recursive: true, force: true });
  return { capture, hep, control: new ControlServer(silent, () => []).stats() };
}

const source = (tree: object, over: Partial<MetricsSource> = {}): MetricsSource => ({ stats: () => tree, containers: () => [], notReady: () => undefined, ...over });

describe('Prometheus metrics over the stats tree', () => {
  it('every number of the stats line is exposed as a metric', async () => {
    expect(uncoveredStats(await realStatsTree())).toEqual([]);
    // And a new counter nobody mapped is found:
    expect(uncoveredStats({ capture: { forwarded: 1, brandNew: 2 }, hep: { collectors: { 'udp://x:1': { sent: 1, spooled: 3 } } } })).toEqual([
      'capture.brandNew',
      'hep.collectors.udp://x:1.spooled',
    ]);
  });

  it('reads each value at scrape time, with causes, protocol and transport, and collector as labels', async () => {
    const tree = await realStatsTree();
    let reads = 0;
    const text = await metricsRegistry(source(tree, { stats: () => (reads++, tree) })).metrics();
    expect(reads).toBe(1); // one stats tree per scrape
    const lines = text.split('\n');
    const want = [
      '# TYPE hepbpf_messages_total counter',
      'hepbpf_messages_total{proto="sip",transport="udp"} 2',
      'hepbpf_messages_total{proto="diameter",transport="tcp"} 3',
      'hepbpf_messages_total{proto="sip",transport="tls"} 0',
      'hepbpf_forwarded_total 5',
      'hepbpf_duplicates_total 5',
      `hepbpf_kernel_lost_total{cause="ringbufFull"} ${COUNTER_NAMES.indexOf('ringbufFull')}`,
      `hepbpf_kernel_lost_total{cause="inflightFull"} ${COUNTER_NAMES.indexOf('inflightFull')}`,
      'hepbpf_failures_total{cause="sink"} 3',
      'hepbpf_hep_sent_total{collector="udp://127.0.0.1:9060"} 5',
      '# TYPE hepbpf_collector_up gauge',
      'hepbpf_collector_up{collector="udp://127.0.0.1:9060"} 1',
      'hepbpf_hep_queue_packets{collector="udp://127.0.0.1:9060"} 0',
      'hepbpf_container_hold_messages 0',
      'hepbpf_container_held_total 5', // every message waited for its names (counter), none waits now (gauge above)
      'hepbpf_control_clients_closed_total{cause="slowTailClients"} 0',
    ];
    expect(want.filter((w) => !lines.includes(w))).toEqual([]);
    expect(lines.some((l) => l.startsWith('process_resident_memory_bytes '))).toBe(true);
  });

  it('per-container series are bounded: the busiest, the rest summed as "other"', async () => {
    const containers = Array.from({ length: TOP_CONTAINERS + 5 }, (_, i) => ({ name: `c${i}`, messages: i + 1 }));
    const text = await metricsRegistry(source({}, { containers: () => containers })).metrics();
    const series = text.split('\n').filter((l) => l.startsWith('hepbpf_container_messages{'));
    expect(series.length).toBe(TOP_CONTAINERS + 1);
    expect(series).toContain(`hepbpf_container_messages{container="c${TOP_CONTAINERS + 4}"} ${TOP_CONTAINERS + 5}`);
    expect(series).toContain('hepbpf_container_messages{container="other"} 15'); // 1 + 2 + 3 + 4 + 5
    expect(series.some((l) => l.includes('container="c4"'))).toBe(false);
  });

  it('serves /metrics, /healthz and /readyz over HTTP', async () => {
    let why: string | undefined = 'no collector reachable';
    const server = new MetricsServer(source({ capture: { forwarded: 7 } }, { notReady: () => why }));
    const addr = await server.listen('127.0.0.1:0');
    const get = async (path: string) => {
      const r = await fetch(`http://${addr}${path}`);
      return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
    };
    try {
      expect(await get('/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
      expect(await get('/readyz')).toMatchObject({ status: 503, body: 'not ready: no collector reachable\n' });
      why = undefined;
      expect(await get('/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
      const metrics = await get('/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(metrics.body.split('\n')).toContain('hepbpf_forwarded_total 7');
      expect((await get('/other')).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('a scrape whose stats source throws answers 500, and the next scrape works', async () => {
    let broken = true;
    const server = new MetricsServer(source({}, { stats: () => (broken ? (() => { throw new Error('boom'); })() : { capture: { forwarded: 1 } }) }));
    const addr = await server.listen('127.0.0.1:0');
    try {
      const r = await fetch(`http://${addr}/metrics`);
      expect([r.status, await r.text()]).toEqual([500, 'metrics failed: boom\n']);
      broken = false;
      expect((await (await fetch(`http://${addr}/metrics`)).text()).split('\n')).toContain('hepbpf_forwarded_total 1');
    } finally {
      await server.close();
    }
  });

  it('refuses a listen address it cannot use, naming the option', async () => {
    for (const bad of ['9464', 'localhost:9464', '127.0.0.1:99999', '::1:9464', '127.0.0.1:'])
      expect(() => parseListenAddress(bad), bad).toThrow(`--metrics-listen "${bad}": expected IP:PORT`);
    expect(parseListenAddress('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    const first = new MetricsServer(source({}));
    const addr = await first.listen('127.0.0.1:0');
    const second = new MetricsServer(source({}));
    await expect(second.listen(addr)).rejects.toThrow(`--metrics-listen ${addr}: EADDRINUSE`);
    await first.close();
  });
});
