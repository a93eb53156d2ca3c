/**
 * TLS libraries found on the loader paths of a root (the host's, a container's) before any process
 * maps them: the ld.so.cache reader against caches made by Debian's own ldconfig (its ground truth:
 * `ldconfig -p`), crafted caches, and TlsDiscovery's root scans on a fixture /proc whose processes
 * live in directories standing for container roots.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultDirectoryPaths, ldSoCacheEntries, loaderTlsLibraryPaths } from '../../src/capture/loader-libraries.js';
import { TLS_FUNCTIONS, TlsDiscovery, type TlsTarget } from '../../src/capture/tls-discovery.js';
import { mapsKey } from '../helpers/maps.js';

/** `ldconfig -p` of a cache: soname and path of each x86-64 library, in the cache's order. */
function ldconfigPrint(cache: string): Array<{ name: string; path: string }> {
  return execFileSync('ldconfig', ['-p', '-C', cache], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes('(libc6,x86-64'))
    .map((l) => {
      const [, name, path] = /^\s+(\S+) \(.*\) => (\S+)$/.exec(l)!;
      return { name, path };
    });
}

const HOST_LIBSSL = ldconfigPrint('/etc/ld.so.cache').find((e) => e.name === 'libssl.so.3')!.path;
const HOST_LIBGNUTLS = ldconfigPrint('/etc/ld.so.cache').find((e) => e.name === 'libgnutls.so.30')!.path;

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'hepbpf-loader-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A directory standing for a container's root: `files` maps a path inside it to how it is made. */
function root(files: Record<string, (path: string) => void>): string {
  const dir = mkdtempSync(join(scratch, 'root-'));
  for (const [path, make] of Object.entries(files)) {
    mkdirSync(join(dir, dirname(path)), { recursive: true });
    make(join(dir, path));
  }
  return dir;
}
const copyOf = (source: string) => (path: string) => copyFileSync(source, path);

/** Runs Debian's ldconfig inside `dir` over the directories it lists, in the given format. */
function ldconfigIn(dir: string, dirs: string[], format: 'new' | 'compat' = 'new'): string {
  writeFileSync(join(dir, 'etc/ld.so.conf'), dirs.join('\n') + '\n');
  execFileSync('ldconfig', ['-r', dir, '-X', '-i', '-c', format, '-f', '/etc/ld.so.conf', '-C', '/etc/ld.so.cache']);
  return join(dir, 'etc/ld.so.cache');
}

describe('ldSoCacheEntries', () => {
  it('reads this host\'s cache as ldconfig -p prints it', () => {
    expect(ldSoCacheEntries(readFileSync('/etc/ld.so.cache'))).toEqual(ldconfigPrint('/etc/ld.so.cache'));
  });

  it.each(['new', 'compat'] as const)('reads a cache ldconfig wrote in the %s format (glibc before 2.32 writes compat)', (format) => {
    const dir = root({ '/opt/tls/libssl.so.3': copyOf(HOST_LIBSSL), '/opt/gnutls/libgnutls.so.30': copyOf(HOST_LIBGNUTLS), '/etc/.keep': (p) => writeFileSync(p, '') });
    const cache = ldconfigIn(dir, ['/opt/tls', '/opt/gnutls'], format);
    const entries = ldSoCacheEntries(readFileSync(cache));
    expect(entries).toEqual(ldconfigPrint(cache));
    expect(entries).toEqual(expect.arrayContaining([{ name: 'libssl.so.3', path: '/opt/tls/libssl.so.3' }, { name: 'libgnutls.so.30', path: '/opt/gnutls/libgnutls.so.30' }]));
  });

  it('skips the libraries of another architecture', () => {
    expect(ldSoCacheEntries(readFileSync('/etc/ld.so.cache'), 'arm64')).toEqual([]);
  });

  it('gives a reason, or fewer entries, for a crafted cache; never throws', () => {
    const real = readFileSync('/etc/ld.so.cache');
    const count = real.readUInt32LE(20);
    const patched = (patch: (b: Buffer) => void, length = real.length) => {
      const b = Buffer.from(real.subarray(0, length));
      patch(b);
      return ldSoCacheEntries(b);
    };
    expect(ldSoCacheEntries(Buffer.from('not a cache'))).toEqual({ invalid: 'not a glibc ld.so.cache (format 1.1)' });
    expect(ldSoCacheEntries(Buffer.from('ld.so-1.7.0'))).toEqual({ invalid: 'truncated header' });
    expect(patched((b) => b.writeUInt32LE(0xffffffff, 20))).toEqual({ invalid: '4294967295 entries past the end of the file' });
    expect(patched(() => {}, 48 + count * 24)).toEqual([]); // the strings cut off: every name runs past the end
    // An old-format count that puts the new header past the end.
    const old = Buffer.alloc(16);
    old.write('ld.so-1.7.0', 'latin1');
    old.writeUInt32LE(0x7fffffff, 12);
    expect(ldSoCacheEntries(old)).toEqual({ invalid: 'not a glibc ld.so.cache (format 1.1)' });
    // Offsets past the end, and a name without its NUL, are skipped.
    const first = 48;
    const entries = patched((b) => {
      b.writeUInt32LE(0xfffffff0, first + 4);
      b.writeUInt32LE(b.length - 1, first + 24 + 8);
      b[b.length - 1] = 0x41;
    }) as Array<{ name: string }>;
    expect(entries).toHaveLength(ldconfigPrint('/etc/ld.so.cache').length - 2);
  });
});

