import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { BpfObject, type RingBufferReader } from '../bpf/libbpf.js';
import { ensureTracefs } from '../bpf/tracefs.js';
import { BPF_OBJECT_PATH } from './paths.js';
import { COUNTER_NAMES, type RecordSource } from './record.js';
import { TLS_PROGRAMS, TlsProbes } from './tls-probes.js';

export interface SocketCaptureOptions {
  sipPorts?: number[];
  log: Logger;
}

/** Number of possible CPUs: the scratch map needs one slot per CPU id the kernel may run us on. */
function possibleCpus(): number {
  try {
    const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
    return Math.max(...text.split(',').map((r) => Number(r.split('-').pop()))) + 1;
  } catch {
    return availableParallelism();
  }
}

/** Ring buffer between the kernel and the agent, in MiB, unless HEPBPF_RING_BUFFER_MIB says otherwise. */
export const RING_BUFFER_MIB = 8;

/**
 * The ring buffer's size in bytes. It is resident twice over (its pages are mapped twice so that a
 * record can wrap), so it weighs in the agent's RSS at 2x; it is also what absorbs a burst or a
 * pause of the JavaScript thread before the kernel counts a loss (`ringbufFull`).
 */
export function ringBufferBytes(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.HEPBPF_RING_BUFFER_MIB;
  if (text === undefined || text === '') return RING_BUFFER_MIB << 20;
  const mib = Number(text);
  if (!Number.isInteger(mib) || mib < 1 || mib > 1024 || (mib & (mib - 1)) !== 0) throw new Error(`HEPBPF_RING_BUFFER_MIB=${text}: expected a power of two from 1 to 1024`);
  return mib << 20;
}

/**
 * The reader is woken early once 1/16 of the ring buffer is waiting, else it polls every POLL_MS and
 * hands a batch over once its first record is POLL_MS old: a record reaches JS within 2 x POLL_MS.
 * A wakeup per record (the libbpf default) cost each traced send an interrupt and an IPI.
 */
const WAKEUP_FRACTION = 16;
const POLL_MS = 10;

/** Sets the opened object's configuration and map sizes, before it loads. */
export function configure(obj: BpfObject, filterPorts: boolean): void {
  // struct hepbpf_config is the only .rodata variable: { u32 self_tgid; u32 filter_ports; u32 wakeup_bytes; }
  const ringBytes = ringBufferBytes();
  const rodata = obj.initialValue('.rodata');
  rodata.writeUInt32LE(process.pid, 0);
  rodata.writeUInt32LE(filterPorts ? 1 : 0, 4);
  rodata.writeUInt32LE(ringBytes / WAKEUP_FRACTION, 8);
  obj.setInitialValue('.rodata', rodata);
  obj.setMaxEntries('scratch', possibleCpus());
  obj.setMaxEntries('events', ringBytes);
}

/** The kernel-facing part of capture: loads bpf/hepbpf.bpf.c, configures it, attaches every probe, drains the ring buffer. */
export class SocketCapture implements RecordSource {
  private obj?: BpfObject;
  private reader?: RingBufferReader;
  private tls?: TlsProbes;
  private lastTlsStats?: ReturnType<TlsProbes['stats']>;
  /** Counters as they were when the object was closed, so the final stats line still has them. */
  private lastCounters: Record<string, number> = {};

  constructor(private readonly opts: SocketCaptureOptions) {}

  start(onBatch: (batch: Buffer) => void): void {
    ensureTracefs();
    const obj = BpfObject.open(BPF_OBJECT_PATH);
    this.obj = obj;
    try {
      configure(obj, !!this.opts.sipPorts?.length);
      obj.load();
      const ports = obj.map('sip_ports');
      for (const p of this.opts.sipPorts ?? []) {
        const key = Buffer.alloc(2);
        key.writeUInt16LE(p);
        ports.update(key, Buffer.from([1]));
      }
      for (const prog of obj.programNames()) if (!TLS_PROGRAMS.has(prog)) obj.attach(prog);
      // Reading first: processes that start while the TLS libraries are looked for are reported.
      this.reader = obj.ringBuffer('events', onBatch, { maxLatencyMs: POLL_MS });
      this.tls = new TlsProbes(obj, this.opts.log);
      this.tls.start();
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** The kernel reported that pid exec'd or mapped code: probe any TLS library it brought, or its container's. */
  processChanged(pid: number, cgroupId: bigint): void {
    this.tls?.processChanged(pid, cgroupId);
  }

  tlsStats() {
    return this.tls?.stats() ?? this.lastTlsStats;
  }

  stop(): void {
    this.lastTlsStats = this.tls?.stats();
    this.tls?.close();
    this.tls = undefined;
    if (this.reader) this.lastCounters = this.counters();
    this.reader?.stop();
    this.reader = undefined;
    this.obj?.close();
    this.obj = undefined;
  }

  /** Kernel-side counters summed over CPUs: every loss is visible here. */
  counters(): Record<string, number> {
    if (!this.obj) return this.lastCounters;
    const out: Record<string, number> = {};
    const map = this.obj.map('counters');
    COUNTER_NAMES.forEach((name, i) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(i);
      out[name] = map.lookupPerCpu(key).reduce((sum, v) => sum + Number(v.readBigUInt64LE(0)), 0);
    });
    return out;
  }
}
