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

/** A peer broke the protocol (bad length or undecodable message): the connection is closed, nothing else is affected. */
export class ControlProtocolError extends Error {}

// A length prefix is a varint of at most 5 bytes (32 bits); longer is garbage, not a message.
const MAX_PREFIX_BYTES = 5;

/**
 * Splits a byte stream into length-delimited messages of one type, each at most `maxBytes` long.
 * Chunks are kept as they arrive and joined once when the announced message is complete, so a
 * message arriving in many small chunks costs linear time, and a peer announcing more than
 * `maxBytes` is refused before anything is buffered. Throws ControlProtocolError, never anything else.
 */
class DelimitedReader<T> {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes needed before parsing again is worth it (the current message's prefix and body). */
  private wanted = 1;

  constructor(
    private readonly type: protobuf.Type,
    private readonly maxBytes: number,
  ) {}

  push(chunk: Buffer, onMessage: (msg: T) => void): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered < this.wanted) return;
    const buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    let pos = 0;
    this.wanted = 1;
    while (pos < buf.length) {
      let length = 0;
      let prefix = 0;
      for (; pos + prefix < buf.length; prefix++) {
        if (prefix === MAX_PREFIX_BYTES) throw new ControlProtocolError('length prefix longer than 5 bytes');
        const b = buf[pos + prefix];
        length += (b & 0x7f) * 2 ** (7 * prefix);
        if (b < 0x80) break;
      }
      if (pos + prefix === buf.length) {
        this.wanted = prefix + 1; // the prefix is not complete yet
        break;
      }
      prefix++;
      if (length > this.maxBytes) throw new ControlProtocolError(`message of ${length} bytes announced, at most ${this.maxBytes} accepted`);
      if (pos + prefix + length > buf.length) {
        this.wanted = prefix + length;
        break;
      }
      const body = buf.subarray(pos + prefix, pos + prefix + length);
      pos += prefix + length;
      let msg: T;
      try {
        msg = this.type.toObject(this.type.decode(body), { defaults: true, longs: Number }) as T;
      } catch (err) {
        throw new ControlProtocolError(`undecodable ${this.type.name}: ${(err as Error).message}`);
      }
      onMessage(msg);
    }
    const rest = buf.subarray(pos);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
  }
}

/** Requests are one small integer: anything longer than this is not a request. */
export const MAX_REQUEST_BYTES = 4096;
// An event carries at most a 64 KiB payload plus its headers and names.
const MAX_EVENT_BYTES = 1024 * 1024;
// A list of every container seen: generous, still bounded.
const MAX_CONTAINER_LIST_BYTES = 64 * 1024 * 1024;

export class TailEventReader extends DelimitedReader<TailEventFields> {
  constructor() {
    super(TailEvent, MAX_EVENT_BYTES);
  }
}

export class ControlRequestReader extends DelimitedReader<{ kind: number }> {
  constructor() {
    super(ControlRequest, MAX_REQUEST_BYTES);
  }
}

export class ContainerListReader extends DelimitedReader<{ containers: ContainerSeenWire[] }> {
  constructor() {
    super(ContainerList, MAX_CONTAINER_LIST_BYTES);
  }
}
