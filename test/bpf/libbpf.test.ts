// Real-kernel tests of src/bpf: fixtures in test/bpf/fixtures/, built into build/test-bpf/ by its Makefile.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ADDON_PATH, BpfObject, forEachRecord } from '../../src/bpf/libbpf.js';
import { ensureTracefs, tracefsMount } from '../../src/bpf/tracefs.js';
import { kernelSuiteSkipReason } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const OUT = resolve(ROOT, 'build/test-bpf');
const PROBES = resolve(OUT, 'probes.bpf.o');

// probes.h
const MAX_PAYLOAD = 65536 + 104;
const EVENT_SIZE = 24;
const HIT = { tracepoint: 0, tpBtf: 1, rawTp: 2, uprobe: 3, lost: 4 };

const suite = kernelSuiteSkipReason('libbpf binding tests') ? describe.skip : describe;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Makes the kernel run the getppid syscall (process.ppid is not cached). */
function getppid(times: number): void {
  for (let i = 0; i < times; i++) void process.ppid;
}

interface BpftoolProg {
  id: number;
  name?: string;
}
interface BpftoolLink {
  id: number;
  prog_id: number;
}
function bpftool<T>(...args: string[]): T {
  return JSON.parse(execFileSync('bpftool', [...args, '-j'], { encoding: 'utf8' }) || '[]') as T;
}
/** Our test programs are the only ones named tst_*. */
function testProgIds(): number[] {
  return bpftool<BpftoolProg[]>('prog', 'show')
    .filter((p) => p.name?.startsWith('tst_'))
    .map((p) => p.id);
}
function linksOf(progIds: number[]): BpftoolLink[] {
  return bpftool<BpftoolLink[]>('link', 'show').filter((l) => progIds.includes(l.prog_id));
}

const cpus = Number(readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split('-').pop()) + 1;

let objects: BpfObject[] = [];
afterEach(() => {
  for (const obj of objects) obj.close();
  objects = [];
});

/** Opens probes.bpf.o configured for this process, loads it, fills the scratch payload with a known pattern. */
function loadProbes(opts: { targetTgid?: number; tag?: number; payloadLen?: number; noWakeup?: boolean } = {}): BpfObject {
  const obj = BpfObject.open(PROBES);
  objects.push(obj);
  const rodata = obj.initialValue('.rodata');
  rodata.writeUInt32LE(opts.targetTgid ?? process.pid, 0);
  rodata.writeUInt32LE(opts.tag ?? 0, 4);
  rodata.writeUInt32LE(opts.noWakeup ? 1 : 0, 8);
  obj.setInitialValue('.rodata', rodata);
  obj.setMaxEntries('scratch', cpus);
  obj.load();
  const slot = Buffer.alloc(EVENT_SIZE + MAX_PAYLOAD);
  for (let i = 0; i < MAX_PAYLOAD; i++) slot[EVENT_SIZE + i] = payloadByte(i);
  const scratch = obj.map('scratch');
  for (let cpu = 0; cpu < cpus; cpu++) scratch.update(u32(cpu), slot);
  obj.map('payload_len').update(u32(0), u32(opts.payloadLen ?? 0));
  return obj;
}

function payloadByte(i: number): number {
  return (i * 7 + 3) & 0xff;
}

function hits(obj: BpfObject, index: number): number {
  return Number(obj.map('hits').lookup(u32(index))!.readBigUInt64LE(0));
}

interface Event {
  tgid: number;
  tag: number;
  seq: number;
  payloadLen: number;
  payload: Buffer;
}
function parseEvent(rec: Buffer): Event {
  return {
    tgid: rec.readUInt32LE(0),
    tag: rec.readUInt32LE(4),
    seq: Number(rec.readBigUInt64LE(8)),
    payloadLen: rec.readUInt32LE(16),
    payload: Buffer.from(rec.subarray(EVENT_SIZE)),
  };
}

