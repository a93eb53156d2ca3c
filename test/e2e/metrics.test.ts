/**
 * Operations end to end: Debian's Prometheus scrapes `hepbpf run --metrics-listen`, known SIP
 * traffic goes by, and the counters are read back through Prometheus's HTTP API; /healthz and
 * /readyz with and without a reachable collector. The agent takes its options from a YAML
 * --config file and a HEPBPF_* variable, as an operator would set them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelSuiteSkipReason, REPO, startAgent } from '../helpers/agent.js';
import { freePort, tcpCollector } from '../helpers/collector.js';
import { stopByPid } from '../helpers/receivers.js';
import { decodeHep } from '../../src/hep/decode.js';

const why = kernelSuiteSkipReason('metrics end-to-end tests');
const TRAFFIC = resolve(REPO, 'test/fixtures/sip_traffic.py');

/** Prometheus from Debian, scraping `targets` (job name -> 127.0.0.1 port) every second; its data in `dir`. */
async function startPrometheus(dir: string, targets: Record<string, number>): Promise<{ proc: ChildProcess; port: number; query(q: string): Promise<Array<{ metric: Record<string, string>; value: number }>> }> {
  const port = await freePort();
  const jobs = Object.entries(targets).map(([job, p]) => `  - job_name: ${job}\n    static_configs:\n      - targets: ['127.0.0.1:${p}']\n`);
  writeFileSync(join(dir, 'prometheus.yml'), `global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n${jobs.join('')}`);
  let log = '';
  const proc = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr!.on('data', (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await fetch(`${base}/-/ready`).then((r) => r.ok, () => false);
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`prometheus not ready:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proc,
    port,
    async query(q: string) {
      const body = (await (await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as {
        status: string;
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== 'success') throw new Error(`query ${q}: ${JSON.stringify(body)}`);
      return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
  };
}

/** Polls a PromQL query until its single value is `want` (as scraped after the traffic); resolves with the last value seen. */
async function scrapedValue(prom: Awaited<ReturnType<typeof startPrometheus>>, q: string, want: number, timeoutMs = 20_000): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  let last: number | undefined;
  for (;;) {
    const r = await prom.query(q);
    last = r.length === 1 ? r[0].value : undefined;
    if (last === want || Date.now() > deadline) return last;
    await new Promise((res) => setTimeout(res, 200));
  }
}

const http = async (url: string) => {
  const r = await fetch(url);
  return { status: r.status, body: await r.text() };
};

describe.skipIf(!!why)('hepbpf run --metrics-listen, scraped by Prometheus', () => {
  let dir: string;
  let prom: Awaited<ReturnType<typeof startPrometheus>>;
  let trafficMetrics: number;
  let readinessMetrics: number;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-metrics-'));
    [trafficMetrics, readinessMetrics] = [await freePort(), await freePort()];
    prom = await startPrometheus(dir, { traffic: trafficMetrics, readiness: readinessMetrics });
  });
  afterAll(async () => {
    if (prom) await stopByPid(prom.proc);
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts known SIP over UDP and TCP exactly, as the collector received it', async () => {
    const [udpPort, udpPort2, tcpPort] = [await freePort(), await freePort(), await freePort()];
    const hep = await tcpCollector();
    const config = join(dir, 'hepbpf.yaml');
    writeFileSync(config, `# what an operator writes\nhep:\n  - ${hep.url}\nsip-ports: [${udpPort}, ${udpPort2}, ${tcpPort}]\n`);
    mkdirSync(join(dir, 'run'), { recursive: true });
    const env = { ...process.env, HEPBPF_SOCKET: join(dir, 'run', 'traffic.sock'), HEPBPF_METRICS_LISTEN: `127.0.0.1:${trafficMetrics}` };
    const agent = await startAgent(['run', '--config', config], env);
    try {
      expect(await scrapedValue(prom, 'up{job="traffic"}', 1)).toBe(1);
      expect(await http(`http://127.0.0.1:${trafficMetrics}/readyz`)).toEqual({ status: 200, body: 'ready\n' });
      for (const [mode, ...ports] of [['udp-unconnected', udpPort, udpPort2], ['udp-connected', udpPort, udpPort2], ['tcp-pipelined', tcpPort]]) {
        const r = spawnSync('python3', [TRAFFIC, String(mode), ...ports.map(String)], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
      }
      // What the traffic script sent: 3 SIP messages over UDP, 200 over TCP; the collector got each once.
      const packets = (await hep.waitFor(203)).map(decodeHep);
      const byTransport = (ipProto: number) => packets.filter((p) => p.ipProto === ipProto).length;
      expect([byTransport(17), byTransport(6), packets.length]).toEqual([3, 200, 203]);

      const job = '{job="traffic"}';
      const scraped = {
        sipUdp: await scrapedValue(prom, `hepbpf_messages_total{job="traffic",proto="sip",transport="udp"}`, 3),
        sipTcp: await scrapedValue(prom, `hepbpf_messages_total{job="traffic",proto="sip",transport="tcp"}`, 200),
        sipTls: await scrapedValue(prom, `hepbpf_messages_total{job="traffic",proto="sip",transport="tls"}`, 0),
        diameter: await scrapedValue(prom, `sum(hepbpf_messages_total{job="traffic",proto="diameter"})`, 0),
        forwarded: await scrapedValue(prom, `hepbpf_forwarded_total${job}`, 203),
        sent: await scrapedValue(prom, `hepbpf_hep_sent_total{job="traffic",collector="${hep.url}"}`, 203),
        dropped: await scrapedValue(prom, `sum(hepbpf_hep_dropped_total${job})`, 0),
        queued: await scrapedValue(prom, `hepbpf_hep_queue_packets{job="traffic",collector="${hep.url}"}`, 0),
        collectorUp: await scrapedValue(prom, `hepbpf_collector_up{job="traffic",collector="${hep.url}"}`, 1),
        kernelLost: await scrapedValue(prom, `sum(hepbpf_kernel_lost_total${job})`, 0),
        notSip: await scrapedValue(prom, `hepbpf_messages_dropped_total{job="traffic",cause="notSip"}`, 0),
      };
      expect(scraped).toEqual({ sipUdp: 3, sipTcp: 200, sipTls: 0, diameter: 0, forwarded: 203, sent: 203, dropped: 0, queued: 0, collectorUp: 1, kernelLost: 0, notSip: 0 });
      const { code, final } = await agent.stop();
      expect(code).toBe(0);
      // The stats line and the metrics say the same.
      expect(final?.capture).toMatchObject({ forwarded: 203, messages: { sip: { udp: 3, tcp: 200, tls: 0 } } });
    } finally {
      await agent.stop();
      await hep.close();
    }
  });

  it('/healthz answers while /readyz says no collector is reachable, until one is', async () => {
    const down = await tcpCollector();
    const collectorPort = down.port;
    await down.close(); // nothing listens there now
    const env = { ...process.env, HEPBPF_SOCKET: join(dir, 'run', 'readiness.sock') };
    const agent = await startAgent(['run', '--hep', `tcp://127.0.0.1:${collectorPort}`, '--metrics-listen', `127.0.0.1:${readinessMetrics}`, '--sip-ports', '9'], env);
    let collector: Server | undefined;
    try {
      const base = `http://127.0.0.1:${readinessMetrics}`;
      expect(await http(`${base}/healthz`)).toEqual({ status: 200, body: 'ok\n' });
      expect(await http(`${base}/readyz`)).toEqual({ status: 503, body: 'not ready: no collector reachable\n' });
      expect(await scrapedValue(prom, `hepbpf_collector_up{job="readiness"}`, 0)).toBe(0);

      collector = createServer((c) => c.resume());
      await new Promise<void>((r) => collector!.listen(collectorPort, '127.0.0.1', r));
      // The sender reconnects with a backoff of at most 5 s.
      let ready = { status: 0, body: '' };
      for (const deadline = Date.now() + 15_000; ready.status !== 200 && Date.now() < deadline; await new Promise((r) => setTimeout(r, 100)))
        ready = await http(`${base}/readyz`);
      expect(ready).toEqual({ status: 200, body: 'ready\n' });
      expect(await scrapedValue(prom, `hepbpf_collector_up{job="readiness"}`, 1)).toBe(1);
      expect((await agent.stop()).code).toBe(0);
      // Stopped: nothing answers any more, and Prometheus sees the target down.
      await expect(fetch(`${base}/healthz`)).rejects.toThrow();
      expect(await scrapedValue(prom, 'up{job="readiness"}', 0)).toBe(0);
    } finally {
      await agent.stop();
      if (collector) await new Promise((r) => collector!.close(r));
    }
  });
});
