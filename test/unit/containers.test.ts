import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { containerFromCgroupPath } from '../../src/enrich/cgroup-path.js';
import { cgroup2PathOf, CgroupIndex, findCgroup2Mount } from '../../src/enrich/cgroups.js';
import { ContainerResolver, type ContainerIdentity } from '../../src/enrich/containers.js';
import { containerFilter } from '../../src/enrich/container-filter.js';
import { HeldPayloads } from '../../src/enrich/held-payloads.js';
import { indexPods, KubernetesPods } from '../../src/enrich/kubernetes.js';
import { Attribution } from '../../src/enrich/attribution.js';
import { EndpointKeys, EndpointTable } from '../../src/enrich/endpoint-table.js';
import { NodeNameTemplate } from '../../src/output/node-name.js';
import { encodeTailEvent, TailEventReader, type TailEventFields } from '../../src/output/tail-protocol.js';
import { formatTailLine, toTailRecord } from '../../src/output/tail-record.js';
import type { CaptureEvent } from '../../src/enrich/event.js';
import type { Message } from '../../src/stream/message.js';

const ID = 'f3b0c1d2e3a4958677889900aabbccddeeff00112233445566778899aabbccdd';
const ID2 = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('container id from cgroup v2 paths, as real hosts name them', () => {
  const cases: Array<[string, string, ReturnType<typeof containerFromCgroupPath>]> = [
    ['docker, systemd driver', `/system.slice/docker-${ID}.scope`, { runtime: 'docker', id: ID }],
    ['docker, cgroupfs driver', `/docker/${ID}`, { runtime: 'docker', id: ID }],
    ['docker in docker', `/docker/${ID2}/docker/${ID}`, { runtime: 'docker', id: ID }],
    ['containerd CRI, systemd driver', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice/cri-containerd-${ID}.scope`,
      { runtime: 'containerd', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['containerd in kind (kubelet.slice)', `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice/cri-containerd-${ID}.scope`,
      { runtime: 'containerd', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['containerd nested under containerd.service', `/system.slice/containerd.service/kubepods-besteffort-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice:cri-containerd:${ID}`,
      { runtime: 'containerd', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['CRI-O', `/kubepods.slice/kubepods-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice/crio-${ID}.scope`, { runtime: 'cri-o', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['podman, systemd', `/machine.slice/libpod-${ID}.scope`, { runtime: 'podman', id: ID }],
    ['podman, systemd, process in a sub-cgroup', `/machine.slice/libpod-${ID}.scope/container`, { runtime: 'podman', id: ID }],
    ['podman, cgroupfs', `/libpod_parent/libpod-${ID}`, { runtime: 'podman', id: ID }],
    ['kubelet cgroupfs driver', `/kubepods/burstable/pod1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d/${ID}`, { runtime: 'kubernetes', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['relative to a cgroup namespace', `/../../besteffort/pod1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d/${ID}`, { runtime: 'kubernetes', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['relative to a cgroup namespace, systemd', `/../kubepods-besteffort-pod1d2c3b4a_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice/cri-containerd-${ID}.scope`,
      { runtime: 'containerd', id: ID, podUid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }],
    ['podman conmon is not the container', `/machine.slice/libpod-conmon-${ID}.scope`, null],
    ['CRI-O conmon is not the container', `/kubepods.slice/crio-conmon-${ID}.scope`, null],
    ['host: a systemd service', '/system.slice/ssh.service', null],
    ['host: the root', '/', null],
    ['host: a user session', '/user.slice/user-1000.slice/session-3.scope', null],
    ['a 64-hex directory that no runtime made', `/mine/${ID}`, null],
  ];
  for (const [what, path, want] of cases) it(what, () => expect(containerFromCgroupPath(path)).toEqual(want));
});

describe('cgroup v2 mount and id -> path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hepbpf-cgroups-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('finds the v2 mount of a hybrid host in mountinfo (not /sys/fs/cgroup)', () => {
    const mountinfo = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(findCgroup2Mount(mountinfo)).toEqual({ mountPoint: '/sys/fs/cgroup/unified', root: '/' });
    expect(findCgroup2Mount('50 1 0:40 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw')).toEqual({ mountPoint: '/sys/fs/cgroup', root: '/kubepods/pod1' });
    expect(cgroup2PathOf(`12:pids:/docker/${ID}\n0::/docker/${ID}\n`)).toBe(`/docker/${ID}`);
  });

  it('learns a path from /proc/PID/cgroup when its inode is the cgroup id, forgets it once removed', async () => {
    const mount = join(dir, 'unified');
    const cg = join(mount, 'docker', ID);
    mkdirSync(cg, { recursive: true });
    mkdirSync(join(dir, 'proc', '42'), { recursive: true });
    writeFileSync(join(dir, 'proc', '42', 'cgroup'), `0::/docker/${ID}\n`);
    const index = new CgroupIndex({ mount: { mountPoint: mount, root: '/' }, procRoot: join(dir, 'proc') });
    const ino = statSync(cg, { bigint: true }).ino;
    expect(await index.resolve(ino, 42)).toBe(`/docker/${ID}`);
    expect(await index.resolve(ino + 1n, 42), 'the pid moved since: its path is not this cgroup, nor any other').toBeUndefined();
    const other = join(mount, 'system.slice', `docker-${ID2}.scope`);
    mkdirSync(other, { recursive: true });
    await sleep(1000); // searches are rate-limited to one a second
    expect(await index.resolve(statSync(other, { bigint: true }).ino, 43), 'the pid exited: found by its inode').toBe(`/system.slice/docker-${ID2}.scope`);
    expect(index.unresolved).toBe(1);
    rmSync(join(mount, 'system.slice'), { recursive: true });
    expect(await index.sweep()).toHaveLength(1);
    expect(await index.sweep()).toEqual([]);
    rmSync(cg, { recursive: true });
    expect(await index.sweep()).toEqual([ino]);
    expect(index.size).toBe(0);
  });
});

describe('Kubernetes names (recorded API server response: no cluster can run here)', () => {
  // Recorded fixture, trimmed: GET /api/v1/pods?fieldSelector=spec.nodeName=worker-1 of a containerd node.
  const podList = {
    kind: 'PodList',
    apiVersion: 'v1',
    items: [
      {
        metadata: { name: 'pcscf-7d9f8c6b5-x2x4q', namespace: 'ims', uid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' },
        spec: { nodeName: 'worker-1' },
        status: {
          phase: 'Running',
          containerStatuses: [{ name: 'kamailio', containerID: `containerd://${ID}`, image: 'registry.local/kamailio:5.6', ready: true }],
          initContainerStatuses: [{ name: 'init-config', containerID: `containerd://${ID2}` }],
        },
      },
      { metadata: { name: 'pending-pod', namespace: 'ims', uid: '99999999-0000-0000-0000-000000000000' }, status: { phase: 'Pending' } },
    ],
  };

  it('indexes pods by container id and pod UID', () => {
    const { byContainer, byPodUid } = indexPods(podList);
    expect(byContainer.get(ID)).toEqual({ pod: 'pcscf-7d9f8c6b5-x2x4q', namespace: 'ims', container: 'kamailio' });
    expect(byContainer.get(ID2)?.container).toBe('init-config');
    expect(byPodUid.get('99999999-0000-0000-0000-000000000000')).toEqual({ pod: 'pending-pod', namespace: 'ims' });
  });

  it('asks the API server for this node only, with the service account token (a local server replays the recording)', async () => {
    const seen: Array<{ url?: string; auth?: string }> = [];
    const server = createServer((req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(podList));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const pods = new KubernetesPods({ url: `http://127.0.0.1:${port}`, nodeName: 'worker-1', token: 'tok' });
      expect(await pods.lookup(ID)).toEqual({ pod: 'pcscf-7d9f8c6b5-x2x4q', namespace: 'ims', container: 'kamailio' });
      expect(await pods.lookup(ID), 'a hit asks nothing').toBeDefined();
      expect(seen).toEqual([{ url: '/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1', auth: 'Bearer tok' }]);
      expect(await pods.lookup('f'.repeat(64)), 'a miss within 2 s of a refresh does not ask again').toBeUndefined();
      expect(seen.length).toBe(1);
    } finally {
      server.close();
    }
  });

  it('the CRI labels make pod, namespace and container name', async () => {
    const cgroups = { resolve: async () => `/kubepods/burstable/pod1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d/${ID}`, sweep: async () => [], pathOf: () => 'x', size: 1 };
    const kubernetes = { lookup: async () => ({ pod: 'pcscf-7d9f8c6b5-x2x4q', namespace: 'ims', container: 'kamailio' }) };
    const r = new ContainerResolver(cgroups as unknown as CgroupIndex, { kubernetes: kubernetes as unknown as KubernetesPods });
    expect(r.lookup(5n, 1)).toBeUndefined();
    await sleep(10);
    expect(r.lookup(5n, 1)).toEqual({ id: ID, name: 'kamailio', runtime: 'kubernetes', pod: 'pcscf-7d9f8c6b5-x2x4q', namespace: 'ims' });
  });
});