describe('loaderTlsLibraryPaths', () => {
  /** A cache naming a TLS library, outside every root. */
  const outsideCache = () => {
    const dir = root({ '/opt/tls/libssl.so.3': copyOf(HOST_LIBSSL), '/etc/.keep': () => {} });
    return ldconfigIn(dir, ['/opt/tls']);
  };

  it('lists the TLS libraries of the cache first, then the default directories, each path once', () => {
    const dir = root({ '/opt/tls/libssl.so.3': copyOf(HOST_LIBSSL), '/opt/tls/libcrypto.so.3': copyOf(HOST_LIBSSL.replace('libssl', 'libcrypto')), '/etc/.keep': () => {} });
    ldconfigIn(dir, ['/opt/tls']);
    const problems: string[] = [];
    expect(loaderTlsLibraryPaths(dir, (r) => problems.push(r))).toEqual(['/opt/tls/libssl.so.3', ...defaultDirectoryPaths()]);
    expect(problems).toEqual([]);
  });

  it('without a cache (musl, an image built without ldconfig): the default directories, silently', () => {
    const problems: string[] = [];
    expect(loaderTlsLibraryPaths(root({}), (r) => problems.push(r))).toEqual(defaultDirectoryPaths());
    expect(defaultDirectoryPaths()).toEqual(expect.arrayContaining(['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/libssl.so.3', '/usr/lib/libgnutls.so.30']));
    expect(problems).toEqual([]);
  });

  it('does not block on a FIFO at the cache\'s path, nor follow a symlink out of the root, nor read a cache over 4 MiB', () => {
    for (const [make, problem] of [
      [(p: string) => execFileSync('mkfifo', [p]), /not a regular file.*EINVAL/],
      [(p: string) => symlinkSync(outsideCache(), p), undefined], // resolves inside the root: nothing there
      [(p: string) => symlinkSync('/etc/ld.so.cache', p), /ELOOP/], // itself, inside the root
      [(p: string) => writeFileSync(p, Buffer.alloc((4 << 20) + 1)), /4194305 bytes \(at most 4194304 read\)/],
      [(p: string) => writeFileSync(p, 'garbage'), /not a glibc ld.so.cache/],
    ] as const) {
      const problems: string[] = [];
      expect(loaderTlsLibraryPaths(root({ '/etc/ld.so.cache': make }), (r) => problems.push(r))).toEqual(defaultDirectoryPaths());
      expect(problems).toEqual(problem ? [expect.stringMatching(problem)] : []);
    }
  });
});

