import protobuf from 'protobufjs';
import type { TailRecord } from './tail-record.js';

/** Where a running agent serves `hepbpf tail` clients. The directory is root-only (0700), the socket 0600. */
export const CONTROL_SOCKET_PATH = process.env.HEPBPF_SOCKET ?? '/run/hepbpf/hepbpf.sock';

// The wire format on the control socket, length-delimited: the client sends one ControlRequest;
// for TAIL the agent then streams TailEvents, for CONTAINERS it answers one ContainerList and closes.
// Defined in code so the built agent needs no .proto file at run time.
const root = protobuf.Root.fromJSON({
  nested: {
    Endpoint: { fields: { ip: { type: 'string', id: 1 }, port: { type: 'uint32', id: 2 } } },
    Container: {
      fields: {
        id: { type: 'string', id: 1 },
        name: { type: 'string', id: 2 },
        runtime: { type: 'string', id: 3 },
        image: { type: 'string', id: 4 },
        service: { type: 'string', id: 5 },
        project: { type: 'string', id: 6 },
        pod: { type: 'string', id: 7 },
        namespace: { type: 'string', id: 8 },
      },
    },
    ControlRequest: { fields: { kind: { type: 'uint32', id: 1 } } },
    ContainerSeen: {
      fields: {
        container: { type: 'Container', id: 1 },
        cgroupIds: { rule: 'repeated', type: 'string', id: 2 },
        messages: { type: 'uint64', id: 3 },
        peerMessages: { type: 'uint64', id: 4 },
      },
    },
    ContainerList: { fields: { containers: { rule: 'repeated', type: 'ContainerSeen', id: 1 } } },
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
        container: { type: 'Container', id: 17 },
        peerContainer: { type: 'Container', id: 18 },
        connectionUnknown: { type: 'bool', id: 19 },
      },
    },
  },
});
const TailEvent = root.lookupType('TailEvent');
const ControlRequest = root.lookupType('ControlRequest');
const ContainerList = root.lookupType('ContainerList');

export const REQUEST_TAIL = 0;
export const REQUEST_CONTAINERS = 1;

/** A container as it travels: the optional fields are '' when absent. */
export interface ContainerFieldsWire {
  id: string;
  name: string;
  runtime: string;
  image?: string;
  service?: string;
  project?: string;
  pod?: string;
  namespace?: string;
}

/** A tail record plus what client-side filters need; the payload always travels, `--full` decides whether it is shown. */
export interface TailEventFields extends Omit<TailRecord, 'payload' | 'container' | 'peerContainer' | 'connectionUnknown'> {
  cseqMethod?: string;
  connectionUnknown: boolean;
  payload: Uint8Array;
  container: ContainerFieldsWire | null;
  peerContainer: ContainerFieldsWire | null;
}

export interface ContainerSeenWire {
  container: ContainerFieldsWire;
  cgroupIds: string[];
  messages: number;
  peerMessages: number;
}

export function encodeTailEvent(ev: TailEventFields): Uint8Array {
  return TailEvent.encodeDelimited(TailEvent.fromObject(ev)).finish();
}

export const encodeControlRequest = (kind: number) => ControlRequest.encodeDelimited(ControlRequest.fromObject({ kind })).finish();
export const encodeContainerList = (containers: ContainerSeenWire[]) => ContainerList.encodeDelimited(ContainerList.fromObject({ containers })).finish();

/**
 * Splits a byte stream into length-delimited messages of one type; keeps a partial message until the
 * rest arrives.
 */
class DelimitedReader<T> {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly type: protobuf.Type) {}

  push(chunk: Buffer, onMessage: (msg: T) => void): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const reader = protobuf.Reader.create(this.pending);
    let consumed = 0;
    while (reader.pos < reader.len) {
      try {
        const msg = this.type.decodeDelimited(reader);
        consumed = reader.pos;
        onMessage(this.type.toObject(msg, { defaults: true, longs: Number }) as T);
      } catch (err) {
        if (err instanceof RangeError) break; // incomplete: wait for more bytes
        throw err;
      }
    }
    this.pending = this.pending.subarray(consumed);
  }
}

export class TailEventReader extends DelimitedReader<TailEventFields> {
  constructor() {
    super(TailEvent);
  }
}

export class ControlRequestReader extends DelimitedReader<{ kind: number }> {
  constructor() {
    super(ControlRequest);
  }
}

export class ContainerListReader extends DelimitedReader<{ containers: ContainerSeenWire[] }> {
  constructor() {
    super(ContainerList);
  }
}
