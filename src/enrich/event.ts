import type { Message } from '../stream/message.js';
import { sipSummary, type SipInfo } from '../protocols/sip.js';
import { diameterSummary, type DiameterInfo } from '../protocols/diameter.js';
import type { ContainerIdentity } from './containers.js';
import type { ConnectionEvent } from './connection-events.js';

/** One SIP or Diameter message (or an event of its connection), forwarded once: what every sink (HEP, tail) receives. */
export interface CaptureEvent {
  message: Message;
  /** The bytes to forward: the message's own, or a copy with secrets masked. Valid during the sink call. */
  payload: Buffer;
  sip?: SipInfo;
  /** Decoded from `payload`. */
  diameter?: DiameterInfo;
  /** A connection event, not a message: `payload` is its JSON, `message` its connection. */
  connection?: ConnectionEvent;
  /** A Diameter answer whose request was seen: milliseconds between them. */
  latencyMs?: number;
  /** What tail shows of it, when its source wrote it; else eventSummary() makes it from `sip` or `diameter`. */
  summary?: string;
  wallUs: number;
  correlationId: string;
  /** The process that sent it, where it was seen sending, else the receiver (null: a host process). Set before the sink sees it. */
  container: ContainerIdentity | null;
  /** The other end, when it is on this host too. */
  peerContainer: ContainerIdentity | null;
}

/** `INVITE sip:bob@x`, `200 OK`, `AAA 2001 (12 ms)`: made when a sink asks, as HEP never does. */
export function eventSummary(ev: CaptureEvent): string {
  return ev.summary ?? (ev.sip ? sipSummary(ev.sip) : ev.diameter ? diameterSummary(ev.diameter, ev.latencyMs) : '');
}
