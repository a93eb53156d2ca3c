import { CaptureRecord, DIR_EGRESS, IPPROTO_TCP, IPPROTO_UDP, F_COUNTERPART, F_NO_CONN, F_NO_PEER, F_SEQ, F_STREAM_START, F_TLS, L7_DIAMETER, L7_WEBSOCKET } from '../capture/record.js';
import type { AppProto, Endpoint, Message, ReceiverCopy, Transport } from './message.js';
import { SipFramer } from './sip-framer.js';
import { isKeepAlive, type HeaderLines } from '../protocols/sip.js';
import { DiameterFramer } from './diameter-framer.js';
import { WebSocketFramer, type WebSocketStats } from './websocket-framer.js';
import type { FramerStats, StreamFramer } from './framer.js';
import { flowKey, SentBytes, type SentFlow } from './sent-bytes.js';
import { LruList } from './lru-list.js';
import { isLoopback, isWildcard } from '../net/address.js';

/** A stream that has been silent this long is forgotten (its partial message with it). */
const STREAM_IDLE_NS = 120_000_000_000n;
const MAX_STREAMS = 65536;
/** How often (in records) idle streams are looked for, and the partial messages' bytes summed. */
const EXPIRE_EVERY = 4096;
/** Bytes held for partial messages, all streams together, at most (README "Memory and overload"): past it the least recently used streams are forgotten. */
const MAX_BUFFER_BYTES = 32 << 20;
/** Addresses, and ports per address, whose Endpoint objects are kept (cleared when full). */
const MAX_ENDPOINT_ADDRESSES = 4096;

interface StreamState {
  key: string;
  framer: StreamFramer;
  proto: AppProto;
  /** Set for SIP over WebSocket, whose transport is ws or wss rather than tcp or tls. */
  websocket: boolean;
  lastNs: bigint;
  /**
   * A local TCP connection's flow (src/stream/sent-bytes.ts), named on its first record that needs it, and
   * the ports it was named with: a socket address reused by a connection whose first record was shed
   * (no F_STREAM_START) has other ports, and its flow is named again.
   */
  flow?: string;
  flowPorts: number;
  older?: StreamState;
  newer?: StreamState;
}

/**
 * A TLS connection's plaintext is its own stream: the socket may not be known yet. A key is reused by
 * a later connection once this one is closed (the kernel hands out the same struct sock, the library
 * the same connection object): the kernel flags each connection's first record (F_STREAM_START).
 */
function streamKey(rec: CaptureRecord): string {
  const tls = (rec.flags & F_TLS) !== 0;
  const id = tls ? rec.tlsId : rec.sockId;
  let known = keyText.get(id);
  if (!known || known.tls !== tls || (tls && known.pid !== rec.pid)) {
    if (keyText.size >= MAX_STREAMS) keyText.clear();
    const key = (direction: number) => (tls ? `tls:${rec.pid}:${id}:${direction}` : `${id}:${direction}`);
    known = { tls, pid: rec.pid, byDirection: [key(0), key(1)] };
    keyText.set(id, known);
  }
  return known.byDirection[rec.direction];
}

/** localTcp()'s answer for a read paired with the sender's messages: nothing to frame. */
const PAIRED = Buffer.alloc(0);

/** The key text of each socket (or TLS connection) id, by direction: made once, not per record (a number's digits and a string each). */
const keyText = new Map<bigint, { tls: boolean; pid: number; byDirection: string[] }>();

/**
 * Turns records into messages: a UDP record is one datagram (a local datagram's header-only receiver's
 * copy is no message: it is handed on as a ReceiverCopy); TCP (and SCTP) records are
 * reassembled per socket and direction, TLS plaintext per TLS connection and direction, then framed. A
 * local TCP connection's header-only read (the kernel sent its bytes in the sender's records) that holds
 * whole sender's messages, found by sequence number, hands on a ReceiverCopy for each; any other is framed
 * from the bytes the sender's records carried (src/stream/sent-bytes.ts).
 * Keep-alives (CR/LF only) are messages with `keepAlive` set: the agent pairs their two local copies and counts them.
 */
