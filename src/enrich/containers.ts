import { existsSync } from 'node:fs';
import type { CgroupIndex } from './cgroups.js';
import { containerFromCgroupPath, type CgroupContainer, type Runtime } from './cgroup-path.js';
import { DockerApi, type ContainerMetadata } from './docker-api.js';
import type { KubernetesPods } from './kubernetes.js';
import { PodmanStorage } from './podman-storage.js';

/** The container a message belongs to: the `container` and `peerContainer` of a tail record. */
export interface ContainerIdentity {
  id: string;
  /** The runtime's name for it; its short id when the runtime did not say. */
  name: string;
  runtime: Runtime;
  image?: string;
  /** Compose service (com.docker.compose.service) and project. */
  service?: string;
  project?: string;
  pod?: string;
  namespace?: string;
}

export interface ContainerSources {
  docker?: DockerApi;
  /** Podman's Docker-compatible API, tried before its storage metadata. */
  podmanApi?: DockerApi;
  podmanStorage?: PodmanStorage;
  kubernetes?: KubernetesPods;
}

export interface ContainerSourceOptions {
  dockerSocket?: string;
  podmanSocket?: string;
  podmanRoot?: string;
  kubernetes?: KubernetesPods;
}

export const DEFAULT_DOCKER_SOCKET = '/run/docker.sock';
export const DEFAULT_PODMAN_SOCKET = '/run/podman/podman.sock';
export const DEFAULT_PODMAN_ROOT = '/var/lib/containers/storage';

export function containerSources(o: ContainerSourceOptions): ContainerSources {
  const podmanSocket = o.podmanSocket ?? DEFAULT_PODMAN_SOCKET;
  return {
    docker: new DockerApi(o.dockerSocket ?? DEFAULT_DOCKER_SOCKET),
    // The socket may appear later (podman system service started after us): checked per lookup.
    podmanApi: new DockerApi(podmanSocket),
    podmanStorage: new PodmanStorage(o.podmanRoot ?? DEFAULT_PODMAN_ROOT),
    kubernetes: o.kubernetes,
  };
}

/** Names from labels: compose, and Kubernetes CRI labels (dockershim, containerd and CRI-O set them on containers). */
export function identityFrom(c: CgroupContainer, meta: ContainerMetadata | undefined): ContainerIdentity {
  const l = meta?.labels ?? {};
  const id: ContainerIdentity = { id: c.id, name: meta?.name || c.id.slice(0, 12), runtime: c.runtime };
  if (meta?.image) id.image = meta.image;
  if (l['com.docker.compose.service']) id.service = l['com.docker.compose.service'];
  if (l['com.docker.compose.project']) id.project = l['com.docker.compose.project'];
  if (l['io.kubernetes.pod.name']) id.pod = l['io.kubernetes.pod.name'];
  if (l['io.kubernetes.pod.namespace']) id.namespace = l['io.kubernetes.pod.namespace'];
  if (l['io.kubernetes.container.name']) id.name = l['io.kubernetes.container.name'];
  return id;
}

/** A container seen sending or receiving, with what `hepbpf containers` shows. */
export interface ContainerSeen {
  container: ContainerIdentity;
  cgroupIds: bigint[];
  /** Messages attributed to it, as the sender or receiver (`container`) and as the other end (`peerContainer`). */
  messages: number;
  peerMessages: number;
}

/** While pending, `provisional` holds the id and runtime from the path until the runtime names the container. */
type Entry = { state: 'pending'; provisional?: ContainerIdentity } | { state: 'known'; container: ContainerIdentity | null };

const SWEEP_MS = 5000;

/**
 * cgroup id -> container, asynchronously: lookup() answers from the cache at once (undefined
 * while a lookup runs) and never waits; onResolved fires when a pending id is known. Metadata
 * comes from the runtime's API once per container. Removed cgroups are forgotten by sweep().
 */
export class ContainerResolver {
  private readonly byCgroup = new Map<bigint, Entry>();
  /**
   * The last two entries found, by cgroup id: a message asks for its own cgroup and its peer's three
   * times each on its way out, and a Map look-up by BigInt hashes its digits each time.
   */
  private recentId?: bigint;
  private recent?: Entry;
  private olderId?: bigint;
  private older?: Entry;
  private readonly seen = new Map<string, ContainerSeen>();
  private readonly listeners: Array<(cgroupId: bigint) => void> = [];
  private readonly forgetListeners: Array<(cgroupId: bigint) => void> = [];
  private sweepTimer?: NodeJS.Timeout;
  private retiring = new Set<bigint>();
  stats = { lookups: 0, metadataErrors: 0, forgotten: 0 };

  constructor(
    /** Undefined when the host has no cgroup v2 hierarchy: every message is then the host's. */
    private readonly cgroups: CgroupIndex | undefined,
    private readonly sources: ContainerSources,
  ) {}

  onResolved(fn: (cgroupId: bigint) => void): void {
    this.listeners.push(fn);
  }

  onForgotten(fn: (cgroupId: bigint) => void): void {
    this.forgetListeners.push(fn);
  }