suite('libbpf binding (real kernel)', () => {
  beforeAll(() => {
    execFileSync('make', ['-s', '-C', resolve(ROOT, 'test/bpf/fixtures')], { stdio: 'inherit' });
    if (!existsSync(ADDON_PATH)) {
      execFileSync('npx', ['node-gyp', 'rebuild', '--nodedir=/usr', '--directory', resolve(ROOT, 'src/bpf/native')], {
        stdio: 'inherit',
        cwd: ROOT,
      });
    }
    ensureTracefs();
  });

  it('ensureTracefs leaves tracefs mounted', () => {
    ensureTracefs();
    expect(tracefsMount()).toBeTypeOf('string');
  });

  it('delivers tracepoint records through the ring buffer, framed, in order, with exact contents', async () => {
    const obj = loadProbes({ tag: 0xabc });
    obj.attach('tst_getppid');
    const batches: Buffer[] = [];
    const reader = obj.ringBuffer('events', (b) => batches.push(Buffer.from(b)));
    getppid(5);
    await until('5 records', () => reader.stats().records === 5);

    const all = Buffer.concat(batches);
    expect(all.length).toBe(5 * (8 + EVENT_SIZE));
    for (let i = 0; i < 5; i++) {
      const framed = all.subarray(i * 32, (i + 1) * 32);
      const expected = Buffer.alloc(32);
      expected.writeUInt32LE(EVENT_SIZE, 0);
      expected.writeUInt32LE(process.pid, 8);
      expected.writeUInt32LE(0xabc, 12);
      expected.writeBigUInt64LE(BigInt(i), 16);
      // payload_len 0 at 24; the CPU the program ran on at 28
      framed.copy(expected, 28, 28, 32);
      expect(framed).toEqual(expected);
      expect(framed.readUInt32LE(28)).toBeLessThan(cpus);
    }
    expect(hits(obj, HIT.tracepoint)).toBe(5);
    expect(hits(obj, HIT.lost)).toBe(0);
  });

  it('pads records to 8 bytes and delivers a record larger than a batch on its own', async () => {
    const obj = loadProbes({ payloadLen: 13 });
    obj.attach('tst_getppid');
    const batches: Buffer[] = [];
    const reader = obj.ringBuffer('events', (b) => batches.push(Buffer.from(b)), { batchBytes: 4096 });
    getppid(1);
    await until('the padded record', () => reader.stats().records === 1);
    expect(batches).toHaveLength(1);
    const padded = batches[0];
    expect(padded.length).toBe(8 + 40);
    expect(padded.readUInt32LE(0)).toBe(EVENT_SIZE + 13);
    expect(padded.readUInt32LE(4)).toBe(0);
    const ev = parseEvent(padded.subarray(8, 8 + EVENT_SIZE + 13));
    expect(ev.payloadLen).toBe(13);
    expect([...ev.payload]).toEqual(Array.from({ length: 13 }, (_, i) => payloadByte(i)));
    expect([...padded.subarray(8 + EVENT_SIZE + 13)]).toEqual([0, 0, 0]);

    obj.map('payload_len').update(u32(0), u32(MAX_PAYLOAD));
    getppid(2);
    await until('two maximum-size records', () => reader.stats().records === 3);
    expect(batches).toHaveLength(3);
    for (const big of batches.slice(1)) {
      expect(big.length).toBe(8 + EVENT_SIZE + MAX_PAYLOAD);
      const records: Event[] = [];
      forEachRecord(big, (r) => records.push(parseEvent(r)));
      expect(records).toHaveLength(1);
      expect(records[0].payloadLen).toBe(MAX_PAYLOAD);
      expect(records[0].payload.equals(Buffer.from(Array.from({ length: MAX_PAYLOAD }, (_, i) => payloadByte(i))))).toBe(
        true,
      );
    }
    expect(batches.slice(1).map((b) => parseEvent(b.subarray(8)).seq)).toEqual([1, 2]);

    // pooled buffers grown for those records still hand over batches of at most batchBytes
    obj.map('payload_len').update(u32(0), u32(0));
    getppid(300);
    await until('300 small records', () => reader.stats().records === 303);
    expect(batches.slice(3).map((b) => b.length)).toEqual([4096, 4096, (300 - 256) * 32]);
  });

  it('re-throws an exception from the batch callback as uncaught and keeps delivering', async () => {
    const obj = loadProbes();
    obj.attach('tst_getppid');
    const saved = process.listeners('uncaughtException');
    const uncaught: Error[] = [];
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', (err) => uncaught.push(err));
    try {
      let calls = 0;
      const reader = obj.ringBuffer('events', () => {
        calls++;
        throw new Error(`bad batch ${calls}`);
      });
      getppid(1);
      await until('the first exception', () => uncaught.length === 1);
      getppid(1);
      await until('the second exception', () => uncaught.length === 2);
      expect(uncaught.map((e) => e.message)).toEqual(['bad batch 1', 'bad batch 2']);
      expect(reader.stats()).toEqual({ batches: 2, records: 2 });
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const l of saved) process.on('uncaughtException', l);
    }
  });

  it('hands JS one call per full batch, the rest on stop(), and the batch view dies with the call', async () => {
    const obj = loadProbes();
    obj.attach('tst_getppid');
    const batches: Buffer[] = [];
    const views: Buffer[] = [];
    const reader = obj.ringBuffer(
      'events',
      (b) => {
        views.push(b);
        batches.push(Buffer.from(b));
      },
      { batchBytes: 4096, maxLatencyMs: 60_000 },
    );
    getppid(1000);
    // 32 framed bytes per record: 128 records fill a 4096-byte batch
    await until('7 full batches', () => batches.length === 7);
    expect(batches.map((b) => b.length)).toEqual(Array(7).fill(4096));
    reader.stop();
    expect(batches).toHaveLength(8);
    expect(batches[7].length).toBe((1000 - 7 * 128) * 32);
    expect(reader.stats()).toEqual({ batches: 8, records: 1000 });
    const seqs: number[] = [];
    for (const b of batches) forEachRecord(b, (r) => seqs.push(parseEvent(r).seq));
    expect(seqs).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(views.every((v) => v.length === 0)).toBe(true);
    reader.stop();
  });

  it('hands over a partial batch once maxLatencyMs has passed', async () => {
    const obj = loadProbes();
    obj.attach('tst_getppid');
    const batches: Buffer[] = [];
    const reader = obj.ringBuffer('events', (b) => batches.push(Buffer.from(b)), { maxLatencyMs: 20 });
    const start = Date.now();
    getppid(3);
    await until('the partial batch', () => batches.length === 1, 2000);
    expect(Date.now() - start).toBeGreaterThanOrEqual(15);
    expect(batches[0].length).toBe(3 * 32);
    expect(reader.stats()).toEqual({ batches: 1, records: 3 });
  });

  it('polls: records written without a wakeup arrive within two maxLatencyMs', async () => {
    const obj = loadProbes({ noWakeup: true });
    obj.attach('tst_getppid');
    const batches: Buffer[] = [];
    const reader = obj.ringBuffer('events', (b) => batches.push(Buffer.from(b)), { maxLatencyMs: 20 });
    for (let round = 1; round <= 3; round++) {
      const start = Date.now();
      getppid(2);
      await until(`round ${round}'s batch`, () => batches.length === round, 2000);
      // consumed at the next poll (<= 20 ms), handed over once the first record is 20 ms old
      expect(Date.now() - start).toBeLessThan(1000);
      expect(batches[round - 1].length).toBe(2 * 32);
    }
    expect(reader.stats()).toEqual({ batches: 3, records: 6 });
    expect(hits(obj, HIT.lost)).toBe(0);
  });

  it('applies back-pressure: a busy JS thread makes the ring buffer overflow, every record is delivered or counted lost', async () => {
    const obj = loadProbes();
    obj.attach('tst_getppid');
    let received = 0;
    let lastSeq = -1;
    let ordered = true;
    const reader = obj.ringBuffer(
      'events',
      (b) =>
        forEachRecord(b, (r) => {
          const seq = parseEvent(r).seq;
          ordered &&= seq > lastSeq;
          lastSeq = seq;
          received++;
        }),
      { batchBytes: 256 },
    );
    // 1 MiB ring, 32 bytes per record in the ring: ~32768 fit while JS does not return to the event loop
    const total = 40_000;
    getppid(total);
    const lost = hits(obj, HIT.lost);
    await until('every record delivered or counted lost', () => received + lost === total, 20_000);
    expect(lost).toBeGreaterThan(0);
    expect(received).toBeGreaterThan(30_000);
    expect(ordered).toBe(true);
    expect(reader.stats().records).toBe(received);
    expect(hits(obj, HIT.tracepoint)).toBe(total);
  });

  it('rodata set before load changes what the program does', async () => {
    const other = loadProbes({ targetTgid: process.pid + 1_000_000 });
    other.attach('tst_getppid');
    const mine = loadProbes({ tag: 42 });
    mine.attach('tst_getppid');
    expect(mine.initialValue('.rodata').readUInt32LE(4)).toBe(42);
    getppid(4);
    expect(hits(other, HIT.tracepoint)).toBe(0);
    expect(hits(mine, HIT.tracepoint)).toBe(4);
  });

  it('looks up, updates and deletes map elements', () => {
    const obj = loadProbes();
    const kv = obj.map('kv');
    expect([kv.keySize, kv.valueSize, kv.maxEntries]).toEqual([4, 8, 16]);
    expect(kv.lookup(u32(7))).toBeNull();
    kv.update(u32(7), u64(123456789));
    expect(kv.lookup(u32(7))).toEqual(u64(123456789));
    expect(() => kv.update(u32(7), u64(1), 1 /* BPF_NOEXIST */)).toThrow(
      expect.objectContaining({ code: 'EEXIST', message: expect.stringMatching(/^bpf_map__update_elem failed: EEXIST/) }),
    );
    kv.update(u32(7), u64(5), 2 /* BPF_EXIST */);
    expect(kv.lookup(u32(7))).toEqual(u64(5));
    expect(kv.delete(u32(7))).toBe(true);
    expect(kv.delete(u32(7))).toBe(false);
    expect(kv.lookup(u32(7))).toBeNull();
    expect(() => kv.lookup(Buffer.alloc(2))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => obj.map('nope')).toThrow(/nope failed: ENOENT/);
  });

  it('reads a per-CPU array as one value per possible CPU', () => {
    const obj = loadProbes();
    obj.attach('tst_getppid');
    const percpu = obj.map('percpu_hits');
    expect(percpu.perCpu).toBe(true);
    getppid(11);
    const values = percpu.lookupPerCpu(u32(0));
    expect(values).toHaveLength(cpus);
    expect(values.every((v) => v.length === 8)).toBe(true);
    expect(values.reduce((sum, v) => sum + Number(v.readBigUInt64LE(0)), 0)).toBe(11);
  });

  it('attaches tp_btf and raw_tp programs', () => {
    const obj = loadProbes();
    obj.attach('tst_btf_enter');
    obj.attach('tst_raw_enter');
    getppid(9);
    expect(hits(obj, HIT.tpBtf)).toBe(9);
    expect(hits(obj, HIT.rawTp)).toBe(9);
  });

  it('attaches a uprobe and a uretprobe to libc getpid in a child process', async () => {
    const obj = loadProbes();
    const child = spawn(resolve(OUT, 'uprobe_target'), ['7'], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      await until('the target to start', () => out.includes('waiting'));
      const libc = readFileSync(`/proc/${child.pid}/maps`, 'utf8')
        .split('\n')
        .map((l) => l.split(/\s+/)[5])
        .find((p) => /\/libc\.so\.6$/.test(p ?? ''));
      expect(libc).toBeDefined();
      obj.attach('tst_getpid', { binaryPath: libc!, funcName: 'getpid', pid: child.pid });
      obj.attach('tst_getpid_ret', { binaryPath: libc!, funcName: 'getpid', retprobe: true, pid: child.pid });
      child.stdin.end('go\n');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      expect(out).toContain('done');
      expect(hits(obj, HIT.uprobe)).toBe(7);
      expect(obj.map('kv').lookup(u32(1))).toEqual(u64(child.pid!));
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('close() leaves no link and no program behind, and is idempotent', async () => {
    expect(testProgIds()).toEqual([]);
    const obj = loadProbes();
    obj.attach('tst_getppid');
    obj.attach('tst_btf_enter');
    const link = obj.attach('tst_raw_enter');
    obj.ringBuffer('events', () => {});
    const ids = testProgIds();
    expect(ids).toHaveLength(5);
    expect(linksOf(ids)).toHaveLength(3);
    link.destroy();
    link.destroy();
    expect(linksOf(ids)).toHaveLength(2);
    obj.close();
    obj.close();
    expect(linksOf(ids)).toEqual([]);
    expect(() => obj.load()).toThrow(/closed/);
    // the kernel frees a program detached from a perf event a little later
    await until('the kernel to free our programs', () => testProgIds().length === 0);
  });

  it('leaves nothing attached when the process that attached dies', async () => {
    expect(testProgIds()).toEqual([]);
    const script = `
      const a = require(${JSON.stringify(ADDON_PATH)});
      const o = a.open(${JSON.stringify(PROBES)});
      a.setMaxEntries(o, 'scratch', ${cpus});
      a.load(o);
      a.attach(o, 'tst_getppid');
      a.attach(o, 'tst_btf_enter');
      console.log('attached');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      await until('the child to attach', () => out.includes('attached'));
      const ids = testProgIds();
      expect(linksOf(ids)).toHaveLength(2);
      child.kill('SIGKILL');
      await once(child, 'exit');
      await until('the kernel to drop links and programs', () => linksOf(ids).length === 0 && testProgIds().length === 0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a load failure says what failed, with the verifier log', () => {
    const obj = BpfObject.open(resolve(OUT, 'bad.bpf.o'));
    objects.push(obj);
    let error: (Error & { code?: string; errno?: number }) | undefined;
    try {
      obj.load();
    } catch (err) {
      error = err as Error;
    }
    expect(error?.code).toBe('EACCES');
    expect(error?.errno).toBe(13);
    expect(error?.message).toMatch(/^bpf_object__load failed: EACCES \(Permission denied\)\n/);
    expect(error?.message).toMatch(/invalid mem access 'map_value_or_null'/);
  });

  it('an object that cannot be opened says so', () => {
    expect(() => BpfObject.open(resolve(OUT, 'missing.bpf.o'))).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: expect.stringMatching(/^bpf_object__open_file failed: ENOENT/) }),
    );
  });

  it('a uprobe on a missing function says which', () => {
    const obj = loadProbes();
    expect(() => obj.attach('tst_getpid', { binaryPath: '/bin/true', funcName: 'no_such_function_here' })).toThrow(
      /^attaching 'tst_getpid' to \/bin\/true:no_such_function_here failed: ENOENT/,
    );
  });
});
