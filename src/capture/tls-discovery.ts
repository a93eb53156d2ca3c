import { closeSync, constants, fstatSync, openSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import { openInRoot } from '../bpf/libbpf.js';
import { definedFunctions } from './elf-symbols.js';
import { loaderTlsLibraryPaths } from './loader-libraries.js';

export type TlsLibraryKind = 'openssl' | 'gnutls';

/** The functions probed per library; the first one decides the kind (a file must define it to be a target). */
export const TLS_FUNCTIONS: Record<TlsLibraryKind, readonly string[]> = {
  openssl: ['SSL_write', 'SSL_read', 'SSL_write_ex', 'SSL_read_ex', 'SSL_do_handshake', 'SSL_connect', 'SSL_accept'],
  gnutls: ['gnutls_record_send', 'gnutls_record_recv', 'gnutls_handshake'],
};
const ALL_TLS_FUNCTIONS = Object.values(TLS_FUNCTIONS).flat();

/**
 * One file to probe for one library kind. A file defining both OpenSSL's and GnuTLS's functions
 * (none known) gives two targets with the same key: (key, kind) is unique.
 */
export interface TlsTarget {
  /** Device and inode of the mapped file, as in /proc/PID/maps, e.g. "fd:01:123456". */
  key: string;
  /**
   * Where attach opens it: `/proc/self/fd/N` of the file discovery opened and checked, open only
   * while attach runs, so that libbpf reads that very file and the kernel probes its inode.
   */
  path: string;
  /** The path as the process sees it, for logs. */
  mappedPath: string;
  kind: TlsLibraryKind;
  /** The subset of TLS_FUNCTIONS[kind] the file defines. */
  functions: string[];
  /** The first process seen mapping it. */
  pid: number;
}

export interface TlsDiscoveryOptions {
  /** Default '/proc'. */
  procRoot?: string;
  /** Never scanned. */
  selfPid: number;
  /** Called once per target; may throw: the failure is warned once and the file is not retried. */
  attach: (target: TlsTarget) => void;
  log: Pick<Logger, 'warn' | 'info' | 'debug'>;
}

// An exec is reported before the dynamic loader has mapped the libraries, and the loader's mmaps come
// as a burst: one rescan soon and one later catch what it maps, for at most two scans per burst. A
// later dlopen() (Kamailio's tls.so) is reported as its own mmap.
const FIRST_RESCAN_MS = 20;
const SECOND_RESCAN_MS = 300;
// Files found not to be TLS libraries, files refused, roots scanned. A host maps some thousands of
// distinct files; past this the oldest are forgotten and, if still mapped, read again (a forgotten
// root is scanned again).
const MAX_REMEMBERED_FILES = 20_000;
// One root's loader paths are a few dozen opens: past this (a slow or hung file system), the rest
// of that root is left to the maps of the processes that load from it.
const ROOT_SCAN_BUDGET_MS = 500;
/** An open of a loader path that found nothing there: the usual case, not worth a word. */
const absent = (code: string) => code === 'ENOENT' || code === 'ENOTDIR';
const DELETED_SUFFIX = ' (deleted)';

/** A file by identity (device and inode, as in /proc/PID/maps) and the path it was found at. */
interface FileAtPath {
  key: string;
  path: string;
}

interface Mapping extends FileAtPath {
  range: string;
}

/** An executable mapping of a real file from a /proc/PID/maps line, else undefined (data, anonymous, [vdso]...). */
function executableFileMapping(line: string): Mapping | undefined {
  const m = /^(\S+) (\S+) \S+ (\S+) (\d+)\s+(\/.*)$/.exec(line);
  if (!m || !m[2].includes('x') || m[4] === '0') return undefined;
  return { range: m[1], key: `${m[3]}:${m[4]}`, path: m[5] };
}

/** A file found not TLS is remembered by identity and path (see otherFiles). */
const otherFileKey = (file: FileAtPath) => `${file.key} ${file.path}`;
/** A refusal belongs to what one process shows at a path: another process mapping the same file is checked on its own. */
const refusedFileKey = (pid: number, mapping: Mapping) => `${pid} ${otherFileKey(mapping)}`;

/** The open file's device and inode as /proc/PID/maps prints them ("fd:01:123456": device major and minor in hex, inode). */
function fileKey(fd: number): string {
  const { dev, ino } = fstatSync(fd, { bigint: true });
  // Node reports st_dev in glibc's encoding of major and minor.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
}

/** The code of a failed file-system call; anything else is a bug and is rethrown. */
function ioErrorCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (!(err instanceof Error) || typeof code !== 'string') throw err; // not an I/O failure: a bug
  return code;
}

