/**
 * Connection events (bpf/conn_events.bpf.h): connect, accept and close of the TCP connections that
 * carry SIP or Diameter, and TLS handshakes that never completed, tied to the call. Each goes out
 * with the correlation id of the SIP or Diameter on its connection (the last message's), so Homer
 * shows it next to the call. An event whose connection has carried no correlated message yet waits
 * for one, at most HOLD_NS and for at most MAX_WAITING connections; then (a failed handshake carries
 * none) it goes out with its flow id, `tls:CLIENT-SERVER`.
 *
 * The payload is the JSON OpenSIPS's tracer sends for its transport events (proto_tcp/proto_tls
 * `trace_destination`): Protocol, Event (CONNECTED, ACCEPTED, CLOSED), Status (SUCCESS, FAILURE),
 * Message; a failed handshake is the CONNECTED or ACCEPTED event of its side with Status FAILURE.
 *
 * With selective forwarding (src/enrich/selection.ts) a connection's events go out only when it
 * carried a selected message: they wait for one as above, and go out with its id. Those of a
 * connection that carried none are left out, counted as filtered; those of a connection that carried
 * no message at all (a failed handshake) are judged by their ends (--address, --port).
 */
import {
  IPPROTO_TCP, SRC_TCP_ACCEPT, SRC_TCP_CLOSE, SRC_TCP_CONNECT, SRC_TLS_HANDSHAKE_FAILED, type CaptureRecord,
} from '../capture/record.js';
import type { MonotonicClock } from '../capture/clock.js';
import type { AppProto, Endpoint, Message } from '../stream/message.js';
import { flowId } from './correlation.js';
import type { CaptureEvent } from './event.js';
import type { Selection } from './selection.js';

export interface ConnectionEvent {
  Protocol: 'TCP' | 'TLS';
  Event: 'CONNECTED' | 'ACCEPTED' | 'CLOSED';
  Status: 'SUCCESS' | 'FAILURE';
  Message: string;
}

const HOLD_NS = 2_000_000_000n;
const MAX_WAITING = 4096;
const MAX_KNOWN = 65536;

/** What the messages of a connection told about it. */
interface Connection {
  correlationId: string;
  proto: AppProto;
  /** The process seen using it (a close can run in another task's context). */
  pid: number;
  comm: string;
  cgroupId: bigint;
  /** One of its messages was selected (always, without selective forwarding). */
  selected: boolean;
}

interface Waiting {
  sinceNs: bigint;
  events: CaptureEvent[];
  /** The connection carried messages, none of them selected: when the wait is over, its events are left out. */
  carried: boolean;
}

/** By HEPBPF_TLS_FN_*, and the side bits next to it (bpf/hepbpf.h). */
const HANDSHAKE_FUNCTIONS = ['', 'SSL_do_handshake', 'SSL_connect', 'SSL_accept', 'gnutls_handshake'];
const TLS_SIDE_CONNECTED = 0x100;
const TLS_SIDE_ACCEPTED = 0x200;
/** The GnuTLS errors a failed handshake most often returns (gnutls/gnutls.h). */
const GNUTLS_ERRORS: Record<number, string> = {
  [-12]: 'GNUTLS_E_FATAL_ALERT_RECEIVED', [-15]: 'GNUTLS_E_UNEXPECTED_PACKET', [-43]: 'GNUTLS_E_CERTIFICATE_ERROR',
  [-110]: 'GNUTLS_E_PREMATURE_TERMINATION', [-348]: 'GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR', [-54]: 'GNUTLS_E_PULL_ERROR',
};

export class ConnectionEvents {
  private readonly known = new Map<bigint, Connection>();
  private readonly waiting = new Map<bigint, Waiting>();
  /** Connections whose connect or accept event was seen: which end is the client. */
  private readonly clients = new Map<bigint, Endpoint>();
  readonly stats = { events: 0, waitedOut: 0, waitingFull: 0 };

  constructor(
    private readonly clock: MonotonicClock,
    private readonly deliver: (ev: CaptureEvent) => void,
    private readonly selection?: Selection,
  ) {}

