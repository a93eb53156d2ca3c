/**
 * The project's own binding to the system libbpf (native/libbpf_addon.c).
 * Errors are JS Errors with `code` (errno name, e.g. 'EPERM'), `errno`, and a message such as
 * "bpf_object__load failed: EPERM (Operation not permitted)" followed by libbpf's last log lines
 * (for a failed load: the verifier's).
 */
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

type Handle = object;
interface MapInfo {
  handle: Handle;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}
interface Addon {
  open(path: string): Handle;
  programNames(obj: Handle): string[];
  setInitialValue(obj: Handle, mapName: string, value: Buffer): void;
  initialValue(obj: Handle, mapName: string): Buffer;
  setMaxEntries(obj: Handle, mapName: string, n: number): void;
  load(obj: Handle): void;
  loadAlone(obj: Handle, progName: string): string;
  attach(obj: Handle, progName: string, binaryPath?: string, funcNameOrOffset?: string | number, retprobe?: boolean, pid?: number): Handle;
  map(obj: Handle, name: string): MapInfo;
  close(obj: Handle): void;
  linkDestroy(link: Handle): void;
  linksDestroy(links: Handle[]): void;
  mapLookup(map: Handle, key: Buffer, valueBytes: number): Buffer | null;
  mapUpdate(map: Handle, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(map: Handle, key: Buffer): boolean;
  possibleCpus(): number;
  ringBuffer(map: Handle, onBatch: (batch: Buffer) => void, batchBytes: number, maxLatencyMs: number): Handle;
  ringBufferStop(reader: Handle): void;
  ringBufferStats(reader: Handle): RingBufferStats;
  openInRoot(rootPath: string, path: string): number;
  disassemble(code: Buffer, address: number): Instruction[];
  releaseMemory(): void;
}

// The addon is built in place (src/bpf/native/build); the compiled wrapper in dist/ loads the same file.
const here = dirname(fileURLToPath(import.meta.url)).replace(/\/dist\/src\/bpf$/, '/src/bpf');
export const ADDON_PATH = resolve(here, 'native/build/Release/libbpf_addon.node');

let addon: Addon | undefined;
function native(): Addon {
  addon ??= createRequire(import.meta.url)(ADDON_PATH) as Addon;
  return addon;
}

/**
 * Opens `path` for reading as it resolves inside the directory `rootPath` (e.g. /proc/PID/root, a
 * process's own root): symlinks and '..' never leave it, magic links are refused (openat2 with
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS). Only a regular file is opened, non-blocking; anything
 * else (FIFO, device, directory) throws EINVAL without being opened. Returns the fd; the caller
 * closes it. Throws ENOSYS on kernels without openat2.
 */
export function openInRoot(rootPath: string, path: string): number {
  return native().openInRoot(rootPath, path);
}

/**
 * Gives back to the kernel memory that start-up used and steady state does not: malloc's free
 * pages (libbpf's BTF and ELF parsing), and this process's pages of node's and capstone's
 * read-only code and data (module loading, compilers, decoder tables: about 20 MB after start-up);
 * what runs again is read in again from the page cache.
 */
export function releaseMemory(): void {
  native().releaseMemory();
}

/** One x86-64 instruction as capstone decodes it. */
export interface Instruction {
  address: number;
  size: number;
  mnemonic: string;
  operands: string;
  /** Legacy prefix bytes (0x66, 0xf2...), without REX. */
  prefixes: number[];
  /** Opcode bytes after the prefixes and REX. */
  opcode: number[];
  /** The REX byte, 0 if none. */
  rex: number;
  /** A direct (relative) branch or call: where it goes. */
  target?: number;
  /** Capstone's groups: 'jump', 'call', 'ret', 'branch_relative'... */
  groups: string[];
  /** Registers the instruction writes, explicitly or not ('rsp' for a push), by capstone's names. */
  writes: string[];
}

/** Decodes x86-64 code that starts at `address`, up to the first bytes that are not an instruction. */
export function disassemble(code: Buffer, address: number): Instruction[] {
  return native().disassemble(code, address);
}

/** Attach a program as a uprobe (or uretprobe) on a function of an executable or shared library. */
export interface UprobeOpts {
  /** Path, or a library name libbpf resolves (e.g. 'libc.so.6'). */
  binaryPath: string;
  /** A function's name, or a file offset (a site inside a function, or a function without a symbol). */
  funcName: string | number;
  retprobe?: boolean;
  /** -1 (default): every process. */
  pid?: number;
}

export interface RingBufferOpts {
  /** A batch is handed to JS when it would exceed this many bytes. Default 1 MiB. */
  batchBytes?: number;
  /** ...or when its first record is this old. Default 10 ms. Also how often the ring buffer is
   * looked at when no wakeup comes (records written with BPF_RB_NO_WAKEUP). */
  maxLatencyMs?: number;
}

export interface RingBufferStats {
  /** Batches and records handed to JS so far. */
  batches: number;
  records: number;
}

export interface VerifierStats {
  insnsProcessed: number;
  /** The verifier's statistics as it printed them (BPF_LOG_STATS). */
  text: string;
}

const BPF_MAP_TYPE_PERCPU_HASH = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
const PER_CPU_TYPES = new Set([BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH]);

export class BpfObject {
  private handle?: Handle;
  private readonly links: BpfLink[] = [];
  private readonly readers: RingBufferReader[] = [];

