/**
 * Running the pipeline without a kernel: records built exactly as bpf/hepbpf.h lays them out (the
 * writer's side of record.ts: change both together), batched as the native reader batches them,
 * and a RecordSource that delivers such batches when told. Used by the unit tests and the bench.
 */
import { RECORD_HEADER_SIZE, type RecordSource } from './record.js';

export interface RecordSpec {
  tsNs?: bigint;
  cgroupId?: bigint;
  sockId?: bigint;
  tlsId?: bigint;
  pid?: number;
  direction?: 0 | 1;
  family?: 2 | 10;
  ipProto?: 6 | 17 | 132;
  l7?: number;
  source?: number;
  localAddr?: number[];
  remoteAddr?: number[];
  localPort?: number;
  remotePort?: number;
  comm?: string;
  netns?: number;
  /** msg_hash: the kernel's hash of a UDP payload's first bytes (0: none, userspace hashes the payload). */
  msgHash?: number;
  data: Buffer;
  origLen?: number;
  /** Defaults to HEPBPF_F_TRUNCATED when origLen > data length. */
  flags?: number;
  fd?: number;
}

export function encodeRecord(r: RecordSpec): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_SIZE + r.data.length);
  b.writeBigUInt64LE(r.tsNs ?? 1_000_000n, 0);
  b.writeBigUInt64LE(r.cgroupId ?? 42n, 8);
  b.writeBigUInt64LE(r.sockId ?? 0xffff888000001000n, 16);
  b.writeBigUInt64LE(r.tlsId ?? 0n, 24);
  b.writeUInt32LE(r.pid ?? 100, 32);
  b.writeUInt32LE(r.pid ?? 100, 36);
  b.writeUInt32LE(r.origLen ?? r.data.length, 40);
  b.writeUInt32LE(r.data.length, 44);
  b[48] = r.direction ?? 0;
  b[49] = r.family ?? 2;
  b[50] = r.ipProto ?? 17;
  b[51] = r.l7 ?? 1;
  b[52] = r.source ?? 3;
  b[53] = r.flags ?? ((r.origLen ?? r.data.length) > r.data.length ? 1 : 0);
  b.writeUInt16LE(r.localPort ?? 5060, 54);
  b.writeUInt16LE(r.remotePort ?? 5070, 56);
  b.writeUInt32LE(r.fd ?? 7, 60);
  Buffer.from(r.localAddr ?? [127, 0, 0, 1]).copy(b, 64);
  Buffer.from(r.remoteAddr ?? [127, 0, 0, 1]).copy(b, 80);
  b.write(r.comm ?? 'sipp', 96, 'latin1');
  b.writeUInt32LE(r.netns ?? 4026531840, 112);
  b.writeUInt32LE(r.msgHash ?? 0, 116);
  r.data.copy(b, RECORD_HEADER_SIZE);
  return b;
}

/** The native reader's batch framing: u32 size, u32 0, record, zero padding to 8. */
export function batchOf(records: Buffer[]): Buffer {
  return Buffer.concat(
    records.flatMap((rec) => {
      const head = Buffer.alloc(8);
      head.writeUInt32LE(rec.length, 0);
      return [head, rec, Buffer.alloc(((rec.length + 7) & ~7) - rec.length)];
    }),
  );
}

/** Delivers recorded batches, synchronously, as SocketCapture delivers the ring buffer's. */
export class ReplaySource implements RecordSource {
  private onBatch?: (batch: Buffer) => void;

  start(onBatch: (batch: Buffer) => void): void {
    this.onBatch = onBatch;
  }

  stop(): void {
    this.onBatch = undefined;
  }

  replay(batch: Buffer): void {
    if (!this.onBatch) throw new Error('ReplaySource: replay() before start() or after stop()');
    this.onBatch(batch);
  }

  /** No process runs behind recorded records: there is no TLS library to look for. */
  processChanged(): void {}

  counters(): Record<string, number> {
    return {};
  }

  tlsStats(): undefined {
    return undefined;
  }
}
