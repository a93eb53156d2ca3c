import type { Message } from '../stream/message.js';
import type { SipInfo } from '../protocols/sip.js';
import type { DiameterInfo } from '../protocols/diameter.js';
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
  summary: string;
  wallUs: number;
  correlationId: string;
  /** The process that sent it, where it was seen sending, else the receiver (null: a host process). Set before the sink sees it. */
  container: ContainerIdentity | null;
  /** The other end, when it is on this host too. */
  peerContainer: ContainerIdentity | null;
}