  private constructor(handle: Handle) {
    this.handle = handle;
  }

  /** Opens (parses) an ELF BPF object; nothing reaches the kernel before load(). */
  static open(path: string): BpfObject {
    return new BpfObject(native().open(path));
  }

  programNames(): string[] {
    return native().programNames(this.open());
  }

  /** Before load: replaces a global data section's content, e.g. '.rodata' configuration. */
  setInitialValue(mapName: string, value: Buffer): void {
    native().setInitialValue(this.open(), mapName, value);
  }

  /** A copy of a global data section's current content. */
  initialValue(mapName: string): Buffer {
    return native().initialValue(this.open(), mapName);
  }

  /** Before load. */
  setMaxEntries(mapName: string, n: number): void {
    native().setMaxEntries(this.open(), mapName, n);
  }

  /** Creates maps, relocates (CO-RE against /sys/kernel/btf/vmlinux) and loads every program. */
  load(): void {
    native().load(this.open());
  }

  /**
   * Instead of load(), for measuring: loads `progName` alone, the other programs left out, and
   * returns what the verifier reported for it: the instructions it processed (its limit is 1M a
   * program) and its whole statistics text (states, time, stack).
   */
  loadAlone(progName: string): VerifierStats {
    const text = native().loadAlone(this.open(), progName);
    const processed = /processed (\d+) insns/.exec(text);
    if (!processed) throw new Error(`${progName}: no verifier statistics in ${JSON.stringify(text)}`);
    return { insnsProcessed: Number(processed[1]), text };
  }

  /**
   * Without opts, attaches as the program's SEC() says (tracepoint, tp_btf, raw_tp...).
   * With opts, attaches a uprobe/uretprobe. Classic tracepoints need tracefs (see ensureTracefs()).
   * The link is destroyed by close(), or earlier by link.destroy().
   */
  attach(progName: string, opts?: UprobeOpts): BpfLink {
    const h = opts
      ? native().attach(this.open(), progName, opts.binaryPath, opts.funcName, opts.retprobe ?? false, opts.pid ?? -1)
      : native().attach(this.open(), progName);
    const link = new BpfLink(h);
    this.links.push(link);
    return link;
  }

  map(name: string): BpfMap {
    return new BpfMap(this, native().map(this.open(), name));
  }

  /**
   * Starts a native thread draining a BPF_MAP_TYPE_RINGBUF map into batches; onBatch gets one
   * call per batch on the JS thread. Batch framing, per record: u32 size (LE), u32 0, the record,
   * zero padding to a multiple of 8 (see forEachRecord()).
   * The Buffer is a view of a pooled native buffer that is detached when onBatch returns:
   * copy what must outlive the call. While JS holds every pooled buffer, the thread waits and the
   * ring buffer fills up (the BPF side sees its output fail). An exception thrown by onBatch
   * surfaces as an uncaught exception; delivery goes on.
   */
  ringBuffer(mapName: string, onBatch: (batch: Buffer) => void, opts: RingBufferOpts = {}): RingBufferReader {
    const map = native().map(this.open(), mapName);
    // Node 20 swallows exceptions thrown into N-API callbacks: re-throw them as uncaught.
    const deliver = (batch: Buffer): void => {
      try {
        onBatch(batch);
      } catch (err) {
        process.nextTick(() => {
          throw err;
        });
      }
    };
    const h = native().ringBuffer(map.handle, deliver, opts.batchBytes ?? 1 << 20, opts.maxLatencyMs ?? 10);
    const reader = new RingBufferReader(h);
    this.readers.push(reader);
    return reader;
  }