export class StreamAssembler {
  private readonly streams = new Map<string, StreamState>();
  /** The streams in order of last record: expire() and boundBuffers() forget the least recently used first. */
  private readonly byUse = new LruList<StreamState>();
  private readonly endpoints = new Map<string, Map<number, Endpoint>>();
  private readonly sent = new SentBytes();
  private readonly framerStats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
  private readonly diameterStats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
  private readonly diameterMalformed = { malformed: 0 };
  private readonly websocketStats: WebSocketStats = { handshakes: 0, rejectedHandshakes: 0, resyncs: 0, controlFrames: 0, notSip: 0 };
  private expired = 0;
  /** Streams forgotten, with their partial messages, to bring the bytes held under MAX_BUFFER_BYTES. */
  private evictedForMemory = 0;
  private sinceExpire = 0;
  /** The record being assembled: the framer's sink reads its metadata. */
  private current!: CaptureRecord;
  /** The current record's ends and thread name, made for its first message: a read of a local connection often carries several. */
  private currentLocal?: Endpoint;
  private currentRemote?: Endpoint;
  private currentComm?: string;
  private currentTransport: Transport = 'tcp';
  private currentProto: AppProto = 'sip';
  /** A local TCP sender's record: its flow, where its messages are listed, and the sequence number after its last byte. */
  private sending?: SentFlow;
  private sendingEnd = 0;

  /** The one ReceiverCopy, rewritten for each header-only receiver's copy. */
  private readonly receiverCopy: ReceiverCopy = {
    tsNs: 0n, transport: 'udp', direction: 'ingress', src: { ip: '', port: 0 }, dst: { ip: '', port: 0 }, size: 0, msgHash: 0, cgroupId: 0n, pid: 0, netns: 0, sent: undefined,
  };

  /** Header-only receiver's copies of local datagrams go to onReceiverCopy (none without it), not through framing. */
  constructor(
    private readonly onMessage: (m: Message) => void,
    private readonly onReceiverCopy: (c: ReceiverCopy) => void = () => {},
    private readonly maxBufferBytes = MAX_BUFFER_BYTES,
  ) {}

  push(rec: CaptureRecord): void {
    this.current = rec;
    this.currentLocal = this.currentRemote = this.currentComm = undefined;
    this.sending = undefined;
    if (++this.sinceExpire === EXPIRE_EVERY) {
      this.sinceExpire = 0;
      this.expire(rec.tsNs);
      this.boundBuffers();
    }
    if (rec.ipProto === IPPROTO_UDP) {
      if (rec.flags & F_COUNTERPART) return this.handOnReceiverCopy(rec);
      this.currentTransport = 'udp';
      this.currentProto = 'sip';
      this.emit(rec.data, rec.origLen, rec.truncated, rec.dataLen === 0 || isKeepAlive(rec.data), undefined, 0);
      return;
    }
    const tls = (rec.flags & F_TLS) !== 0;
    this.currentTransport = tls ? 'tls' : rec.ipProto === IPPROTO_TCP ? 'tcp' : 'sctp';
    const key = streamKey(rec);
    let stream = this.streams.get(key);
    // A new connection on the socket address (or TLS object) of a closed one: the old stream is done,
    // and its framing (SIP, Diameter, WebSocket state) says nothing about the new connection's bytes.
    if (stream && rec.flags & F_STREAM_START) {
      this.remove(stream);
      this.expired++;
      stream = undefined;
    }
    let flow: string | undefined;
    const ports = (rec.localPort << 16) | rec.remotePort;
    if (!tls && rec.ipProto === IPPROTO_TCP && rec.flags & (F_SEQ | F_STREAM_START)) {
      flow = stream?.flow !== undefined && stream.flowPorts === ports ? stream.flow : flowKey(rec);
    }
    const existed = stream !== undefined;
    if (!stream) {
      if (this.streams.size >= MAX_STREAMS) this.expire(rec.tsNs, true);
      // The kernel's inference decides once per connection which framing applies.
      const sink = (p: Buffer, size: number, cut: boolean, headerLines: HeaderLines | undefined, after: number) => this.emit(p, size, cut, false, headerLines, after);
      const keepAlive = (run: Buffer, after: number) => this.emit(run, run.length, false, true, undefined, after);
      const framer =
        rec.l7 === L7_DIAMETER
          ? new DiameterFramer(this.diameterStats, this.diameterMalformed, sink)
          : rec.l7 === L7_WEBSOCKET
            ? new WebSocketFramer(this.framerStats, this.websocketStats, sink, keepAlive)
            : new SipFramer(this.framerStats, sink, keepAlive);
      stream = {
        key, framer, proto: rec.l7 === L7_DIAMETER ? 'diameter' : 'sip', websocket: rec.l7 === L7_WEBSOCKET, lastNs: rec.tsNs, flow, flowPorts: ports,
        older: undefined, newer: undefined, // declared here: linking it adds no property to the object
      };
      this.streams.set(key, stream);
    } else if (flow !== undefined) {
      stream.flow = flow;
      stream.flowPorts = ports;
    }
    this.byUse.touch(stream);
    stream.lastNs = rec.tsNs;
    this.currentProto = stream.proto;
    if (stream.websocket) this.currentTransport = tls ? 'wss' : 'ws';
    const data = flow === undefined ? rec.data : this.localTcp(rec, flow, stream);
    if (data === null) {
      // Its stream cannot continue.
      this.remove(stream);
      if (existed) this.expired++;
      return;
    }
    if (data !== PAIRED) stream.framer.push(data, rec.origLen - data.length);
  }