/** The process exited while we looked at it. */
const vanished = (code: string) => code === 'ENOENT' || code === 'ESRCH';

/** How a file was found: on a loader path of a process's root, or mapped by a process. */
type Found = 'loader' | 'maps';

/**
 * Finds the TLS libraries that the host's and containers' loaders provide (scanRoots) and those the
 * host's processes map (shared libssl/libgnutls, OpenSSL or BoringSSL linked into an executable
 * such as node, a library bundled with an application), and hands each file to `attach` once,
 * however many processes map it. A file is a target only if it defines the functions; importers
 * (libcurl, Kamailio's tls.so) are not.
 */
export class TlsDiscovery {
  private readonly procRoot: string;
  /** Keys of TLS files already handed to attach (or found deleted): never looked at again. */
  private readonly tlsFiles = new Set<string>();
  /**
   * Files that are not TLS libraries, oldest first, by key and path: a freed inode number is soon
   * reused (a package upgrade writes the new libssl next to the old files), and the path tells the
   * new file from the old one.
   */
  private readonly otherFiles = new Set<string>();
  /** Files refused per process (refusedFileKey), oldest first: each is warned once and not opened again. */
  private readonly refusedFiles = new Set<string>();
  /**
   * Roots scanned, each with the cgroup of the process it was seen through ("cgroup dev:inode"): a
   * new container is a new cgroup, whose first process in its own root has that root scanned. A
   * cgroup id is never reused, so a root's device and inode reused by a later container is not
   * taken for the old one.
   */
  private readonly scannedRoots = new Set<string>();
  private readonly pendingRescans = new Map<number, NodeJS.Timeout[]>();
  private readonly counts = { filesChecked: 0, attached: 0, failed: 0, refused: 0 };
  private closed = false;

  constructor(private readonly opts: TlsDiscoveryOptions) {
    this.procRoot = opts.procRoot ?? '/proc';
  }

  scanAll(): void {
    for (const name of readdirSync(this.procRoot)) if (/^\d+$/.test(name)) this.scanPid(Number(name));
  }

  /**
   * Probes the TLS libraries that the root of each running process provides (the host's, each
   * container's) on its loader's paths, whether or not a process maps them yet: a process started
   * later that loads them is covered from its first call. Each root once, however many processes
   * share it.
   */
  scanRoots(): void {
    const started = Date.now();
    const roots = new Set<string>();
    for (const name of readdirSync(this.procRoot)) {
      if (!/^\d+$/.test(name)) continue;
      const root = this.rootOf(Number(name));
      if (root === undefined || roots.has(root)) continue;
      roots.add(root);
      this.scanRoot(Number(name));
    }
    this.opts.log.info({ roots: roots.size, ms: Date.now() - started, ...this.counts }, 'TLS libraries on the loader paths of every root probed');
  }

  scanPid(pid: number): void {
    if (this.closed || pid === this.opts.selfPid) return;
    let maps: string;
    try {
      maps = readFileSync(`${this.procRoot}/${pid}/maps`, 'latin1');
    } catch (err) {
      const code = ioErrorCode(err);
      if (!vanished(code)) this.opts.log.debug({ pid, code }, 'tls discovery: cannot read maps');
      return;
    }
    for (const line of maps.split('\n')) {
      const mapping = executableFileMapping(line);
      if (mapping && !this.tlsFiles.has(mapping.key) && !this.otherFiles.has(otherFileKey(mapping)) && !this.refusedFiles.has(refusedFileKey(pid, mapping)))
        this.checkFile(pid, mapping);
    }
  }

