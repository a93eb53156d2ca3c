/**
 * Container attribution end to end with real runtimes: Debian's dockerd and podman, an image made
 * from the host's own sipp, a sipp UAC in one container and a UAS in another joined by a veth pair
 * on addresses this test chose (10.231.0.0/24, only between the two namespaces it made). Every
 * message on the wire (tcpdump in the UAS's namespace) must come out of the agent once, naming the
 * sending container, its compose service, and the receiving container as peerContainer; the HEP
 * node name (0x13, read by hep-js, the decoder Homer's hepop uses) carries the sender's name.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { cannotRunDocker, cgroupParentsBefore, containerPid, Dockerd, Podman, sippRootfsTar, unmountUnder, vethBetween } from '../helpers/containers.js';
import { LoopbackCapture, type WireMessage } from '../helpers/wire.js';
import type { TailRecord } from '../../src/output/tail-record.js';
import { sleep, until } from '../helpers/wait.js';

const hepjs = createRequire(import.meta.url)('hep-js') as { decapsulate(b: Buffer): { rcinfo: Record<string, unknown>; payload: string } };

function skipReason(): string | undefined {
  const why = kernelSuiteSkipReason('container end-to-end tests');
  if (why) return why;
  const noDocker = cannotRunDocker();
  if (noDocker && process.env.CI) throw new Error(`container end-to-end tests cannot run in CI: ${noDocker}`);
  if (noDocker) console.warn(`\n!!! SKIPPING container end-to-end tests: ${noDocker}\n`);
  return noDocker;
}
const why = skipReason();
const CALLS = 20;


/** Whether a socket in the network namespace of `pid` listens on `port` (TCP) or is bound to it (UDP). */
const listening = (pid: number, transport: 'udp' | 'tcp', port: number) =>
  execFileSync('nsenter', ['-t', String(pid), '-n', 'ss', transport === 'udp' ? '-Hlun' : '-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim() !== '';

interface Expected {
  sender: string;
  receiver: string;
}

/** One line per message: addresses and payload from the wire, with the container names it must carry. */
const key = (m: { srcIp: string; srcPort: number; dstIp: string; dstPort: number; payload: string }, sender: string, peer: string) =>
  `${m.srcIp}:${m.srcPort}>${m.dstIp}:${m.dstPort} ${sender}->${peer} ${m.payload}`;
const wireKeys = (wire: WireMessage[], who: (ip: string) => string) =>
  wire.map((m) => key({ ...m, payload: m.payload.toString('latin1') }, who(m.srcIp), who(m.dstIp))).sort();
const recordKeys = (recs: TailRecord[]) =>
  recs.map((r) => key({ srcIp: r.src.ip, srcPort: r.src.port, dstIp: r.dst.ip, dstPort: r.dst.port, payload: r.payload! }, r.container?.name ?? 'host', r.peerContainer?.name ?? 'none')).sort();

describe.skipIf(!!why)('containers: docker and podman', () => {
  let dir: string;
  let dockerd: Dockerd;
  let podman: Podman;
  let agent: RunningAgent;
  let tail: RunningAgent;
  let hep: HepCollector;
  const records: TailRecord[] = [];
  let env: NodeJS.ProcessEnv;
  let tar: string;
  const cgroupParents = cgroupParentsBefore(['docker', 'libpod_parent']);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-containers-'));
    tar = sippRootfsTar(dir);
    dockerd = await Dockerd.start(join(dir, 'docker'));
    dockerd.docker('import', tar, 'local/sipp:1');
    podman = new Podman(join(dir, 'podman'));
    podman.podman('import', tar, 'local/sipp:1');
    hep = await udpCollector();
    env = { ...process.env, HEPBPF_SOCKET: join(dir, 'hepbpf.sock') };
    agent = await startAgent(['run', '--hep', hep.url, '--docker-socket', dockerd.socket, '--podman-root', podman.root], env);
    tail = await startAgent(['tail', '--json', '--full'], env);
    let partial = '';
    tail.proc.stdout!.on('data', (d: Buffer) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) if (l) records.push(JSON.parse(l) as TailRecord);
    });
  });

  afterAll(async () => {
    await tail?.stop();
    const stopped = await agent?.stop();
    expect(stopped?.code).toBe(0);
    await hep?.close();
    for (const c of ['ims-pcscf-1', 'ims-scscf-1']) {
      try {
        dockerd?.docker('rm', '-f', c);
      } catch {
        /* not created */
      }
    }
    await dockerd?.stop();
    try {
      podman?.podman('rm', '-fa');
      podman?.podman('rmi', '-af');
    } catch {
      /* nothing to remove */
    }
    // podman's overlay storage may stay mounted under dir: unmount before removing it.
    unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
    cgroupParents.removeNew();
  });

  it(`docker: ${CALLS} calls between two compose services, every message names both containers`, async () => {
    const run = (name: string, service: string) =>
      dockerd.docker('run', '-d', '--network', 'none', '--name', name, '--label', 'com.docker.compose.project=ims', '--label', `com.docker.compose.service=${service}`, 'local/sipp:1', '/usr/bin/sleep', '1000000');
    // Both start after the agent: each must be named from its first message.
    const uasId = run('ims-pcscf-1', 'pcscf');
    const uacId = run('ims-scscf-1', 'scscf');
    const pid = (n: string) => containerPid((f) => dockerd.docker('inspect', '-f', f, n));
    vethBetween(pid('ims-scscf-1'), '10.231.0.1', pid('ims-pcscf-1'), '10.231.0.2', 'hbc0');
    const capture = await LoopbackCapture.inNetns(pid('ims-pcscf-1'), 'hbc0b', '10.231.0.1', join(dir, 'docker.pcap'));
    records.length = 0;
    hep.packets.length = 0;
    let code: unknown;
    let stopping;
    try {
      dockerd.docker('exec', '-d', 'ims-pcscf-1', '/usr/bin/sipp', '-sn', 'uas', '-i', '10.231.0.2', '-p', '5060', '-t', 'u1', '-nostdin');
      await until('sipp UAS bound', () => listening(pid('ims-pcscf-1'), 'udp', 5060));
      const uac = spawn('/usr/bin/docker', ['-H', `unix://${dockerd.socket}`, 'exec', 'ims-scscf-1', '/usr/bin/sipp', '-sn', 'uac', '10.231.0.2:5060', '-i', '10.231.0.1', '-p', '5070', '-t', 'u1', '-m', String(CALLS), '-r', '20', '-nostdin', '-timeout', '60', '-timeout_error'], { stdio: 'ignore' });
      code = await new Promise((r) => uac.once('exit', r));
    } finally {
      stopping = capture.stop(); // tcpdump must not outlive a failed test
    }
    expect(code, 'sipp UAC: every call must succeed').toBe(0);
    const wire = await stopping;
    expect(wire.length).toBeGreaterThanOrEqual(CALLS * 6);

    const who = (ip: string) => (ip === '10.231.0.1' ? 'ims-scscf-1' : ip === '10.231.0.2' ? 'ims-pcscf-1' : `unexpected ${ip}`);
    for (let i = 0; i < 100 && records.length < wire.length; i++) await sleep(100);
    await sleep(700); // anything beyond the wire's messages would show now
    expect(recordKeys(records)).toEqual(wireKeys(wire, who));
    const ids: Record<string, string> = { 'ims-pcscf-1': uasId, 'ims-scscf-1': uacId };
    const service: Record<string, string> = { 'ims-pcscf-1': 'pcscf', 'ims-scscf-1': 'scscf' };
    for (const r of records) {
      expect(r.container).toEqual({ id: ids[r.container!.name], name: r.container!.name, runtime: 'docker', image: 'local/sipp:1', project: 'ims', service: service[r.container!.name] });
      expect(r.peerContainer?.id).toBe(ids[r.peerContainer!.name]);
      expect(r.peerContainer?.service).toBe(service[r.peerContainer!.name]);
    }

    // HEP: the same messages once, each with the sender's name as node name, read by an independent decoder.
    await hep.waitFor(wire.length); // it settles, so extra packets would be seen too
    const viaHep = hep.packets.map((p) => hepjs.decapsulate(p));
    expect(viaHep.map((h) => `${h.rcinfo.srcIp}>${h.rcinfo.dstIp} ${h.rcinfo.hepNodeName} ${h.payload}`).sort()).toEqual(
      wire.map((m) => `${m.srcIp}>${m.dstIp} ${who(m.srcIp)} ${m.payload.toString('latin1')}`).sort(),
    );

    // hepbpf containers: both, with the messages each sent (as container) and received (as peer).
    const list = execFileSync(process.execPath, [CLI, 'containers', '--json'], { env, encoding: 'utf8' })
      .trim().split('\n').map((l) => JSON.parse(l) as { container: { name: string; runtime: string; service: string }; messages: number; peerMessages: number });
    const sent = (ip: string) => wire.filter((m) => m.srcIp === ip).length;
    for (const [name, ip] of [['ims-scscf-1', '10.231.0.1'], ['ims-pcscf-1', '10.231.0.2']] as const) {
      const row = list.find((c) => c.container.name === name);
      expect(row, `${name} in hepbpf containers`).toMatchObject({ container: { runtime: 'docker', service: service[name] }, messages: sent(ip), peerMessages: wire.length - sent(ip) });
    }
    const human = execFileSync(process.execPath, [CLI, 'containers'], { env, encoding: 'utf8' });
    expect(human).toMatch(/docker\s+ims-pcscf-1\s+ims\/pcscf\s+[0-9a-f]{12}\s+\d+/);
  });

  it('docker: SIP over TLS between the two containers, through the libssl of their image (found through /proc/PID/root)', async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=pcscf'], { stdio: 'ignore' });
    for (const f of ['cert.pem', 'key.pem']) dockerd.docker('cp', join(dir, f), `ims-pcscf-1:/${f}`);
    const request = Buffer.from('OPTIONS sip:pcscf@10.231.0.2:5061;transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 10.231.0.1;branch=z9hG4bK-ctls\r\nCall-ID: container-tls@ims\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n');
    const response = Buffer.from('SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 10.231.0.1;branch=z9hG4bK-ctls\r\nCall-ID: container-tls@ims\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n');
    const exec = (...args: string[]) => spawn('/usr/bin/docker', ['-H', `unix://${dockerd.socket}`, 'exec', '-i', ...args], { stdio: ['pipe', 'pipe', 'ignore'] });
    const output = (p: ReturnType<typeof exec>) => {
      const out: Buffer[] = [];
      p.stdout!.on('data', (d: Buffer) => out.push(d));
      return () => Buffer.concat(out);
    };
    records.length = 0;
    const server = exec('ims-pcscf-1', '/usr/bin/openssl', 's_server', '-accept', '10.231.0.2:5061', '-cert', '/cert.pem', '-key', '/key.pem', '-quiet', '-naccept', '1');
    const serverOut = output(server);
    const pid = containerPid((f) => dockerd.docker('inspect', '-f', f, 'ims-pcscf-1'));
    await until('openssl s_server listening', () => listening(pid, 'tcp', 5061));
    const client = exec('ims-scscf-1', '/usr/bin/openssl', 's_client', '-connect', '10.231.0.2:5061', '-quiet', '-no_ign_eof');
    const clientOut = output(client);
    // Started after the agent: its image's libssl (a file in dockerd's overlay layers, not the host's)
    // must be probed before the client talks.
    const layers = join(dir, 'docker', 'data', 'overlay2');
    const imageLibssl = execFileSync('find', [layers, '-path', '*/diff/*', '-name', 'libssl.so.3', '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')[0];
    const inode = statSync(imageLibssl).ino;
    const probed = () => agent.logs.filter((l) => l.msg === 'TLS library probed').map((l) => String(l.file));
    await until(`image libssl (inode ${inode}) probed`, () => probed().some((f) => f.endsWith(`:${inode}`)));
    client.stdin!.write(request);
    await until('request decrypted by the server', () => serverOut().equals(request));
    server.stdin!.write(response);
    await until('response decrypted by the client', () => clientOut().equals(response));
    client.stdin!.end();
    await Promise.all([server, client].map((p) => new Promise((r) => (p.exitCode === null ? p.once('exit', r) : r(null)))));
    await until('both TLS messages in tail', () => records.filter((r) => r.transport === 'tls').length >= 2);
    await sleep(700); // anything beyond them would show now

    const tls = records.filter((r) => r.transport === 'tls');
    expect(tls.map((r) => [r.payload, r.container?.name, r.peerContainer?.name, r.dst.ip, r.dst.port])).toEqual([
      [request.toString('latin1'), 'ims-scscf-1', 'ims-pcscf-1', '10.231.0.2', 5061],
      [response.toString('latin1'), 'ims-pcscf-1', 'ims-scscf-1', '10.231.0.1', tls[0].src.port],
    ]);
  });

  it('podman: a sipp call inside one container is attributed to it at both ends', async () => {
    const name = `hepbpf-podman-${process.pid}`;
    const id = podman.podman('run', '-d', '--network', 'none', '--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096', '--name', name, 'local/sipp:1', '/usr/bin/sleep', '1000000');
    const pid = Number(podman.podman('inspect', '-f', '{{.State.Pid}}', name));
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(`0::/libpod_parent/libpod-${id}`);
    execFileSync('nsenter', ['-t', String(pid), '-n', 'ip', 'link', 'set', 'lo', 'up']);
    const capture = await LoopbackCapture.inNetns(pid, 'lo', '127.0.0.1', join(dir, 'podman.pcap'));
    records.length = 0;
    let stopping;
    try {
      podman.podman('exec', '-d', name, '/usr/bin/sipp', '-sn', 'uas', '-i', '127.0.0.1', '-p', '5060', '-t', 'u1', '-nostdin');
      await until('sipp UAS bound', () => listening(pid, 'udp', 5060));
      podman.podman('exec', name, '/usr/bin/sipp', '-sn', 'uac', '127.0.0.1:5060', '-i', '127.0.0.1', '-p', '5070', '-t', 'u1', '-m', '5', '-r', '10', '-nostdin', '-timeout', '60', '-timeout_error');
    } finally {
      stopping = capture.stop(); // tcpdump must not outlive a failed test
    }
    const wire = await stopping;
    expect(wire.length).toBeGreaterThanOrEqual(5 * 6);
    for (let i = 0; i < 100 && records.length < wire.length; i++) await sleep(100);
    await sleep(700); // anything beyond the wire's messages would show now
    expect(recordKeys(records)).toEqual(wireKeys(wire, () => name));
    for (const r of records) expect(r.container).toMatchObject({ id, name, runtime: 'podman', image: 'localhost/local/sipp:1' });
  });
});
