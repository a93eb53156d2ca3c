/**
 * Container churn with the light-weight stand-in for a runtime: cgroup v2 directories
 * named as Docker's systemd driver names them, each with a process moved into it that sends SIP
 * while others are created and removed. Every message must name the cgroup its sender was in
 * (never a neighbour, never a removed one), and the agent's caches must shrink back once they are gone.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { findCgroup2Mount } from '../../src/enrich/cgroups.js';
import type { TailRecord } from '../../src/output/tail-record.js';
import { sleep, until } from '../helpers/wait.js';

const why = kernelSuiteSkipReason('container churn test');
const CONTAINERS = 50;
const MESSAGES = 5;
const AT_ONCE = 5;

// Each sender: SIP MESSAGE datagrams whose Call-ID names the container it runs in.
const SENDER = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for k in range(${MESSAGES}):
    cid = "churn-%s-%d" % (sys.argv[2], k)
    msg = ("MESSAGE sip:r@127.0.0.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-%s\\r\\nCall-ID: %s\\r\\nCSeq: 1 MESSAGE\\r\\nContent-Length: 0\\r\\n\\r\\n" % (cid, cid))
    s.sendto(msg.encode(), ("127.0.0.1", int(sys.argv[1])))
    time.sleep(0.02)
`;

describe.skipIf(!!why)('container churn', () => {
  let dir: string;
  let agent: RunningAgent;
  let tail: RunningAgent;
  let hep: HepCollector;
  let env: NodeJS.ProcessEnv;
  const records: TailRecord[] = [];
  const parent = join(findCgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'))?.mountPoint ?? '/nonexistent', `hepbpf-churn-${process.pid}.slice`);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-churn-'));
    hep = await udpCollector();
    env = { ...process.env, HEPBPF_SOCKET: join(dir, 'hepbpf.sock') };
    agent = await startAgent(['run', '--hep', hep.url, '--docker-socket', join(dir, 'no-docker.sock')], env);
    tail = await startAgent(['tail', '--json'], env);
    let partial = '';
    tail.proc.stdout!.on('data', (d: Buffer) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) if (l) records.push(JSON.parse(l) as TailRecord);
    });
    mkdirSync(parent);
  });

  afterAll(async () => {
    await tail?.stop();
    await agent?.stop();
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
    try {
      execFileSync('find', [parent, '-depth', '-type', 'd', '-delete']);
    } catch {
      /* already gone */
    }
  });

  it(`${CONTAINERS} containers come and go while traffic flows: nothing misattributed, caches back to baseline`, async () => {
    const receiver = createSocket('udp4');
    const received: string[] = [];
    receiver.on('message', (m) => received.push(/Call-ID: (\S+)/.exec(m.toString())![1]));
    await new Promise<void>((r) => receiver.bind(0, '127.0.0.1', r));
    const port = receiver.address().port;
    writeSender(dir);

    const ids: string[] = [];
    const running: Array<Promise<unknown>> = [];
    const dirs: string[] = [];
    for (let i = 0; i < CONTAINERS; i++) {
      const id = randomBytes(32).toString('hex');
      ids.push(id);
      const cg = join(parent, `docker-${id}.scope`);
      mkdirSync(cg);
      dirs.push(cg);
      // The shell moves itself into the cgroup, then becomes the sender: its first message is sent from inside.
      const proc = spawn('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec python3 ${join(dir, 'sender.py')} ${port} ${i}`], { stdio: 'ignore' });
      running.push(new Promise((r) => proc.once('exit', r)));
      if (i >= AT_ONCE) {
        await running[i - AT_ONCE];
        rmdirSync(dirs[i - AT_ONCE]); // removed while the others still send
      }
    }
    await Promise.all(running);
    for (const d of dirs.slice(-AT_ONCE)) rmdirSync(d);

    const total = CONTAINERS * MESSAGES;
    for (let i = 0; i < 100 && (received.length < total || records.length < total); i++) await sleep(100);
    await sleep(700);
    expect(received.length, 'the receiver got every datagram').toBe(total);
    const churn = records.filter((r) => r.callId?.startsWith('churn-'));
    expect(churn.map((r) => r.callId).sort(), 'every message once').toEqual(received.sort());
    const wrong = churn
      .map((r) => ({ callId: r.callId!, want: ids[Number(r.callId!.split('-')[1])], got: r.container?.id, runtime: r.container?.runtime, peer: r.peerContainer }))
      .filter((x) => x.got !== x.want || x.runtime !== 'docker' || x.peer !== null);
    const brief = (x: (typeof wrong)[number]) => `${x.callId}: want ${x.want.slice(0, 8)} got ${x.got?.slice(0, 8)} ${x.runtime} peer ${x.peer?.id.slice(0, 8) ?? x.peer}`;
    expect(wrong.slice(0, 5).map(brief), 'messages attributed to another (or no) container, or to a peer container').toEqual([]);

    // Removed cgroups are forgotten one sweep (5 s) after a sweep finds them gone: within 10 s.
    const listed = () => execFileSync(process.execPath, [CLI, 'containers', '--json'], { env, encoding: 'utf8' }).trim();
    await until(() => `removed containers still listed after 11 s: ${listed().slice(0, 300)}`, () => listed() === '', 11_000);
    await tail.stop();
    const { final } = await agent.stop();
    const sizes = (final!.capture as { containers: Record<string, number> }).containers;
    expect(sizes).toMatchObject({ containers: 0, holding: 0 });
    // What stays: the host receiver's loopback endpoint, and host cgroups the test's own processes
    // ran in (the receiver, the shell before it moved); every container's endpoints are forgotten.
    expect(sizes.localEndpoints).toBeLessThanOrEqual(1);
    expect(sizes.cgroups).toBeLessThanOrEqual(3);
    expect(sizes.paths).toBeLessThanOrEqual(3);
    receiver.close();
  });
});

function writeSender(dir: string): void {
  execFileSync('sh', ['-c', `cat > ${join(dir, 'sender.py')}`], { input: SENDER });
}