/** A resolver whose lookups finish when the test says so. */
function fakeResolver(paths: Record<string, string>) {
  const gates: Array<() => void> = [];
  const cgroups = {
    resolve: (id: bigint) => new Promise<string>((r) => gates.push(() => r(paths[String(id)] ?? '/'))),
    sweep: async () => [],
    pathOf: () => 'x',
    size: 0,
  };
  const docker = { inspect: async (id: string) => ({ name: `name-${id.slice(0, 4)}`, labels: { 'com.docker.compose.service': `svc-${id.slice(0, 4)}` } }) };
  const resolver = new ContainerResolver(cgroups as unknown as CgroupIndex, { docker: docker as never });
  return { resolver, open: async () => { while (gates.length) gates.shift()!(); await sleep(5); } };
}

let ts = 1_000_000_000n;
function message(over: Partial<Message>): Message {
  return {
    tsNs: (ts += 1000n), proto: 'sip', transport: 'udp', family: 4, src: { ip: '10.0.0.1', port: 5070 }, dst: { ip: '10.0.0.2', port: 5060 },
    pid: 10, tid: 10, comm: 'sipp', cgroupId: 1n, netns: 0, sockId: 1n, direction: 'egress', payload: Buffer.from('INVITE'), size: 6, truncated: false, peerUnknown: false, connectionUnknown: false, ...over,
  };
}
const event = (m: Message): CaptureEvent => ({ message: m, payload: m.payload, summary: 's', wallUs: 0, correlationId: 'c', container: null, peerContainer: null });

