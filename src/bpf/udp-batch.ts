/**
 * Batched UDP sends from the same addon as the libbpf binding (native/libbpf_addon.c, "batched UDP
 * sends"): a connected, non-blocking UDP socket whose queued datagrams leave with sendmmsg(), one
 * syscall for up to 1024 datagrams instead of one each.
 */
import { createRequire } from 'node:module';
import { ADDON_PATH } from './libbpf.js';

interface UdpAddon {
  udpConnect(ip: string, port: number): object;
  udpSend(sock: object, packets: Buffer, lengths: Uint32Array, count: number, result: Uint32Array): void;
  udpClose(sock: object): void;
}

// Node caches the addon by path: this is the instance libbpf.ts loads.
let addon: UdpAddon | undefined;
const native = (): UdpAddon => (addon ??= createRequire(import.meta.url)(ADDON_PATH) as UdpAddon);

/** Datagrams the kernel takes in one sendmmsg() call (UIO_MAXIOV); send() makes as many calls as it needs. */
export const SENDMMSG_MAX = 1024;

export interface UdpBatchResult {
  /** Datagrams the kernel accepted. */
  sent: number;
  /** Datagrams that got a send error (e.g. ECONNREFUSED after the ICMP of a closed port); the rest was still tried. */
  failed: number;
  /** Datagrams not tried because the socket buffer was full (EAGAIN, ENOBUFS). */
  unsent: number;
  /** errno of the last failure, 0 if none. */
  errno: number;
}

export class UdpBatchSocket {
  private handle?: object;
  private readonly result = new Uint32Array(4);

  /** `ip` is a numeric IPv4 or IPv6 address. Throws (with `code`, e.g. 'ENETUNREACH') when the socket cannot be connected. */
  constructor(ip: string, port: number) {
    this.handle = native().udpConnect(ip, port);
  }

  /** Sends `count` datagrams laid end to end in `packets`, `lengths[i]` bytes each, in order; never blocks. */
  send(packets: Buffer, lengths: Uint32Array, count: number): UdpBatchResult {
    if (!this.handle) throw new Error('UdpBatchSocket is closed');
    native().udpSend(this.handle, packets, lengths, count, this.result);
    const [sent, failed, unsent, errno] = this.result;
    return { sent, failed, unsent, errno };
  }

  /** Idempotent. */
  close(): void {
    if (this.handle) native().udpClose(this.handle);
    this.handle = undefined;
  }
}
