import type { Logger } from 'pino';
import type { HepTarget } from './target.js';
import { UdpHepSender } from './hep-sender-udp.js';
import { TcpHepSender } from './hep-sender-tcp.js';

export interface SenderStats {
  /** Packets the kernel accepted. */
  sent: number;
  /** Packets given up on: queue full, collector unreachable at close, write failed. */
  dropped: number;
  /** Socket errors (each failed UDP send, each TCP connection error). */
  errors: number;
  /** Packets waiting to be written. */
  queued: number;
  queuedBytes: number;
}

export interface HepSender {
  readonly target: HepTarget;
  /** Largest packet this transport carries. */
  readonly maxPacket: number;
  /** Takes a copy of `packet`: the caller may reuse its buffer as soon as this returns. Never throws, never blocks. */
  send(packet: Buffer): void;
  /** Resolves once what was sent so far has been handed to the kernel (or counted as dropped). */
  flush(): Promise<void>;
  /** Flushes, then closes; what still cannot be written is counted as dropped. */
  close(): Promise<void>;
  stats(): SenderStats;
}

/**
 * Returns a function that runs `fn` once after the current event-loop turn however often it is
 * called in that turn: what a sender is given while the agent works through one batch of kernel
 * records leaves together, right after it.
 */
export function afterTurn(fn: () => void): () => void {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      fn();
    });
  };
}

/** udp:// one datagram per packet; tcp:// and tls:// a stream. */
export function createSender(target: HepTarget, log: Logger): HepSender {
  return target.transport === 'udp' ? new UdpHepSender(target, log) : new TcpHepSender(target, log);
}