  /**
   * The kernel saw an exec or an executable mmap in pid, in cgroup `cgroupId`: scan its root now if
   * no process of that cgroup was seen in that root yet (a container that just started: its runtime
   * joins the cgroup before it enters the root), and rescan its maps soon, coalescing bursts, for a
   * library of its own.
   */
  processChanged(pid: number, cgroupId?: bigint): void {
    if (this.closed || pid === this.opts.selfPid) return;
    const root = cgroupId === undefined ? undefined : this.rootOf(pid);
    if (root !== undefined && !this.scannedRoots.has(`${cgroupId} ${root}`)) {
      this.remember(this.scannedRoots, `${cgroupId} ${root}`);
      this.scanRoot(pid);
    }
    if (this.pendingRescans.has(pid)) return;
    const first = setTimeout(() => this.scanPid(pid), FIRST_RESCAN_MS);
    const second = setTimeout(() => {
      this.pendingRescans.delete(pid);
      this.scanPid(pid);
    }, SECOND_RESCAN_MS);
    first.unref();
    second.unref();
    this.pendingRescans.set(pid, [first, second]);
  }

  /** Files read, TLS files probed, TLS files that could not be probed, files refused (unsafe, not the mapped file, or not readable as ELF). */
  stats(): { filesChecked: number; attached: number; failed: number; refused: number } {
    return { ...this.counts };
  }

  close(): void {
    this.closed = true;
    for (const timers of this.pendingRescans.values()) timers.forEach(clearTimeout);
    this.pendingRescans.clear();
  }

  /** The device and inode of pid's root directory, undefined when it cannot be seen (exited, no permission). */
  private rootOf(pid: number): string | undefined {
    try {
      const root = statSync(`${this.procRoot}/${pid}/root`, { bigint: true });
      return `${root.dev}:${root.ino}`;
    } catch (err) {
      const code = ioErrorCode(err);
      if (!vanished(code)) this.opts.log.debug({ pid, code }, 'tls discovery: cannot see the root');
      return undefined;
    }
  }

  /**
   * Opens each TLS library path of pid's loader (loader-libraries.ts) inside its root and probes
   * what is there. The root may be a container's: paths resolve inside it (openInRoot), only
   * regular files are opened, and the file read is the file probed, as for a mapped file.
   */
  private scanRoot(pid: number): void {
    const root = `${this.procRoot}/${pid}/root`;
    const deadline = Date.now() + ROOT_SCAN_BUDGET_MS;
    const paths = loaderTlsLibraryPaths(root, (reason) => this.opts.log.warn({ pid, path: '/etc/ld.so.cache', reason }, 'TLS discovery: loader cache not read'));
    for (const path of paths) {
      if (this.closed) return;
      if (Date.now() > deadline) {
        this.opts.log.warn({ pid, budgetMs: ROOT_SCAN_BUDGET_MS }, 'TLS discovery: loader paths of a root not all checked in time; the rest are probed once a process maps them');
        return;
      }
      let fd: number;
      try {
        fd = openInRoot(root, path);
      } catch (err) {
        const code = ioErrorCode(err);
        if (!absent(code) && !vanished(code)) {
          this.counts.refused++;
          this.opts.log.warn({ pid, path, reason: (err as Error).message }, 'TLS discovery: file refused');
        }
        continue;
      }
      try {
        const file = { key: fileKey(fd), path };
        if (!this.tlsFiles.has(file.key) && !this.otherFiles.has(otherFileKey(file))) this.inspect(fd, pid, file, path, 'loader', false);
      } finally {
        closeSync(fd);
      }
    }
  }

