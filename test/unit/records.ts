/** Builds ring-buffer records and batches exactly as bpf/hepbpf.h lays them out, for tests without a kernel. */
import { RECORD_HEADER_SIZE } from '../../src/capture/record.js';

export interface RecordSpec {
  tsNs?: bigint;
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
  /** msg_hash: the kernel's hash of a UDP payload's first bytes. */
  msgHash?: number;
  data: Buffer;
  origLen?: number;
  /** Defaults to HEPBPF_F_TRUNCATED when origLen > data length. */
  flags?: number;
}

export function encodeRecord(r: RecordSpec): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_SIZE + r.data.length);
  b.writeBigUInt64LE(r.tsNs ?? 1_000_000n, 0);
  b.writeBigUInt64LE(42n, 8);
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
  b.writeUInt32LE(7, 60);
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

export const sipMessage = (callId: string, body = '', method = 'MESSAGE') =>
  Buffer.from(
    `${method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-${callId}\r\nCall-ID: ${callId}\r\nCSeq: 1 ${method}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
