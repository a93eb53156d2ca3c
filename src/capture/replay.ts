/**
 * Running the pipeline without a kernel: records built exactly as bpf/hepbpf.h lays them out (the
 * writer's side of record.ts: change both together), batched as the native reader batches them,
 * and a RecordSource that delivers such batches when told. Used by the unit tests and the bench.
 */
import { F_COUNTERPART, RECORD_HEADER_SIZE, type RecordSource } from './record.js';

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

/** An INVITE of about 800 bytes, as a SIP UA sends one; `n` makes its Call-ID and branch unique. */
function syntheticInvite(n: number): Buffer {
  const sdp =
    'v=0\r\no=- 3711 3711 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\n' +
    'a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n';
  return Buffer.from(
    `INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-${n}\r\nMax-Forwards: 70\r\n` +
      `From: <sip:alice@example.test>;tag=${n}-a\r\nTo: <sip:bob@example.test>\r\nCall-ID: ${n}@127.0.0.1\r\nCSeq: 1 INVITE\r\n` +
      `Contact: <sip:alice@127.0.0.1:5070>\r\nUser-Agent: hepbpf\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n` +
      `Content-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`,
  );
}

/**
 * SIP between two processes on this host, batched as the kernel's records reach userspace:
 * `messages` over UDP (the sender's copy whole, the receiver's header only, paired by msg_hash) and
 * a tenth of that over TCP (two messages per write, read in three pieces).
 */
export function syntheticSipBatches(messages: number, recordsPerBatch = 64): Buffer[] {
  const records: Buffer[] = [];
  let tsNs = 1_000_000_000n;
  const both = (spec: Omit<RecordSpec, 'direction' | 'localPort' | 'remotePort'>, ports: [number, number], reads: Buffer[], receiver: Partial<RecordSpec> = {}) => {
    records.push(encodeRecord({ ...spec, tsNs: (tsNs += 10_000n), direction: 0, localPort: ports[0], remotePort: ports[1], sockId: BigInt(ports[0]) }));
    for (const data of reads)
      records.push(encodeRecord({ ...spec, ...receiver, data, tsNs: (tsNs += 10_000n), direction: 1, localPort: ports[1], remotePort: ports[0], sockId: BigInt(ports[1]) }));
  };
  for (let i = 0; i < messages; i++) {
    const data = syntheticInvite(i);
    both({ ipProto: 17, source: 3, data, msgHash: i + 1 }, [5070, 5060], [Buffer.alloc(0)], { flags: F_COUNTERPART, origLen: data.length, source: 8 });
  }
  for (let i = 0; i < messages / 10; i += 2) {
    const write = Buffer.concat([syntheticInvite(messages + i), syntheticInvite(messages + i + 1)]);
    const third = Math.floor(write.length / 3);
    both({ ipProto: 6, source: 1, data: write }, [40000, 5060], [write.subarray(0, third), write.subarray(third, 2 * third), write.subarray(2 * third)], { source: 6 });
  }
  const batches: Buffer[] = [];
  for (let i = 0; i < records.length; i += recordsPerBatch) batches.push(batchOf(records.slice(i, i + recordsPerBatch)));
  return batches;
}