describe('attribution: names without waiting on the hot path, bounded hold otherwise', () => {
  it('holds a message until both containers are named, then sends it with both; order is kept', async () => {
    const { resolver, open } = fakeResolver({ '1': `/docker/${ID}`, '2': `/docker/${ID2}` });
    const out: CaptureEvent[] = [];
    const a = new Attribution(resolver, (ev) => out.push({ ...ev, payload: Buffer.from(ev.payload) }), { holdMs: 1000 });
    const invite = message({});
    a.learn(invite);
    a.submit(event(invite));
    const ingress = message({ direction: 'ingress', cgroupId: 2n, pid: 20, payload: invite.payload });
    a.learn(ingress);
    a.counterpart(invite, ingress); // what LocalDedup pairs
    const reply = message({ src: { ip: '10.0.0.2', port: 5060 }, dst: { ip: '10.0.0.1', port: 5070 }, cgroupId: 2n, pid: 20, payload: Buffer.from('200 OK') });
    a.learn(reply);
    a.submit(event(reply));
    expect(out).toEqual([]);
    await open();
    expect(out.map((e) => [e.payload.toString(), e.container?.name, e.container?.service, e.peerContainer?.name])).toEqual([
      ['INVITE', `name-${ID.slice(0, 4)}`, `svc-${ID.slice(0, 4)}`, `name-${ID2.slice(0, 4)}`],
      ['200 OK', `name-${ID2.slice(0, 4)}`, `svc-${ID2.slice(0, 4)}`, `name-${ID.slice(0, 4)}`],
    ]);
    expect(a.stats).toMatchObject({ held: 2, unnamed: 0, peerFromTable: 1, peerFromCounterpart: 1 });
    // Everything known now: the next message goes straight through, nothing held.
    const again = message({ payload: Buffer.from('BYE') });
    a.submit(event(again));
    expect(out.length).toBe(3);
    expect(a.stats.held).toBe(2);
  });

  it('the receiver\'s copy came first: the sender (its counterpart) is still `container`', async () => {
    const { resolver, open } = fakeResolver({ '1': `/docker/${ID}`, '2': `/docker/${ID2}` });
    const out: CaptureEvent[] = [];
    const a = new Attribution(resolver, (ev) => out.push(ev));
    const received = message({ direction: 'ingress', cgroupId: 2n, pid: 20, src: { ip: '127.0.0.1', port: 5070 }, dst: { ip: '127.0.0.1', port: 5060 } });
    a.submit(event(received));
    a.counterpart(received, message({ cgroupId: 1n, src: { ip: '127.0.0.1', port: 5070 }, dst: { ip: '127.0.0.1', port: 5060 } }));
    await open();
    expect(out.map((e) => [e.container?.id, e.peerContainer?.id])).toEqual([[ID, ID2]]);
  });

  it('loopback endpoints are learnt per network namespace: once known, a loopback message does not wait; the same address in another namespace does', async () => {
    const { resolver, open } = fakeResolver({ '1': `/docker/${ID}`, '2': `/docker/${ID2}` });
    const out: CaptureEvent[] = [];
    const a = new Attribution(resolver, (ev) => out.push(ev), { holdMs: 10_000 });
    const lo = { src: { ip: '127.0.0.1', port: 5070 }, dst: { ip: '127.0.0.1', port: 5060 } };
    resolver.lookup(1n, 10);
    resolver.lookup(2n, 20);
    await open(); // both names known: only the other end can make a message wait
    // The UAS (cgroup 2) in namespace 7 received on 127.0.0.1:5060 before.
    a.learn(message({ ...lo, direction: 'ingress', cgroupId: 2n, pid: 20, netns: 7 }));
    a.submit(event(message({ ...lo, netns: 7, payload: Buffer.from('OPTIONS') })));
    expect(out.map((e) => [e.payload.toString(), e.container?.id, e.peerContainer?.id])).toEqual([['OPTIONS', ID, ID2]]);
    // 127.0.0.1:5060 of namespace 8 is another socket: wait for its copy.
    a.submit(event(message({ ...lo, netns: 8, payload: Buffer.from('OTHER') })));
    expect(out).toHaveLength(1);
    a.flush();
    expect(out.map((e) => e.payload.toString())).toEqual(['OPTIONS', 'OTHER']);
  });

  it('a name not known within holdMs: sent with the id and runtime, counted; never dropped', async () => {
    const { resolver, open } = fakeResolver({ '1': `/docker/${ID}` });
    const out: CaptureEvent[] = [];
    const a = new Attribution(resolver, (ev) => out.push(ev), { holdMs: 50 });
    a.submit(event(message({ dst: { ip: '203.0.113.5', port: 5060 } })));
    await sleep(120);
    expect(out.length).toBe(1);
    expect(out[0].container).toBeNull();
    expect(a.stats).toMatchObject({ unnamed: 1, counterpartMissed: 1 });
    await open();
    // The remote endpoint is now known as remote: no more waiting for a counterpart.
    a.submit(event(message({ dst: { ip: '203.0.113.5', port: 5060 } })));
    expect(out.length).toBe(2);
    expect(out[1].container).toMatchObject({ id: ID, runtime: 'docker' });
  });

  it('the hold is bounded: past maxHeld the oldest goes early, in order', async () => {
    const { resolver } = fakeResolver({});
    const out: string[] = [];
    const a = new Attribution(resolver, (ev) => out.push(ev.payload.toString()), { holdMs: 10_000, maxHeld: 3 });
    for (let i = 0; i < 5; i++) a.submit(event(message({ payload: Buffer.from(`m${i}`) })));
    expect(out).toEqual(['m0', 'm1']);
    expect(a.stats.overflow).toBe(2);
    a.flush();
    expect(out).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
  });
});