  /**
   * A local TCP connection's bytes cross the ring buffer once (bpf/local_copies.bpf.h): a sender's are kept
   * for the receiver, with the messages its stream frames from them; a receiver's header-only read is
   * paired with those messages, or takes the bytes. The bytes to frame, PAIRED when there are none, or null
   * when they were not kept.
   */
  private localTcp(rec: CaptureRecord, flow: string, stream: StreamState): Buffer | null {
    const headerOnly = (rec.flags & F_COUNTERPART) !== 0;
    if (rec.direction === DIR_EGRESS) {
      if (rec.flags & F_SEQ) {
        const kept = this.sent.keep(flow, rec.msgHash, rec.data, (rec.flags & F_STREAM_START) !== 0);
        // A WebSocket message's size is its payload's, not its frames': its reads are framed.
        this.sending = stream.websocket ? undefined : kept;
        this.sendingEnd = (rec.msgHash + rec.data.length) >>> 0;
      } else this.sent.forget(flow); // a new connection: what its flow held was another's
      return rec.data;
    }
    if (!(rec.flags & F_SEQ)) return rec.data;
    // Between two messages, this stream would frame from these bytes what the sender's stream framed.
    if (headerOnly && stream.framer.atBoundary) {
      this.receiverCopyOf(rec, this.currentTransport).msgHash = 0;
      if (this.sent.read(flow, rec.msgHash, rec.origLen, this.handOnSent)) return PAIRED;
    }
    const kept = this.sent.take(flow, rec.msgHash, rec.origLen, headerOnly);
    if (!headerOnly) return rec.data;
    return kept ?? null;
  }

  /** The current header-only read completed the sender's message `m`: its ReceiverCopy goes on, and it is counted as framed here too. */
  private readonly handOnSent = (m: Message): void => {
    if (!m.keepAlive) (this.currentProto === 'diameter' ? this.diameterStats : this.framerStats).messages++;
    const c = this.receiverCopy;
    c.size = m.size;
    c.sent = m;
    this.onReceiverCopy(c);
    c.sent = undefined;
  };

  /** Forgets the stream of `rec` (its framing failed): the next bytes start afresh. */
  forget(rec: CaptureRecord): void {
    const stream = this.streams.get(streamKey(rec));
    if (!stream) return;
    this.remove(stream);
    this.expired++;
  }

  /** Forgets streams idle for STREAM_IDLE_NS (or, when full, the oldest quarter). */
  expire(nowNs: bigint, full = false): void {
    let drop = full ? this.streams.size >> 2 : 0;
    for (let s = this.byUse.oldest; s; s = this.byUse.oldest) {
      if (drop <= 0 && nowNs - s.lastNs < STREAM_IDLE_NS) break;
      this.remove(s);
      this.expired++;
      drop--;
    }
  }

  /** Forgets the least recently used streams while their partial messages hold more than MAX_BUFFER_BYTES. */
  private boundBuffers(): void {
    let over = this.bufferBytes() - this.maxBufferBytes;
    for (let s = this.byUse.oldest; s && over > 0; s = this.byUse.oldest) {
      over -= s.framer.allocated;
      this.remove(s);
      this.evictedForMemory++;
    }
  }

  private remove(stream: StreamState): void {
    this.streams.delete(stream.key);
    this.byUse.remove(stream);
  }

