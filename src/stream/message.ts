import type { HeaderLines } from '../protocols/sip.js';

export interface Endpoint {
  ip: string;
  port: number;
}

/** ws and wss: SIP over WebSocket (RFC 7118) on TCP and on TLS. */
export const TRANSPORTS = ['udp', 'tcp', 'tls', 'sctp', 'ws', 'wss'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/**
 * Where `t` is in TRANSPORTS: per-transport tables are arrays read at this index. An object read by
 * transport name made each of its read sites megamorphic (a generic keyed load per message).
 */
export function transportIndex(t: Transport): number {
  switch (t) {
    case 'udp':
      return 0;
    case 'tcp':
      return 1;
    case 'tls':
      return 2;
    case 'sctp':
      return 3;
    case 'ws':
      return 4;
    default:
      return 5;
  }
}
export type AppProto = 'sip' | 'diameter';

/**
 * One framed application message with its addresses, as seen by one process.
 * `payload` is a view that is valid only during the callback that receives the message: sinks
 * encode or copy it synchronously (the hot path copies nothing it does not have to).
 */
export interface Message {
  tsNs: bigint;
  proto: AppProto;
  transport: Transport;
  family: 4 | 6;
  src: Endpoint;
  dst: Endpoint;
  pid: number;
  tid: number;
  comm: string;
  cgroupId: bigint;
  /** Network namespace (inode) of the socket: a loopback address means something only within it. 0: unknown. */
  netns: number;
  sockId: bigint;
  direction: 'egress' | 'ingress';
  payload: Buffer;
  /** Bytes the message had on the wire; larger than payload.length when truncated. */
  size: number;
  truncated: boolean;
  /** The syscall did not say who the peer was (recv on an unconnected UDP socket): its side of src/dst is 0.0.0.0:0. */
  peerUnknown: boolean;
  /** The cgroup (and a pid in it) of the other end when it is on this host: set by LocalDedup or src/enrich/attribution.ts. */
  peerCgroupId?: bigint;
  peerPid?: number;
  /** UDP: the kernel's hash of the first payload bytes, the same in both copies of a local datagram (0: none). */
  msgHash?: number;
  /** Keep-alive CR/LF bytes (RFC 5626), not a message: paired like one, counted, never forwarded. */
  keepAlive?: boolean;
  /** SIP on a stream: the line feeds of its header as its framer found them, for parseSip (valid as long as payload). */
  headerLines?: HeaderLines;
  /** TLS plaintext whose socket could not be determined: src and dst are 0.0.0.0:0, not guessed. */
  connectionUnknown: boolean;
  /**
   * Set by LocalDedup.accept: the bucket the message waits in for its other side's copy (an object: a
   * number key would be a field of doubles, boxed in every Message).
   */
  dedupBucket?: object;
}

/**
 * The receiver's copy of a local datagram whose sender's copy was captured: the kernel sent its header
 * only (bpf/local_copies.bpf.h). It is no message: it names the receiver of the sender's copy, which
 * LocalDedup pairs it with by the kernel's hash, and is never forwarded. A local TCP connection's
 * header-only read that holds whole sender's messages hands one on for each, the message found by
 * sequence number (`sent`, src/stream/sent-bytes.ts). The assembler rewrites one object per copy: valid
 * only during the callback that receives it.
 */
export interface ReceiverCopy {
  tsNs: bigint;
  transport: Transport;
  readonly direction: 'ingress';
  src: Endpoint;
  dst: Endpoint;
  /** Bytes the message had (the sender's copy's size). */
  size: number;
  /** UDP: the kernel's hash of the datagram's first bytes. */
  msgHash: number;
  cgroupId: bigint;
  pid: number;
  netns: number;
  /** TCP: the sender's message this read completed. */
  sent?: Message;
}