  /** Destroys links, stops ring buffer readers (delivering what they hold), frees everything. Idempotent. */
  close(): void {
    if (!this.handle) return;
    BpfLink.destroyAll(this.links.splice(0));
    for (const reader of this.readers.splice(0)) reader.stop();
    native().close(this.handle);
    this.handle = undefined;
  }

  get closed(): boolean {
    return this.handle === undefined;
  }

  private open(): Handle {
    if (!this.handle) throw new Error('BpfObject is closed');
    return this.handle;
  }
}

export class BpfLink {
  private handle?: Handle;

  /** @internal */
  constructor(handle: Handle) {
    this.handle = handle;
  }

  /** Detaches. Idempotent. */
  destroy(): void {
    if (!this.handle) return;
    native().linkDestroy(this.handle);
    this.handle = undefined;
  }

  /**
   * Detaches `links` side by side: each tracepoint's or uprobe's detach waits out RCU grace
   * periods, one after the other 3.1 s for the agent's 38 links, side by side 2.1 s (the rest is
   * the kernel's, which waits under one mutex per tracepoint).
   */
  static destroyAll(links: BpfLink[]): void {
    const handles = links.flatMap((l) => l.handle ?? []);
    for (const l of links) l.handle = undefined;
    native().linksDestroy(handles);
  }
}

export class BpfMap {
  readonly keySize: number;
  readonly valueSize: number;
  readonly type: number;
  readonly maxEntries: number;
  private readonly handle: Handle;

  /** @internal */
  constructor(
    private readonly owner: BpfObject,
    info: MapInfo,
  ) {
    this.handle = info.handle;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.type = info.type;
    this.maxEntries = info.maxEntries;
  }

  get perCpu(): boolean {
    return PER_CPU_TYPES.has(this.type);
  }

  /** The value, or null when the key is absent. Not for per-CPU maps (lookupPerCpu). */
  lookup(key: Buffer): Buffer | null {
    return native().mapLookup(this.live(), key, this.valueSize);
  }

  /** For per-CPU maps: one value per possible CPU, or [] when the key is absent. */
  lookupPerCpu(key: Buffer): Buffer[] {
    const stride = (this.valueSize + 7) & ~7;
    const cpus = native().possibleCpus();
    const all = native().mapLookup(this.live(), key, stride * cpus);
    if (!all) return [];
    return Array.from({ length: cpus }, (_, i) => all.subarray(i * stride, i * stride + this.valueSize));
  }

  /** flags: BPF_ANY (0), BPF_NOEXIST (1), BPF_EXIST (2). */
  update(key: Buffer, value: Buffer, flags = 0): void {
    native().mapUpdate(this.live(), key, value, flags);
  }

  /** False when the key was absent. */
  delete(key: Buffer): boolean {
    return native().mapDelete(this.live(), key);
  }

  private live(): Handle {
    if (this.owner.closed) throw new Error('BpfMap used after its BpfObject was closed');
    return this.handle;
  }
}

export class RingBufferReader {
  private handle?: Handle;
  private last: RingBufferStats = { batches: 0, records: 0 };

  /** @internal */
  constructor(handle: Handle) {
    this.handle = handle;
  }

  /**
   * Joins the thread, then delivers synchronously, in order, every record still queued or in the
   * ring buffer; onBatch is never called after stop() returns. Until then the reader keeps Node's
   * event loop alive. Idempotent.
   */
  stop(): void {
    if (!this.handle) return;
    native().ringBufferStop(this.handle);
    this.last = native().ringBufferStats(this.handle);
    this.handle = undefined;
  }

  stats(): RingBufferStats {
    return this.handle ? native().ringBufferStats(this.handle) : { ...this.last };
  }
}

/** Calls fn for each record of a batch with a view of the record (valid as long as the batch). */
export function forEachRecord(batch: Buffer, fn: (record: Buffer) => void): void {
  for (let off = 0; off + 8 <= batch.length; ) {
    const size = batch.readUInt32LE(off);
    fn(batch.subarray(off + 8, off + 8 + size));
    off += 8 + ((size + 7) & ~7);
  }
}
