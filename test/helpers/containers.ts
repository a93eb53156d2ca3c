/**
 * Real container runtimes for end-to-end tests: Debian's dockerd on private roots and socket, podman
 * with private storage, an image made from the host's own sipp (no registry), veth pairs between
 * container network namespaces on test-chosen addresses, tcpdump inside a namespace.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from './wait.js';

/** The Debian package's client (a newer one is also installed at /usr/local/bin). */
export const DOCKER = '/usr/bin/docker';

/** Why dockerd cannot run here, or undefined. */
export function cannotRunDocker(): string | undefined {
  for (const bin of ['/usr/sbin/dockerd', DOCKER, '/usr/bin/containerd', '/usr/bin/podman', '/usr/sbin/runc'])
    if (!existsSync(bin)) return `${bin} missing: scripts/setup.sh --test installs docker.io, podman and runc`;
  return undefined;
}

/**
 * A rootfs tar for `docker import` holding sipp, openssl, sleep, the libraries they load (from ldd)
 * and OpenSSL's config: the image's libssl is its own file, not the host's.
 */
export function sippRootfsTar(dir: string): string {
  const bins = ['/usr/bin/sipp', '/usr/bin/openssl', '/usr/bin/sleep'];
  const files = new Set([...bins, '/usr/lib/ssl/openssl.cnf']);
  for (const b of bins)
    for (const m of execFileSync('ldd', [b], { encoding: 'utf8' }).matchAll(/(\/[^\s]+\.so[^\s]*)/g)) files.add(m[1]);
  const tar = join(dir, 'rootfs.tar');
  // -h: store what symlinks (lib64/ld-linux, /lib -> /usr/lib) point at, so the image needs no links.
  execFileSync('tar', ['-chf', tar, '-P', '--transform', 's,^/,,', ...files]);
  return tar;
}

export class Dockerd {
  private constructor(
    private readonly proc: ChildProcess,
    readonly socket: string,
    private readonly log: () => string,
  ) {}

  static async start(dir: string): Promise<Dockerd> {
    const socket = join(dir, 'docker.sock');
    const proc = spawn(
      '/usr/sbin/dockerd',
      ['--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec'), '-H', `unix://${socket}`, '--pidfile', join(dir, 'docker.pid'),
        '--bridge=none', '--iptables=false', '--ip6tables=false', '--ip-masq=false'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    proc.stderr!.on('data', (d: Buffer) => (log += d));
    const d = new Dockerd(proc, socket, () => log);
    for (let i = 0; i < 300; i++) {
      if (proc.exitCode !== null) throw new Error(`dockerd exited ${proc.exitCode}:\n${log.slice(-3000)}`);
      try {
        d.docker('version');
        return d;
      } catch {
        await sleep(100);
      }
    }
    await d.stop();
    throw new Error(`dockerd not answering on ${socket} after 30 s:\n${log.slice(-3000)}`);
  }

  docker(...args: string[]): string {
    return execFileSync(DOCKER, ['-H', `unix://${this.socket}`, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }

  /** dockerd stops its containers and its containerd on SIGTERM. */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null) return resolve();
      const kill = setTimeout(() => this.proc.kill('SIGKILL'), 20_000);
      this.proc.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      this.proc.kill('SIGTERM');
    });
  }

  get stderr(): string {
    return this.log();
  }
}

/** podman with storage, run state and events under `dir` (runc, cgroupfs, file events: no systemd here). */
export class Podman {
  readonly root: string;
  private readonly args: string[];

  constructor(dir: string) {
    this.root = join(dir, 'root');
    mkdirSync(this.root, { recursive: true });
    this.args = ['--root', this.root, '--runroot', join(dir, 'run'), '--tmpdir', join(dir, 'tmp'), '--runtime', 'runc', '--cgroup-manager=cgroupfs', '--events-backend=file'];
  }

  podman(...args: string[]): string {
    return execFileSync('podman', [...this.args, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }
}

/** The PID of a container's init, in the host's PID namespace. */
export const containerPid = (inspect: (f: string) => string) => Number(inspect('{{.State.Pid}}'));

/** A veth pair between two network namespaces (given by a PID in each), with addresses, up; lo up in both. */
export function vethBetween(pidA: number, ipA: string, pidB: number, ipB: string, name: string): void {
  execFileSync('ip', ['link', 'add', `${name}a`, 'netns', String(pidA), 'type', 'veth', 'peer', 'name', `${name}b`, 'netns', String(pidB)]);
  for (const [pid, ifc, ip] of [[pidA, `${name}a`, ipA], [pidB, `${name}b`, ipB]] as const) {
    const inNs = (...a: string[]) => execFileSync('nsenter', ['-t', String(pid), '-n', 'ip', ...a]);
    inNs('addr', 'add', `${ip}/24`, 'dev', ifc);
    inNs('link', 'set', ifc, 'up');
    inNs('link', 'set', 'lo', 'up');
  }
}

/** Every cgroup hierarchy's mount point (v1 controllers and v2), from mountinfo. */
function cgroupMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => / - cgroup2? /.test(l)).map((l) => l.split(' ')[4]);
}

/**
 * Runtimes leave their parent cgroups (`docker`, `libpod_parent`) behind in every hierarchy.
 * Snapshot which exist before a test; removeNew() removes the ones it created, once empty.
 */
export function cgroupParentsBefore(names: string[]): { removeNew(): void } {
  const existed = new Set(cgroupMounts().flatMap((m) => names.map((n) => join(m, n))).filter((p) => existsSync(p)));
  return {
    removeNew() {
      for (const p of cgroupMounts().flatMap((m) => names.map((n) => join(m, n)))) {
        if (existed.has(p) || !existsSync(p)) continue;
        // children first: find lists depth-first with -depth
        for (const d of execFileSync('find', [p, '-depth', '-type', 'd'], { encoding: 'utf8' }).trim().split('\n')) rmdirSync(d);
      }
    },
  };
}

/** Unmounts what runtimes leave mounted under `dir` (dockerd's netns file, podman's overlays), deepest first. */
export function unmountUnder(dir: string): void {
  for (const mnt of readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(dir)).reverse())
    execFileSync('umount', ['-l', mnt]);
}