describe('endpoint tables: one number per endpoint', () => {
  const LO = { ip: '127.0.0.1', port: 5060 };
  const NS = 4026531840; // an inode above 2^31, as the host's namespace has

  it('an endpoint is its transport, address and port, and its namespace when loopback (IPv4 and IPv6)', () => {
    const keys = new EndpointKeys();
    const t = new EndpointTable<string>(keys, 100);
    t.set('udp', LO, NS, 'lo, host namespace');
    t.set('udp', LO, 7, 'lo, namespace 7');
    t.set('udp', { ip: '::1', port: 5060 }, NS, '::1');
    t.set('udp', { ip: '10.0.0.1', port: 5060 }, NS, '10.0.0.1');
    t.set('udp', { ip: '2001:db8::1', port: 5060 }, 7, '2001:db8::1');
    t.set('tcp', LO, NS, 'lo, TCP');
    const at = (transport: 'udp' | 'tcp', ip: string, port: number, netns: number) => t.get(keys.find(transport, { ip, port }, netns));
    expect(at('udp', '127.0.0.1', 5060, NS)).toBe('lo, host namespace');
    expect(at('udp', '127.0.0.1', 5060, 7)).toBe('lo, namespace 7');
    expect(at('udp', '127.0.0.1', 5060, 8)).toBeUndefined();
    expect(at('udp', '127.0.0.1', 5061, NS)).toBeUndefined();
    expect(at('tcp', '127.0.0.1', 5060, NS)).toBe('lo, TCP');
    expect(at('udp', '::1', 5060, NS)).toBe('::1');
    expect(at('udp', '::1', 5060, 7)).toBeUndefined();
    // Other addresses are host-wide: the namespace does not matter.
    expect(at('udp', '10.0.0.1', 5060, 9)).toBe('10.0.0.1');
    expect(at('udp', '2001:db8::1', 5060, NS)).toBe('2001:db8::1');
    expect(at('udp', '10.0.0.2', 5060, NS)).toBeUndefined();
  });

  it('bounded: past max the oldest entry goes; an address loses its id with its last entry, and a reused id names only its new address', () => {
    const keys = new EndpointKeys();
    const t = new EndpointTable<number>(keys, 2);
    const a = { ip: '10.0.0.1', port: 1 };
    const a2 = { ip: '10.0.0.1', port: 2 };
    const b = { ip: '10.0.0.2', port: 1 };
    t.set('udp', a, 0, 1);
    t.set('udp', a2, 0, 2); // a's address: one id, two users
    t.set('udp', a2, 0, 3); // replaced, not added
    expect([t.size, keys.size]).toEqual([2, 1]);
    t.set('udp', a, 0, 4); // already in: nothing goes
    expect(t.get(keys.find('udp', a, 0))).toBe(4);
    // Full: `a` (the oldest) goes; its address keeps its id for a2, which still uses it.
    t.set('udp', b, 0, 5);
    expect([t.get(keys.find('udp', a, 0)), t.get(keys.find('udp', a2, 0)), t.get(keys.find('udp', b, 0))]).toEqual([undefined, 3, 5]);
    // a2 goes: 10.0.0.1 has no id left, and the id goes to the next new address.
    t.set('udp', { ip: '10.0.0.3', port: 1 }, 0, 6);
    expect(keys.find('udp', a2, 0)).toBeUndefined();
    expect(keys.size).toBe(2);
    expect(t.get(keys.find('udp', { ip: '10.0.0.3', port: 1 }, 0))).toBe(6);
    // Its own last entry going when full: an address keeps the id it was given for the new one.
    const oneKeys = new EndpointKeys();
    const one = new EndpointTable<number>(oneKeys, 1);
    one.set('udp', a, 0, 1);
    one.set('udp', a2, 0, 2);
    expect([one.size, one.get(oneKeys.find('udp', a2, 0)), oneKeys.size]).toEqual([1, 2, 1]);
    t.deleteWhere(() => true);
    expect([t.size, keys.size]).toEqual([0, 0]);
  });

  it('two tables share the ids: a key found once looks up both; an id stays while either uses it', () => {
    const keys = new EndpointKeys();
    const local = new EndpointTable<string>(keys, 10);
    const remote = new EndpointTable<string>(keys, 10);
    const e = { ip: '192.0.2.7', port: 5060 };
    remote.set('udp', e, 0, 'remote');
    const key = local.set('udp', e, 0, 'local');
    remote.delete(key);
    expect([local.get(keys.find('udp', e, 0)), remote.get(keys.find('udp', e, 0)), keys.size]).toEqual(['local', undefined, 1]);
    local.delete(key);
    expect(keys.size).toBe(0);
  });
});

