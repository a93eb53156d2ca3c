import type { SpoolStats } from './spool.js';
import type { HepTarget } from './target.js';

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
  /** 1 when the collector is reachable: TCP/TLS connected; UDP the last send was not refused. */
  up: number;
  /** TCP/TLS: packets written again because the collector had not acknowledged them when its connection ended. */
  resent?: number;
  /** TCP/TLS: switches to another collector of the group; whether one is connected, and which. */
  failovers?: number;
  active?: string | null;
  spool?: SpoolStats;
}

export interface HepSender {
  readonly target: HepTarget;
  /** The --hep value it sends to: a URL, or a failover group `URL|URL...`. */
  readonly name: string;
  /** Largest packet this transport carries. */
  readonly maxPacket: number;
  /**
   * Takes a copy of the packet `packet[0..length)`: the caller may reuse its buffer as soon as this
   * returns (the forwarder encodes every packet at the start of one buffer: no view of it per packet). Never throws, never blocks.
   */
  send(packet: Buffer, length?: number): void;
  /** Resolves once what was sent so far has been handed to the kernel (or counted as dropped). */
  flush(): Promise<void>;
  /** Flushes, then closes; what still cannot be written is counted as dropped. */
  close(): Promise<void>;
  stats(): SenderStats;
}