  /**
   * Opens the file a maps line names as the process sees it and reads its symbols. The process
   * controls what is at that path (it may have changed its root since it mapped the file, or be a
   * container), so the path is resolved inside the process's root, only a regular file is opened,
   * and only when it is the very file mapped (same device and inode) is it read, cached as "not
   * TLS" or probed, through its open fd.
   */
  private checkFile(pid: number, mapping: Mapping): void {
    const deleted = mapping.path.endsWith(DELETED_SUFFIX);
    const mappedPath = deleted ? mapping.path.slice(0, -DELETED_SUFFIX.length) : mapping.path;
    let fd: number;
    try {
      // A deleted file is no longer at its path; map_files opens the mapped file itself.
      fd = deleted
        ? openSync(`${this.procRoot}/${pid}/map_files/${mapping.range}`, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
        : openInRoot(`${this.procRoot}/${pid}/root`, mappedPath);
    } catch (err) {
      const code = ioErrorCode(err);
      if (!vanished(code)) this.refuse(pid, mapping, (err as Error).message);
      return;
    }
    try {
      if (fileKey(fd) !== mapping.key) {
        this.refuse(pid, mapping, 'not the file the process mapped: another device or inode at that path in its root');
        return;
      }
      this.inspect(fd, pid, mapping, mappedPath, 'maps', deleted);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Reads the symbols of the open, checked file and probes it if it is a TLS library; remembers it
   * either way. `mappedPath` is its path as the process sees it. A deleted file is only reported:
   * its path no longer leads to it.
   */
  private inspect(fd: number, pid: number, file: FileAtPath, mappedPath: string, found: Found, deleted: boolean): void {
    this.counts.filesChecked++;
    const elf = definedFunctions(fd, ALL_TLS_FUNCTIONS);
    if ('refused' in elf) {
      this.counts.refused++;
      this.opts.log.warn({ pid, path: mappedPath, file: file.key, reason: elf.refused }, 'TLS discovery: file not read');
      this.remember(this.otherFiles, otherFileKey(file));
      return;
    }
    const targets = (Object.keys(TLS_FUNCTIONS) as TlsLibraryKind[])
      .filter((kind) => elf.defined.has(TLS_FUNCTIONS[kind][0]))
      .map((kind) => ({ key: file.key, path: `/proc/self/fd/${fd}`, mappedPath, kind, pid, functions: TLS_FUNCTIONS[kind].filter((f) => elf.defined.has(f)) }));
    if (targets.length === 0) {
      this.remember(this.otherFiles, otherFileKey(file));
      return;
    }
    this.tlsFiles.add(file.key);
    if (deleted) {
      this.counts.failed += targets.length;
      this.opts.log.warn({ pid, path: mappedPath }, 'TLS library cannot be probed: deleted or replaced on disk since the process mapped it (restart the process to capture its TLS)');
      return;
    }
    for (const target of targets) this.attach(target, found);
  }

  /** A file this process shows that must not be read: warned and counted once, never cached under the file's identity. */
  private refuse(pid: number, mapping: Mapping, reason: string): void {
    this.counts.refused++;
    this.remember(this.refusedFiles, refusedFileKey(pid, mapping));
    this.opts.log.warn({ pid, path: mapping.path, file: mapping.key, reason }, 'TLS discovery: file refused');
  }

  private attach(target: TlsTarget, found: Found): void {
    try {
      this.opts.attach(target);
    } catch (err) {
      this.counts.failed++;
      this.opts.log.warn({ pid: target.pid, path: target.mappedPath, kind: target.kind, reason: err instanceof Error ? err.message : String(err) }, 'TLS library probes not attached');
      return;
    }
    this.counts.attached++;
    this.opts.log.info({ pid: target.pid, path: target.mappedPath, file: target.key, kind: target.kind, functions: target.functions, found }, 'TLS library probed');
  }

  private remember(files: Set<string>, key: string): void {
    if (files.size >= MAX_REMEMBERED_FILES) files.delete(files.values().next().value!);
    files.add(key);
  }
}
