import { closeSync, fstatSync, readSync } from 'node:fs';
import { openInRoot } from '../bpf/libbpf.js';

/**
 * Where a root's dynamic loader finds the TLS libraries, so that they can be probed before any
 * process loads them: the libraries /etc/ld.so.cache names, and the default directories the loader
 * searches when the cache does not have a name (glibc's multiarch and lib64 directories, musl's
 * /lib and /usr/lib). ld.so.conf is not read: ldconfig turned it into the cache.
 */

/** Sonames of the libraries probed (TLS_FUNCTIONS): OpenSSL's libssl and GnuTLS. */
const TLS_SONAME = /^lib(ssl|gnutls)\.so(\.[0-9]+)*$/;
/** What to look for in the default directories when there is no cache (musl, an image built without ldconfig). */
const DEFAULT_SONAMES = ['libssl.so.3', 'libssl.so.1.1', 'libgnutls.so.30'];
const MULTIARCH: Partial<Record<NodeJS.Architecture, { triplet: string; cacheFlags: number }>> = {
  // glibc's ldconfig.h: FLAG_ELF_LIBC6 (3) | FLAG_X8664_LIB64 (0x0300) or FLAG_AARCH64_LIB64 (0x0a00).
  x64: { triplet: 'x86_64-linux-gnu', cacheFlags: 0x0303 },
  arm64: { triplet: 'aarch64-linux-gnu', cacheFlags: 0x0a03 },
};

const CACHE_PATH = '/etc/ld.so.cache';
const CACHE_MAGIC = 'glibc-ld.so.cache1.1';
/** glibc before 2.32 writes this format first, then the new one at the next multiple of 8. */
const OLD_CACHE_MAGIC = 'ld.so-1.7.0';
const OLD_HEADER_SIZE = 16;
const OLD_ENTRY_SIZE = 12;
const HEADER_SIZE = 48;
const ENTRY_SIZE = 24;
// The cache is read from roots that containers control: it is read whole, so it is capped (a real
// one is 20-100 KB), and so is what is taken from it (a real one names 2-10 TLS libraries).
const MAX_CACHE_BYTES = 4 << 20;
const MAX_CACHE_PATHS = 32;
const MAX_PATH_BYTES = 4096;

/** One library of /etc/ld.so.cache: its soname and the path the loader opens for it. */
export interface CacheEntry {
  name: string;
  path: string;
}

/**
 * The libraries of this architecture that an ld.so.cache names, in its order, or why it cannot be
 * read. Every offset is checked against the buffer: a crafted cache yields an error or fewer
 * entries, never a throw.
 */
export function ldSoCacheEntries(cache: Buffer, arch: NodeJS.Architecture = process.arch): CacheEntry[] | { invalid: string } {
  let base = 0;
  if (cache.subarray(0, OLD_CACHE_MAGIC.length).toString('latin1') === OLD_CACHE_MAGIC) {
    if (cache.length < OLD_HEADER_SIZE) return { invalid: 'truncated header' };
    base = OLD_HEADER_SIZE + cache.readUInt32LE(OLD_CACHE_MAGIC.length + 1) * OLD_ENTRY_SIZE;
    base = Math.ceil(base / 8) * 8;
  }
  if (cache.length < base + HEADER_SIZE || cache.subarray(base, base + CACHE_MAGIC.length).toString('latin1') !== CACHE_MAGIC)
    return { invalid: 'not a glibc ld.so.cache (format 1.1)' };
  const count = cache.readUInt32LE(base + 20);
  if (base + HEADER_SIZE + count * ENTRY_SIZE > cache.length) return { invalid: `${count} entries past the end of the file` };
  const flags = MULTIARCH[arch]?.cacheFlags;
  // Offsets of the strings are from the start of this format's header.
  const string = (offset: number): string | undefined => {
    const start = base + offset;
    const end = start < cache.length ? cache.indexOf(0, start) : -1;
    return end === -1 || end - start > MAX_PATH_BYTES ? undefined : cache.toString('latin1', start, end);
  };
  const entries: CacheEntry[] = [];
  for (let at = base + HEADER_SIZE, i = 0; i < count; i++, at += ENTRY_SIZE) {
    if (cache.readInt32LE(at) !== flags) continue;
    const name = string(cache.readUInt32LE(at + 4));
    const path = string(cache.readUInt32LE(at + 8));
    if (name !== undefined && path !== undefined) entries.push({ name, path });
  }
  return entries;
}

/** The paths inside a root where its loader finds TLS libraries when no cache names them. */
export function defaultDirectoryPaths(arch: NodeJS.Architecture = process.arch): string[] {
  const triplet = MULTIARCH[arch]?.triplet;
  const dirs = [...(triplet ? [`/lib/${triplet}`, `/usr/lib/${triplet}`] : []), '/lib64', '/usr/lib64', '/lib', '/usr/lib', '/usr/local/lib'];
  return dirs.flatMap((dir) => DEFAULT_SONAMES.map((name) => `${dir}/${name}`));
}

/**
 * The paths, inside the directory `root` (e.g. /proc/PID/root), of the TLS libraries its loader
 * finds: those of its ld.so.cache first, then the default directories; each once. The cache is
 * opened with openInRoot (nothing outside the root, only a regular file, non-blocking) and read
 * within MAX_CACHE_BYTES. `onCacheProblem` hears why a cache that exists was not used.
 */
export function loaderTlsLibraryPaths(root: string, onCacheProblem: (reason: string) => void): string[] {
  const paths = new Set<string>();
  const cache = readCache(root, onCacheProblem);
  if (cache) {
    const entries = ldSoCacheEntries(cache);
    if ('invalid' in entries) onCacheProblem(entries.invalid);
    else for (const e of entries) if (TLS_SONAME.test(e.name) && e.path.startsWith('/') && paths.size < MAX_CACHE_PATHS) paths.add(e.path);
  }
  for (const path of defaultDirectoryPaths()) paths.add(path);
  return [...paths];
}

function readCache(root: string, onCacheProblem: (reason: string) => void): Buffer | undefined {
  let fd: number;
  try {
    fd = openInRoot(root, CACHE_PATH);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') onCacheProblem((err as Error).message);
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_CACHE_BYTES) {
      onCacheProblem(`${size} bytes (at most ${MAX_CACHE_BYTES} read)`);
      return undefined;
    }
    const cache = Buffer.allocUnsafe(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, cache, done, size - done, done);
      if (n === 0) break; // shorter than its size
      done += n;
    }
    return cache.subarray(0, done);
  } catch (err) {
    onCacheProblem((err as Error).message);
    return undefined;
  } finally {
    closeSync(fd);
  }
}