  /** `after`: the bytes of the record after the message's last byte (see FrameSink). */
  private emit(payload: Buffer, size: number, truncated: boolean, keepAlive: boolean, headerLines: HeaderLines | undefined, after: number): void {
    const r = this.current;
    const local = (this.currentLocal ??= this.localEndpoint(r));
    const remote = (this.currentRemote ??= this.endpoint(r.remoteAddr(), r.remotePort));
    const egress = r.direction === DIR_EGRESS;
    const m: Message = {
      tsNs: r.tsNs,
      proto: this.currentProto,
      transport: this.currentTransport,
      family: r.ipVersion,
      src: egress ? local : remote,
      dst: egress ? remote : local,
      pid: r.pid,
      tid: r.tid,
      comm: (this.currentComm ??= r.comm()),
      cgroupId: r.cgroupId,
      netns: r.netns,
      sockId: r.sockId,
      direction: egress ? 'egress' : 'ingress',
      payload,
      size,
      truncated,
      peerUnknown: (r.flags & F_NO_PEER) !== 0,
      connectionUnknown: (r.flags & F_NO_CONN) !== 0,
      msgHash: r.ipProto === IPPROTO_UDP ? r.msgHash : 0,
      keepAlive,
      headerLines,
      // Set later by attribution and dedup: declared here so that setting them adds no property to the object.
      peerCgroupId: undefined,
      peerPid: undefined,
      dedupBucket: undefined,
    };
    this.onMessage(m);
    if (this.sending) this.sent.list(this.sending, (this.sendingEnd - after) >>> 0, m);
  }

  /** A header-only receiver's copy carries no bytes: its ends, size and hash are all there is to hand on. */
  private handOnReceiverCopy(r: CaptureRecord): void {
    const c = this.receiverCopyOf(r, 'udp');
    c.size = r.origLen;
    c.msgHash = r.msgHash;
    this.onReceiverCopy(c);
  }

  /** The one ReceiverCopy, naming the receiver of header-only record `r` (its ends as its messages' would be). */
  private receiverCopyOf(r: CaptureRecord, transport: Transport): ReceiverCopy {
    const c = this.receiverCopy;
    c.tsNs = r.tsNs;
    c.transport = transport;
    c.src = this.currentRemote ??= this.endpoint(r.remoteAddr(), r.remotePort);
    c.dst = this.currentLocal ??= this.localEndpoint(r);
    c.cgroupId = r.cgroupId;
    c.pid = r.pid;
    c.netns = r.netns;
    return c;
  }

  /**
   * A UDP socket bound to the wildcard address reports 0.0.0.0 / :: as its own address. Towards a
   * loopback peer the kernel sends from 127.0.0.1 / ::1 (the source of the local route), so that is
   * named: exact for what it sends, the likely address for what it receives. Towards any other peer
   * the wildcard is kept (the source depends on routing). LocalDedup treats a wildcard as matching
   * any address, and loopback addresses as matching each other, so either choice pairs both copies.
   */
  private localEndpoint(r: CaptureRecord): Endpoint {
    const ip = r.localAddr();
    if (isWildcard(ip)) {
      const remote = r.remoteAddr();
      if (isLoopback(remote)) return this.endpoint(remote === '::1' ? '::1' : '127.0.0.1', r.localPort);
    }
    return this.endpoint(ip, r.localPort);
  }

  /**
   * The one Endpoint object of an address and port: every message has two, and a host talks among few
   * (40 bytes each, about 7% of the heap a SIP/UDP message allocated). Endpoints are never changed.
   */
  private endpoint(ip: string, port: number): Endpoint {
    let byPort = this.endpoints.get(ip);
    if (!byPort) {
      if (this.endpoints.size >= MAX_ENDPOINT_ADDRESSES) this.endpoints.clear();
      this.endpoints.set(ip, (byPort = new Map()));
    }
    let e = byPort.get(port);
    if (!e) {
      if (byPort.size >= MAX_ENDPOINT_ADDRESSES) byPort.clear();
      byPort.set(port, (e = { ip, port }));
    }
    return e;
  }

  stats() {
    return {
      ...this.framerStats,
      diameter: { ...this.diameterStats, ...this.diameterMalformed },
      websocket: { ...this.websocketStats },
      streams: this.streams.size, expiredStreams: this.expired, evictedForMemory: this.evictedForMemory, streamBufferBytes: this.bufferBytes(),
      localTcp: this.sent.stats() };
  }

  /** Memory the streams hold for partial messages (read with the stats, not per record). */
  private bufferBytes(): number {
    let bytes = 0;
    for (const s of this.streams.values()) bytes += s.framer.allocated;
    return bytes;
  }
}