describe('TlsDiscovery.scanRoots and new containers', () => {
  /** A fixture /proc: each pid's root links to its directory; no maps (scanRoots does not read them). */
  function fakeProc(roots: Record<number, string>): string {
    const proc = mkdtempSync(join(scratch, 'proc-'));
    for (const [pid, dir] of Object.entries(roots)) {
      mkdirSync(join(proc, pid));
      symlinkSync(dir, join(proc, pid, 'root'));
    }
    return proc;
  }

  function discovery(procRoot: string) {
    const attached: Array<Pick<TlsTarget, 'key' | 'mappedPath' | 'kind' | 'pid'>> = [];
    const log = { warn: vi.fn(), info: vi.fn(), debug: vi.fn() };
    const d = new TlsDiscovery({ procRoot, selfPid: 1, log, attach: (t) => attached.push({ key: t.key, mappedPath: t.mappedPath, kind: t.kind, pid: t.pid }) });
    return { d, attached, log };
  }

  it('probes the TLS libraries each root\'s loader finds, each root and file once, before any process maps them', () => {
    const withCache = root({ '/opt/tls/libssl.so.3': copyOf(HOST_LIBSSL), '/etc/.keep': () => {} });
    ldconfigIn(withCache, ['/opt/tls']);
    const withoutCache = root({ '/usr/lib/x86_64-linux-gnu/libgnutls.so.30': copyOf(HOST_LIBGNUTLS), '/lib/libssl.so.3': (p) => symlinkSync('/usr/lib/x86_64-linux-gnu/libgnutls.so.30', p) });
    const proc = fakeProc({ 10: withCache, 11: withCache, 12: withoutCache });
    const { d, attached, log } = discovery(proc);
    d.scanRoots();
    expect(attached).toEqual([
      { key: mapsKey(join(withCache, 'opt/tls/libssl.so.3')), mappedPath: '/opt/tls/libssl.so.3', kind: 'openssl', pid: 10 },
      // The symlink at /lib/libssl.so.3 leads to the same file inside the root: probed once.
      { key: mapsKey(join(withoutCache, 'usr/lib/x86_64-linux-gnu/libgnutls.so.30')), mappedPath: '/usr/lib/x86_64-linux-gnu/libgnutls.so.30', kind: 'gnutls', pid: 12 },
    ]);
    expect(d.stats()).toEqual({ filesChecked: 2, attached: 2, failed: 0, refused: 0 });
    expect(log.info).toHaveBeenCalledWith(expect.objectContaining({ pid: 10, found: 'loader', functions: [...TLS_FUNCTIONS.openssl] }), 'TLS library probed');
    expect(log.info).toHaveBeenCalledWith(expect.objectContaining({ roots: 2 }), 'TLS libraries on the loader paths of every root probed');
    expect(log.warn).not.toHaveBeenCalled();
  });

  it('a process that maps a probed library later costs no second read', () => {
    const dir = root({ '/usr/lib/libssl.so.3': copyOf(HOST_LIBSSL) });
    const proc = fakeProc({ 10: dir });
    const { d, attached } = discovery(proc);
    d.scanRoots();
    const key = mapsKey(join(dir, 'usr/lib/libssl.so.3'));
    const [dev, inode] = [key.slice(0, key.lastIndexOf(':')), key.slice(key.lastIndexOf(':') + 1)];
    writeFileSync(join(proc, '10/maps'), `7f0000000000-7f0000001000 r-xp 00002000 ${dev} ${inode}   /usr/lib/libssl.so.3\n`);
    d.scanPid(10);
    expect(attached.map((t) => t.key)).toEqual([key]);
    expect(d.stats().filesChecked).toBe(1);
  });

  it('refuses what a root puts at a loader path that is not a regular file, without blocking; reads nothing outside the root', () => {
    const dir = root({
      '/usr/lib/libssl.so.3': (p) => execFileSync('mkfifo', [p]),
      '/lib/libssl.so.3': (p) => symlinkSync(HOST_LIBSSL, p), // absolute: resolves inside the root, where nothing is
      '/usr/lib/libgnutls.so.30': (p) => symlinkSync(`../../../../../../..${HOST_LIBGNUTLS}`, p),
    });
    const { d, attached, log } = discovery(fakeProc({ 10: dir }));
    d.scanRoots();
    expect(attached).toEqual([]);
    expect(d.stats()).toEqual({ filesChecked: 0, attached: 0, failed: 0, refused: 1 });
    expect(log.warn.mock.calls.map(([f, msg]) => [f.path, msg, f.reason])).toEqual([
      ['/usr/lib/libssl.so.3', 'TLS discovery: file refused', expect.stringMatching(/not a regular file.*EINVAL/)],
    ]);
  });

  it('scans the root of a process at once when its cgroup was not seen in that root (a container that just started), once per cgroup and root', () => {
    const container = root({ '/usr/lib/libssl.so.3': copyOf(HOST_LIBSSL) });
    const host = root({});
    const proc = fakeProc({ 20: host, 21: container });
    const { d, attached } = discovery(proc);
    const scans = vi.spyOn(d as unknown as { scanRoot(pid: number): void }, 'scanRoot');
    d.processChanged(20, 7001n); // the runtime, in the new cgroup, still in the host's root
    d.processChanged(21, 7001n); // the container's first process, in its root
    expect(attached.map((t) => [t.pid, t.mappedPath])).toEqual([[21, '/usr/lib/libssl.so.3']]); // before any rescan timer
    expect(scans.mock.calls).toEqual([[20], [21]]);
    d.processChanged(21, 7001n);
    d.processChanged(20, 7001n);
    expect(scans).toHaveBeenCalledTimes(2);
    d.processChanged(21, 7002n);
    expect(scans).toHaveBeenCalledTimes(3);
    d.processChanged(22, 7003n); // exited: no root to see
    expect(scans).toHaveBeenCalledTimes(3);
    d.close();
  });
});
