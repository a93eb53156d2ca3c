/**
 * The compose deployment for real, with Debian's dockerd (private roots and socket) and Debian's
 * docker-compose. The repo's Dockerfile is built on bases made here from Debian's packages and the
 * host's Node (test/helpers/images.ts: no image registry is reachable). deploy/docker-compose.yml
 * starts the agent container (cap_drop ALL plus SYS_ADMIN and SYS_PTRACE); next to it a compose
 * project of two SIP services (test/fixtures/compose-sip: sipp UAS and UAC) makes calls; the HEP
 * collector is this test's UDP socket on 127.0.0.1 (the agent uses the host's network). Every
 * message on the wire (tcpdump in the services' namespace) must come out once, with the sending
 * compose service as HEP node name. `docker-compose down` must take the agent out within 10 s
 * with its probes: no BPF program, link or uprobe left.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelSuiteSkipReason, REPO } from '../helpers/agent.js';
import { bpfState } from '../helpers/bpf-state.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { cannotRunDocker, cgroupParentsBefore, containerPid, DOCKER, Dockerd, sippRootfsTar, unmountUnder } from '../helpers/containers.js';
import { buildHepbpfImage, localBases, NODE_BASE } from '../helpers/images.js';
import { LoopbackCapture, type WireMessage } from '../helpers/wire.js';
import { decodeHep } from '../../src/hep/decode.js';
import { until } from '../helpers/wait.js';

function skipReason(): string | undefined {
  const why = kernelSuiteSkipReason('compose end-to-end test');
  if (why) return why;
  const missing = cannotRunDocker() ?? (existsSync('/usr/bin/docker-compose') ? undefined : 'docker-compose missing: scripts/setup.sh --test installs it');
  if (missing && process.env.CI) throw new Error(`compose end-to-end test cannot run in CI: ${missing}`);
  if (missing) console.warn(`\n!!! SKIPPING compose end-to-end test: ${missing}\n`);
  return missing;
}
const why = skipReason();
const CALLS = 20;

describe.skipIf(!!why)('compose: the agent container next to a compose project of SIP services', () => {
  let dir: string;
  let dockerd: Dockerd;
  let hep: HepCollector;
  let env: NodeJS.ProcessEnv;
  const hadRunDir = existsSync('/run/hepbpf');
  const cgroupParents = cgroupParentsBefore(['docker']);
  const compose = (file: string, project: string, ...args: string[]) =>
    execFileSync('docker-compose', ['-f', file, '-p', project, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const AGENT = join(REPO, 'deploy/docker-compose.yml');
  const SIP = join(REPO, 'test/fixtures/compose-sip/docker-compose.yml');

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-compose-'));
    dockerd = await Dockerd.start(join(dir, 'docker'));
    localBases(dockerd.docker.bind(dockerd), dir);
    buildHepbpfImage(dockerd.docker.bind(dockerd), REPO);
    dockerd.docker('import', sippRootfsTar(dir), 'local/sipp:1');
    hep = await udpCollector();
    env = { ...process.env, DOCKER_HOST: `unix://${dockerd.socket}`, DOCKER_SOCKET: dockerd.socket, HEPBPF_HEP: hep.url, CALLS: String(CALLS) };
  }, 1_800_000);

  afterAll(async () => {
    for (const [file, project] of [[SIP, 'sipcalls'], [AGENT, 'hepbpf']]) {
      try {
        compose(file, project, 'down', '--timeout', '10');
      } catch {
        /* never started */
      }
    }
    await hep?.close();
    await dockerd?.stop();
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    if (!hadRunDir) rmSync('/run/hepbpf', { recursive: true, force: true });
    cgroupParents.removeNew();
  });

  it('the image: Node >= 20, tini, libbpf, no compiler; its size is printed', () => {
    const tools = dockerd.docker('run', '--rm', '--network', 'none', '--entrypoint', '/bin/sh', 'hepbpf:latest', '-c',
      'for t in clang gcc cc g++ make node-gyp; do command -v $t; done; node --version; ls /usr/bin/tini /usr/lib/x86_64-linux-gnu/libbpf.so.1 /usr/lib/x86_64-linux-gnu/libelf.so.1');
    expect(tools.split('\n')).toEqual([expect.stringMatching(/^v(2\d|[3-9]\d)\./), '/usr/bin/tini', '/usr/lib/x86_64-linux-gnu/libbpf.so.1', '/usr/lib/x86_64-linux-gnu/libelf.so.1']);
    expect(JSON.parse(dockerd.docker('image', 'inspect', '-f', '{{json .Config.Entrypoint}}', 'hepbpf:latest'))[0]).toBe('/usr/bin/tini');
    const mb = (image: string) => (Number(dockerd.docker('image', 'inspect', '-f', '{{.Size}}', image)) / 1e6).toFixed(0);
    console.log(`hepbpf:latest image size: ${mb('hepbpf:latest')} MB, of which its base ${NODE_BASE}: ${mb(NODE_BASE)} MB`);
  });

  it(`${CALLS} calls between two compose services: every message once, named by its service; down leaves nothing`, async () => {
    const before = bpfState();
    compose(AGENT, 'hepbpf', 'up', '-d');
    const agentId = compose(AGENT, 'hepbpf', 'ps', '-q', 'hepbpf').trim();
    // The agent logs to stderr; docker logs replays it on its own stderr.
    const agentLogs = () => execFileSync('sh', ['-c', `${DOCKER} -H unix://${dockerd.socket} logs ${agentId} 2>&1`], { encoding: 'utf8' });
    await until('agent container ready', () => /"msg":"ready"/.test(agentLogs()), 60_000);
    const inspect = JSON.parse(dockerd.docker('inspect', agentId))[0];
    expect(inspect.HostConfig.CapDrop).toEqual(['ALL']);
    expect(inspect.HostConfig.CapAdd.map((c: string) => c.replace(/^CAP_/, '')).sort()).toEqual(['SYS_ADMIN', 'SYS_PTRACE']);
    const exitCode = new Promise<string>((resolve) => {
      const w = spawn(DOCKER, ['-H', `unix://${dockerd.socket}`, 'wait', agentId], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      w.stdout!.on('data', (d: Buffer) => (out += d));
      w.once('exit', () => resolve(out.trim()));
    });

    compose(SIP, 'sipcalls', 'up', '-d', 'uas');
    const uasId = compose(SIP, 'sipcalls', 'ps', '-q', 'uas').trim();
    const uasPid = containerPid((f) => dockerd.docker('inspect', '-f', f, uasId));
    await until('sipp UAS bound', () => execFileSync('nsenter', ['-t', String(uasPid), '-n', 'ss', '-Hlun', 'sport = :5060'], { encoding: 'utf8' }).trim() !== '', 30_000);
    const capture = await LoopbackCapture.inNetns(uasPid, 'lo', '127.0.0.1', join(dir, 'sip.pcap'));
    let wire: WireMessage[];
    try {
      compose(SIP, 'sipcalls', 'up', '-d', '--no-deps', 'uac');
      const uacId = compose(SIP, 'sipcalls', 'ps', '-q', 'uac').trim();
      expect(execFileSync(DOCKER, ['-H', `unix://${dockerd.socket}`, 'wait', uacId], { encoding: 'utf8' }).trim(), 'sipp UAC: every call must succeed').toBe('0');
    } finally {
      wire = await capture.stop();
    }
    expect(wire.length).toBeGreaterThanOrEqual(CALLS * 6);

    const service = (port: number) => (port === 5070 ? 'uac' : port === 5060 ? 'uas' : `port ${port}`);
    const key = (srcPort: number, dstPort: number, payload: Buffer, node: string) => `${srcPort}>${dstPort} ${node} ${payload.toString('latin1')}`;
    const forwarded = (await hep.waitFor(wire.length, 30_000))
      .map((p) => decodeHep(p))
      .map((p) => key(p.srcPort!, p.dstPort!, p.payload!, p.nodeName!));
    expect(forwarded.sort()).toEqual(wire.map((m) => key(m.srcPort, m.dstPort, m.payload, service(m.srcPort))).sort());

    compose(SIP, 'sipcalls', 'down', '--timeout', '10');
    const t0 = Date.now();
    compose(AGENT, 'hepbpf', 'down', '--timeout', '10');
    expect(await exitCode, 'agent exit code: 0 after SIGTERM through tini, not 137 (SIGKILL at the timeout)').toBe('0');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(bpfState()).toEqual(before);
  });
});
