import protobuf from 'protobufjs';
import type { TailRecord } from './tail-record.js';

/** Where a running agent serves `hepbpf tail` clients. The directory is root-only (0700), the socket 0600. */
export const CONTROL_SOCKET_PATH = process.env.HEPBPF_SOCKET ?? '/run/hepbpf/hepbpf.sock';

// The wire format between a running agent and `hepbpf tail`: length-delimited TailEvent messages.
// Defined in code so the built agent needs no .proto file at run time.
const root = protobuf.Root.fromJSON({
  nested: {
    Endpoint: { fields: { ip: { type: 'string', id: 1 }, port: { type: 'uint32', id: 2 } } },
    TailEvent: {
      fields: {
        ts: { type: 'string', id: 1 },
        proto: { type: 'string', id: 2 },
        transport: { type: 'string', id: 3 },
        src: { type: 'Endpoint', id: 4 },
        dst: { type: 'Endpoint', id: 5 },
        pid: { type: 'uint32', id: 6 },
        comm: { type: 'string', id: 7 },
        cgroupId: { type: 'string', id: 8 },
        correlationId: { type: 'string', id: 9 },
        summary: { type: 'string', id: 10 },
        callId: { type: 'string', id: 11 },
        cseqMethod: { type: 'string', id: 12 },
        size: { type: 'uint32', id: 13 },
        truncated: { type: 'bool', id: 14 },
        payload: { type: 'bytes', id: 15 },
        sessionId: { type: 'string', id: 16 },
      },
    },
  },
});
const TailEvent = root.lookupType('TailEvent');

/** A tail record plus what client-side filters need; the payload always travels, `--full` decides whether it is shown. */
export interface TailEventFields extends Omit<TailRecord, 'payload' | 'container'> {
  cseqMethod?: string;
  payload: Uint8Array;
}

export function encodeTailEvent(ev: TailEventFields): Uint8Array {
  return TailEvent.encodeDelimited(TailEvent.fromObject(ev)).finish();
}

/** Splits a byte stream into TailEvents; keeps a partial message until the rest arrives. */
export class TailEventReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer, onEvent: (ev: TailEventFields) => void): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const reader = protobuf.Reader.create(this.pending);
    let consumed = 0;
    while (reader.pos < reader.len) {
      try {
        const msg = TailEvent.decodeDelimited(reader);
        consumed = reader.pos;
        onEvent(TailEvent.toObject(msg, { defaults: true }) as TailEventFields);
      } catch (err) {
        if (err instanceof RangeError) break; // incomplete: wait for more bytes
        throw err;
      }
    }
    this.pending = this.pending.subarray(consumed);
  }
}
