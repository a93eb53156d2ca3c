import { readFileSync, statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';

/** Where the cgroup v2 hierarchy is mounted, and which of its directories the mount shows at that point. */
export interface Cgroup2Mount {
  mountPoint: string;
  /** The mount's root inside the hierarchy ("/" unless a subtree was bind-mounted). */
  root: string;
}

/** The cgroup2 mount in /proc/self/mountinfo text (fields: id parent dev root mountpoint opts ... - fstype src superopts). */
export function findCgroup2Mount(mountinfo: string): Cgroup2Mount | undefined {
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post || post.split(' ')[0] !== 'cgroup2') continue;
    const f = pre.split(' ');
    return { root: unescapeMountinfo(f[3]), mountPoint: unescapeMountinfo(f[4]) };
  }
  return undefined;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescapeMountinfo = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The cgroup v2 path in /proc/PID/cgroup text (the "0::" line), relative to the reader's cgroup namespace. */
export function cgroup2PathOf(procCgroup: string): string | undefined {
  const line = procCgroup.split('\n').find((l) => l.startsWith('0::'));
  return line?.slice(3);
}

const SEARCH_EVERY_MS = 1000;
const SEARCH_MAX_DIRS = 20_000;

interface Known {
  path: string;
  /** Directory to stat to tell whether the cgroup still exists; undefined when the path is outside our view (cgroup namespace "../"). */
  dir?: string;
}

export interface CgroupIndexOptions {
  mount: Cgroup2Mount;
  /** /proc, or a fixture tree in tests. */
  procRoot?: string;
}

/**
 * cgroup id -> path, learnt on a miss. A record's cgroup id is bpf_get_current_cgroup_id(), the
 * inode of the task's cgroup v2 directory, and its pid is still in that cgroup in all but rare
 * cases (a task that moved or exited since): /proc/PID/cgroup names the path and a stat of it
 * confirms the inode. Only in those rare cases is the hierarchy searched (bounded, rate-limited).
 * sweep() forgets cgroups whose directory is gone.
 */
export class CgroupIndex {
  private readonly known = new Map<bigint, Known>();
  private readonly inflight = new Map<bigint, Promise<string | undefined>>();
  private readonly procRoot: string;
  /** A miss whose pid had gone or moved: the path stays unknown. */
  unresolved = 0;

  constructor(private readonly opts: CgroupIndexOptions) {
    this.procRoot = opts.procRoot ?? '/proc';
  }

  static forThisHost(): CgroupIndex | undefined {
    const mount = findCgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
    return mount && new CgroupIndex({ mount });
  }

  pathOf(cgroupId: bigint): string | undefined {
    return this.known.get(cgroupId)?.path;
  }

  /**
   * The path of `cgroupId`, learnt from `pid`; undefined when it cannot be confirmed. The common
   * case (the pid is still in that cgroup) is answered before this returns: a read of
   * /proc/PID/cgroup and a stat, once per cgroup. They are not left to the thread pool because
   * under overload the event loop turns only every few seconds (the native reader's batches come
   * back to back), and every message waiting for this answer would wait in the hold until then.
   */
  resolve(cgroupId: bigint, pid: number): Promise<string | undefined> {
    const hit = this.known.get(cgroupId);
    if (hit) return Promise.resolve(hit.path);
    let p = this.inflight.get(cgroupId);
    if (!p) {
      const path = this.learnFromPid(cgroupId, pid);
      if (path !== undefined) return Promise.resolve(path);
      p = this.learnByInode(cgroupId).finally(() => this.inflight.delete(cgroupId));
      this.inflight.set(cgroupId, p);
    }
    return p;
  }

  private learnFromPid(cgroupId: bigint, pid: number): string | undefined {
    let path: string | undefined;
    try {
      path = cgroup2PathOf(readFileSync(join(this.procRoot, String(pid), 'cgroup'), 'utf8'));
    } catch {
      return undefined;
    }
    const dir = path === undefined ? undefined : this.dirOf(path);
    if (path === undefined || (dir && statSync(dir, { bigint: true, throwIfNoEntry: false })?.ino !== cgroupId)) return undefined;
    this.known.set(cgroupId, { path, dir });
    return path;
  }

  /** The sender exited (a short-lived process) or moved: look for the directory itself, rarely. */
  private async learnByInode(cgroupId: bigint): Promise<string | undefined> {
    const path = await this.searchByInode(cgroupId);
    if (path === undefined) {
      this.unresolved++;
      return undefined;
    }
    this.known.set(cgroupId, { path, dir: this.dirOf(path) });
    return path;
  }

  private lastSearchMs = 0;

  /**
   * Walks our view of the hierarchy for the directory with this inode: only when the pid could
   * not tell, at most once per SEARCH_EVERY_MS and SEARCH_MAX_DIRS directories.
   */
  private async searchByInode(cgroupId: bigint): Promise<string | undefined> {
    const now = Date.now();
    if (now - this.lastSearchMs < SEARCH_EVERY_MS) return undefined;
    this.lastSearchMs = now;
    const { mountPoint, root } = this.opts.mount;
    const queue = [''];
    for (let seen = 0; queue.length && seen < SEARCH_MAX_DIRS; seen++) {
      const rel = queue.shift()!;
      const entries = await readdir(join(mountPoint, rel), { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const child = posix.join(rel, e.name);
        if ((await stat(join(mountPoint, child), { bigint: true }).then((s) => s.ino, () => undefined)) === cgroupId) return posix.join(root, child);
        queue.push(child);
      }
    }
    return undefined;
  }

  /** The directory of a namespace-relative path under our mount, or undefined when it lies outside our view. */
  private dirOf(path: string): string | undefined {
    const { root, mountPoint } = this.opts.mount;
    const norm = posix.normalize(path);
    if (norm.startsWith('/..') || path.split('/').includes('..')) return undefined;
    const rel = posix.relative(root, norm);
    return rel.startsWith('..') ? undefined : join(mountPoint, rel);
  }

  /** Forgets cgroups whose directory is gone; returns their ids. Paths outside our view are kept (the caller bounds them). */
  async sweep(): Promise<bigint[]> {
    const gone: bigint[] = [];
    await Promise.all(
      [...this.known].map(async ([id, k]) => {
        if (!k.dir) return;
        const ino = await stat(k.dir, { bigint: true }).then((s) => s.ino, () => undefined);
        if (ino !== id) gone.push(id);
      }),
    );
    for (const id of gone) this.known.delete(id);
    return gone;
  }

  forget(cgroupId: bigint): void {
    this.known.delete(cgroupId);
  }

  get size(): number {
    return this.known.size;
  }
}