  /** A connection event record from the kernel. */
  record(r: CaptureRecord): void {
    if (r.ipProto !== IPPROTO_TCP || !r.sockId) return;
    const local: Endpoint = { ip: r.localAddr(), port: r.localPort };
    const remote: Endpoint = { ip: r.remoteAddr(), port: r.remotePort };
    const tls = r.tlsId !== 0n;
    let tsNs = r.tsNs;
    let ev: ConnectionEvent;
    switch (r.source) {
      case SRC_TCP_CONNECT:
      case SRC_TCP_ACCEPT: {
        const accepted = r.source === SRC_TCP_ACCEPT;
        tsNs -= BigInt(r.origLen) * 1000n; // the kernel reports it once the connection carried SIP/Diameter
        this.remember(this.clients, r.sockId, accepted ? remote : local, MAX_KNOWN);
        ev = { Protocol: tls ? 'TLS' : 'TCP', Event: accepted ? 'ACCEPTED' : 'CONNECTED', Status: 'SUCCESS', Message: accepted ? 'Connection accepted' : 'Connected' };
        break;
      }
      case SRC_TCP_CLOSE:
        ev = { Protocol: tls ? 'TLS' : 'TCP', Event: 'CLOSED', Status: 'SUCCESS', Message: 'Connection closed' };
        break;
      case SRC_TLS_HANDSHAKE_FAILED: {
        const fn = HANDSHAKE_FUNCTIONS[r.fd & 0xff] ?? `function ${r.fd & 0xff}`;
        const ret = r.origLen | 0;
        const accepted = r.fd & TLS_SIDE_ACCEPTED ? true : r.fd & TLS_SIDE_CONNECTED ? false : fn === 'SSL_accept';
        if (r.fd & (TLS_SIDE_ACCEPTED | TLS_SIDE_CONNECTED)) this.remember(this.clients, r.sockId, accepted ? remote : local, MAX_KNOWN);
        const code = fn === 'gnutls_handshake' && GNUTLS_ERRORS[ret] ? ` (${GNUTLS_ERRORS[ret]})` : '';
        ev = { Protocol: 'TLS', Event: accepted ? 'ACCEPTED' : 'CONNECTED', Status: 'FAILURE', Message: `TLS handshake failed: ${fn} returned ${ret}${code}, then the connection closed` };
        break;
      }
      default:
        return;
    }
    const conn = this.known.get(r.sockId);
    const client = this.clients.get(r.sockId);
    const fromClient = !client || (client.ip === local.ip && client.port === local.port);
    const message: Message = {
      tsNs, proto: conn?.proto ?? 'sip', transport: tls ? 'tls' : 'tcp', family: r.family === 10 ? 6 : 4,
      src: fromClient ? local : remote, dst: fromClient ? remote : local,
      pid: conn?.pid ?? r.pid, tid: r.tid, comm: conn?.comm ?? r.comm(), cgroupId: conn?.cgroupId ?? r.cgroupId, netns: r.netns, sockId: r.sockId,
      direction: 'egress', payload: Buffer.alloc(0), size: 0, truncated: false, peerUnknown: false, connectionUnknown: false,
    };
    const payload = Buffer.from(JSON.stringify(ev));
    message.payload = payload;
    message.size = payload.length;
    const event: CaptureEvent = {
      message, payload, connection: ev, summary: `${ev.Protocol} ${ev.Event} ${ev.Status}: ${ev.Message}`,
      wallUs: this.clock.toWallMicros(tsNs), correlationId: conn?.correlationId ?? '', container: null, peerContainer: null,
    };
    const closed = r.source === SRC_TCP_CLOSE || r.source === SRC_TLS_HANDSHAKE_FAILED;
    if (closed) this.clients.delete(r.sockId);
    if (conn) {
      if (closed) this.known.delete(r.sockId); // the kernel reuses the socket's address
      if (conn.selected) return this.send(event);
      // Closed, nothing selected on it: nothing can select it any more.
      if (closed) return this.selection?.connectionFiltered();
    }
    const w = this.waiting.get(r.sockId);
    if (w) w.events.push(event);
    else if (this.waiting.size >= MAX_WAITING) {
      this.stats.waitingFull++;
      this.sendWithFlowId(event, !!conn);
    } else this.waiting.set(r.sockId, { sinceNs: process.hrtime.bigint(), events: [event], carried: !!conn });
  }

  /** A message on connection m.sockId was correlated, and selected or not: its events carry the id of a selected one. */
  correlated(m: Message, correlationId: string, selected: boolean): void {
    if (m.transport !== 'tcp' && m.transport !== 'tls') return;
    const prev = this.known.get(m.sockId);
    // Replaced unless a selected entry would be overwritten by an unselected one (once a message on
    // it was selected, its events keep the id of the last selected one), and only when its id or
    // selection changes.
    const overwritesSelected = prev?.selected === true && !selected;
    const unchanged = prev?.correlationId === correlationId && prev.selected === selected;
    if (!overwritesSelected && !unchanged) this.remember(this.known, m.sockId, { correlationId, proto: m.proto, pid: m.pid, comm: m.comm, cgroupId: m.cgroupId, selected }, MAX_KNOWN);
    const w = this.waiting.get(m.sockId);
    if (!w) return;
    if (!selected) {
      w.carried = true;
      return;
    }
    this.waiting.delete(m.sockId);
    for (const ev of w.events) {
      ev.correlationId = correlationId;
      Object.assign(ev.message, { proto: m.proto, pid: m.pid, comm: m.comm, cgroupId: m.cgroupId });
      this.send(ev);
    }
  }

  /** Events that waited HOLD_NS go out with their flow id (or are left out, see the header comment). */
  expire(nowNs: bigint): void {
    for (const [sock, w] of this.waiting) {
      if (nowNs - w.sinceNs < HOLD_NS) break; // insertion order is arrival order
      this.waiting.delete(sock);
      for (const ev of w.events) this.sendWithFlowId(ev, w.carried);
    }
  }

  flush(): void {
    this.expire(BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n);
  }

  /** An event that waited in vain for a selected message: `carried`, its connection carried only others. */
  private sendWithFlowId(ev: CaptureEvent, carried: boolean): void {
    if (this.selection?.active && (carried || !this.selection.selectsEnds(ev.message.src, ev.message.dst))) return this.selection.connectionFiltered();
    this.stats.waitedOut++;
    ev.correlationId = flowId(ev.message);
    this.send(ev);
  }

  private send(ev: CaptureEvent): void {
    this.stats.events++;
    this.deliver(ev);
  }

  /** Map insertion with a bound: the oldest entry goes first. */
  private remember<V>(map: Map<bigint, V>, key: bigint, value: V, max: number): void {
    map.delete(key);
    if (map.size >= max) map.delete(map.keys().next().value!);
    map.set(key, value);
  }
}