  /** The container of a cgroup: an identity, null for the host, undefined while it is being looked up. */
  lookup(cgroupId: bigint, pid: number): ContainerIdentity | null | undefined {
    const e = this.entry(cgroupId);
    if (e) return e.state === 'known' ? e.container : undefined;
    const pending: Entry = { state: 'pending' };
    this.byCgroup.set(cgroupId, pending);
    this.stats.lookups++;
    void this.resolve(cgroupId, pid, pending).then((container) => {
      if (this.byCgroup.get(cgroupId) !== pending) return; // forgotten meanwhile
      this.byCgroup.set(cgroupId, { state: 'known', container });
      this.forgetRecent();
      if (container) {
        const s = this.seen.get(container.id);
        if (s) s.cgroupIds.push(cgroupId);
        else this.seen.set(container.id, { container, cgroupIds: [cgroupId], messages: 0, peerMessages: 0 });
      }
      for (const fn of this.listeners) fn(cgroupId);
    });
    return undefined;
  }

  /** What is known now: the identity, its provisional form (id and runtime) while the runtime is asked, or null. */
  best(cgroupId: bigint): ContainerIdentity | null {
    const e = this.entry(cgroupId);
    if (!e) return null;
    return e.state === 'known' ? e.container : (e.provisional ?? null);
  }

  private entry(cgroupId: bigint): Entry | undefined {
    if (cgroupId === this.recentId) return this.recent;
    if (cgroupId === this.olderId) return this.older;
    const e = this.byCgroup.get(cgroupId);
    if (e) {
      this.olderId = this.recentId;
      this.older = this.recent;
      this.recentId = cgroupId;
      this.recent = e;
    }
    return e;
  }

  /** byCgroup changed: the entries kept apart may be stale. */
  private forgetRecent(): void {
    this.recentId = this.olderId = this.recent = this.older = undefined;
  }

  private async resolve(cgroupId: bigint, pid: number, pending: { provisional?: ContainerIdentity }): Promise<ContainerIdentity | null> {
    const path = await this.cgroups?.resolve(cgroupId, pid);
    // A cgroup we cannot confirm is not named after a container: never a guess.
    const c = path === undefined ? null : containerFromCgroupPath(path);
    if (!c) return null;
    const known = this.seen.get(c.id);
    if (known) return known.container;
    pending.provisional = identityFrom(c, undefined);
    return identityFrom(c, await this.metadata(c).catch(() => (this.stats.metadataErrors++, undefined)));
  }

  private async metadata(c: CgroupContainer): Promise<ContainerMetadata | undefined> {
    const { docker, podmanApi, podmanStorage, kubernetes } = this.sources;
    switch (c.runtime) {
      case 'docker':
        return docker?.inspect(c.id);
      case 'podman':
        if (podmanApi && existsSync(podmanApi.socketPath)) return podmanApi.inspect(c.id);
        return podmanStorage?.inspect(c.id);
      default: {
        const pod = await kubernetes?.lookup(c.id, c.podUid);
        if (!pod) return undefined;
        const labels: Record<string, string> = { 'io.kubernetes.pod.name': pod.pod, 'io.kubernetes.pod.namespace': pod.namespace };
        if (pod.container) labels['io.kubernetes.container.name'] = pod.container;
        return { name: pod.container ?? c.id.slice(0, 12), labels };
      }
    }
  }

  /** Counts a forwarded message for `hepbpf containers`. */
  count(container: ContainerIdentity | null, peer: ContainerIdentity | null): void {
    const own = container && this.seen.get(container.id);
    if (own) own.messages++;
    const other = peer && peer !== container && this.seen.get(peer.id);
    if (other) other.peerMessages++;
  }

  list(): ContainerSeen[] {
    return [...this.seen.values()];
  }

  /** Checks every SWEEP_MS that known cgroups still exist; forgets those removed, and their containers. */
  start(): void {
    this.sweepTimer = setInterval(() => void this.sweep(), SWEEP_MS);
    this.sweepTimer.unref();
  }

  stop(): void {
    clearInterval(this.sweepTimer);
  }

  /**
   * Cgroups found gone (or never confirmed) are forgotten one sweep later: a message of theirs may
   * still be in the hold (up to holdMs) and must leave with its container's name.
   */
  async sweep(): Promise<void> {
    const retire = this.retiring;
    this.retiring = new Set();
    for (const id of retire) this.forget(id);
    for (const id of (await this.cgroups?.sweep()) ?? []) this.retiring.add(id);
    // Cgroups whose path could not be confirmed (the sender had exited) are retried on a later message.
    for (const [id, e] of this.byCgroup) if (e.state === 'known' && this.cgroups?.pathOf(id) === undefined && !retire.has(id)) this.retiring.add(id);
  }

  private forget(cgroupId: bigint): void {
    const e = this.byCgroup.get(cgroupId);
    this.byCgroup.delete(cgroupId);
    this.forgetRecent();
    this.stats.forgotten++;
    if (e?.state === 'known' && e.container) {
      const s = this.seen.get(e.container.id);
      if (s) {
        s.cgroupIds = s.cgroupIds.filter((x) => x !== cgroupId);
        if (s.cgroupIds.length === 0) this.seen.delete(e.container.id);
      }
    }
    for (const fn of this.forgetListeners) fn(cgroupId);
  }

  /** Cache sizes, for the stats line and for tests that check memory returns to its baseline. */
  sizes() {
    return { cgroups: this.byCgroup.size, paths: this.cgroups?.size ?? 0, containers: this.seen.size };
  }
}
