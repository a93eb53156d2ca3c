/**
 * The CLI as an operator uses it: `tail --json` capturing by itself and attached to a running
 * agent over the control socket, `run` without privileges, `doctor`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelSuiteSkipReason, CLI, REPO, startAgent } from '../helpers/agent.js';
import { freePort, udpCollector } from '../helpers/collector.js';
import { tailDuring } from '../helpers/tail.js';
import { decodeHep } from '../../src/hep/decode.js';

const why = kernelSuiteSkipReason('CLI end-to-end tests');

const TRAFFIC = resolve(REPO, 'test/fixtures/sip_traffic.py');

const sendTraffic = (port: number, port2: number) => () => {
  for (const mode of ['udp-unconnected', 'udp-connected']) {
    const r = spawnSync('python3', [TRAFFIC, mode, String(port), String(port2)], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  }
};

describe.skipIf(!!why)('hepbpf CLI', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-cli-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('tail --json captures by itself, filters by Call-ID and prints the documented record', async () => {
    const [port, port2] = [await freePort(), await freePort()];
    const env = { ...process.env, HEPBPF_SOCKET: join(dir, 'none.sock') };
    const { notice, records } = await tailDuring(['--call-id', 'udp-unconnected-sendto', '--full'], env, sendTraffic(port, port2), 1);
    expect(notice).toMatch(/ready, capturing/);
    expect(records.length).toBe(1);
    const r = records[0];
    expect(r).toMatchObject({
      proto: 'sip',
      transport: 'udp',
      src: { ip: '127.0.0.1', port: port2 },
      dst: { ip: '127.0.0.1', port },
      comm: expect.stringMatching(/^python3/),
      container: null,
      correlationId: 'udp-unconnected-sendto',
      callId: 'udp-unconnected-sendto',
      summary: 'MESSAGE sip:edge@127.0.0.1',
      truncated: false,
    });
    expect(r.ts).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(Math.abs(Date.parse(r.ts) - Date.now())).toBeLessThan(30_000);
    expect(r.size).toBe(Buffer.byteLength(r.payload, 'latin1'));
    expect(r.payload).toMatch(/^MESSAGE sip:edge@127\.0\.0\.1 SIP\/2\.0\r\n[\s\S]*Call-ID: udp-unconnected-sendto\r\n/);
    expect(typeof r.pid).toBe('number');
    expect(r.cgroupId).toMatch(/^\d+$/);
  });

  it('tail attaches to a running agent over its root-only control socket', async () => {
    const [port, port2] = [await freePort(), await freePort()];
    const socket = join(dir, 'run', 'hepbpf.sock');
    const env = { ...process.env, HEPBPF_SOCKET: socket };
    const hep = await udpCollector();
    const agent = await startAgent(['run', '--hep', hep.url], env);
    try {
      expect(statSync(socket).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o700);
      const { notice, records } = await tailDuring(['--port', String(port)], env, sendTraffic(port, port2), 3);
      expect(notice).toMatch(/ready, attached to the running agent/);
      expect(records.map((r) => r.callId).sort()).toEqual(['udp-connected-send', 'udp-connected-write', 'udp-unconnected-sendto']);
      expect((await agent.stop()).code).toBe(0);
    } finally {
      await hep.close();
    }
  });

  it('run without privileges exits 1 with one line saying what is missing', () => {
    // Root stripped of every capability: what a user or a container without CAP_BPF/CAP_PERFMON gets.
    const r = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', process.execPath, CLI, 'run', '--hep', 'udp://127.0.0.1:9060'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(/^hepbpf: missing capability CAP_BPF, CAP_PERFMON: run as root/);
  });

  it('rejects a malformed collector URL with one line', () => {
    const r = spawnSync(process.execPath, [CLI, 'run', '--hep', 'http://x'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe('hepbpf: bad HEP collector "http://x": expected udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (IPv6 as [::1])');
  });

  it('doctor reports this host as able to run the agent', () => {
    const r = spawnSync(process.execPath, [CLI, 'doctor'], { encoding: 'utf8' });
    expect(r.status, r.stdout).toBe(0);
    for (const check of ['privileges', 'kernel', 'BTF', 'lockdown', 'tracefs', 'build']) expect(r.stdout).toMatch(new RegExp(`^ok\\s+${check}\\b`, 'm'));
  });
});

describe.skipIf(!!why)('hepbpf run --sip-ports', () => {
  it('captures only sockets with one of the given ports', async () => {
    const [port, port2, other, other2] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const hep = await udpCollector();
    const agent = await startAgent(['run', '--hep', hep.url, '--sip-ports', `${port},5`]);
    try {
      for (const [a, b] of [[port, port2], [other, other2]]) {
        const r = spawnSync('python3', [TRAFFIC, 'udp-unconnected', String(a), String(b)], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
      }
      const packets = await hep.waitFor(1);
      expect(packets.map((p) => decodeHep(p)).map((p) => [p.srcPort, p.dstPort])).toEqual([[port2, port]]);
    } finally {
      expect((await agent.stop()).code).toBe(0);
      await hep.close();
    }
  });
});