describe('held payload ring', () => {
  it('copies into one buffer and frees from the front, wrapping', () => {
    const ring = new HeldPayloads(10);
    const a = ring.copy(Buffer.from('aaaa'))!;
    const b = ring.copy(Buffer.from('bbbb'))!;
    expect(ring.copy(Buffer.from('ccc'))).toBeUndefined();
    ring.release(a);
    const c = ring.copy(Buffer.from('ccc'))!; // wraps to the front
    expect([a.byteOffset === c.byteOffset, b.toString(), c.toString()]).toEqual([true, 'bbbb', 'ccc']);
    ring.release(b);
    ring.release(c);
    expect(ring.count).toBe(0);
    expect(ring.copy(Buffer.from('0123456789'))!.toString()).toBe('0123456789');
  });
});

describe('filters, node name, tail fields', () => {
  const pcscf: ContainerIdentity = { id: ID, name: 'ims-pcscf-1', runtime: 'docker', service: 'pcscf', project: 'ims' };
  const k8s: ContainerIdentity = { id: ID2, name: 'kamailio', runtime: 'containerd', pod: 'scscf-0', namespace: 'core' };

  it('a message belongs to both ends; globs on name, id, service, pod, namespace', () => {
    expect(containerFilter({})).toBeUndefined();
    expect(containerFilter({ container: ['ims-*'] })!(pcscf, null)).toBe(true);
    expect(containerFilter({ container: ['pcscf'] })!(null, pcscf)).toBe(true);
    expect(containerFilter({ container: [ID.slice(0, 12)] })!(pcscf, null)).toBe(true);
    expect(containerFilter({ container: ['other'] })!(pcscf, k8s)).toBe(false);
    expect(containerFilter({ container: ['other'] })!(null, null)).toBe(false);
    expect(containerFilter({ excludeContainer: ['ims-pcscf-?'] })!(k8s, pcscf)).toBe(false);
    expect(containerFilter({ excludeContainer: ['x'] })!(null, null)).toBe(true);
    expect(containerFilter({ pod: ['scscf-*'] })!(pcscf, k8s)).toBe(true);
    expect(containerFilter({ namespace: ['core'] })!(pcscf, null)).toBe(false);
  });

  it('renders the HEP node name per container; host processes get the host name', () => {
    const t = new NodeNameTemplate('{project}/{service}', 'host-1');
    expect(t.render(pcscf).toString()).toBe('ims/pcscf');
    expect(t.render(pcscf)).toBe(t.render(pcscf));
    expect(new NodeNameTemplate('{container}', 'host-1').render(null).toString()).toBe('host-1');
    expect(new NodeNameTemplate('{namespace}/{pod}', 'h').render(k8s).toString()).toBe('core/scscf-0');
    expect(new NodeNameTemplate('{namespace}/{pod}', 'h').render(pcscf).toString(), 'no field applies: the host').toBe('h');
    expect(() => new NodeNameTemplate('{nope}')).toThrow(/unknown field \{nope\}/);
  });

  it('container and peerContainer travel the tail protocol and show in lines and records', () => {
    const ev: TailEventFields = {
      ts: '2026-11-24T08:00:00.123456Z', proto: 'sip', transport: 'udp', src: { ip: '10.0.0.1', port: 5060 }, dst: { ip: '10.0.0.2', port: 5060 },
      pid: 7, comm: 'kamailio', cgroupId: '1', correlationId: 'c1', summary: 'INVITE sip:a@b', callId: 'c1', size: 6, truncated: false,
      payload: Buffer.from('INVITE'), container: pcscf, peerContainer: k8s, connectionUnknown: false,
    };
    const got: TailEventFields[] = [];
    new TailEventReader().push(Buffer.from(encodeTailEvent(ev)), (e) => got.push(e));
    expect(formatTailLine(got[0])).toBe('08:00:00.123456 10.0.0.1:5060 -> 10.0.0.2:5060 UDP kamailio[7] (ims/pcscf -> core/scscf-0/kamailio) INVITE sip:a@b c1');
    const rec = toTailRecord(got[0], false);
    expect(rec.container).toEqual(pcscf);
    expect(rec.peerContainer).toEqual(k8s);
    const host = { ...ev, container: null, peerContainer: null };
    new TailEventReader().push(Buffer.from(encodeTailEvent(host)), (e) => got.push(e));
    expect(toTailRecord(got[1], false)).toMatchObject({ container: null, peerContainer: null });
    expect(formatTailLine(got[1])).toBe('08:00:00.123456 10.0.0.1:5060 -> 10.0.0.2:5060 UDP kamailio[7] INVITE sip:a@b c1');
  });
});
