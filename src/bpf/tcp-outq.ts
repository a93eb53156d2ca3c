/** SIOCOUTQ from the addon (native/libbpf_addon.c, tcpOutq): what a TCP peer has not acknowledged yet. */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { ADDON_PATH } from './libbpf.js';

let addon: { tcpOutq(fd: number): number } | undefined;
const native = () => (addon ??= createRequire(import.meta.url)(ADDON_PATH) as { tcpOutq(fd: number): number });

/**
 * Bytes written to `sock` that its peer's TCP has not acknowledged, or undefined once the socket
 * has no descriptor (closed: its number may already belong to another file).
 */
export function tcpUnacked(sock: Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (fd === undefined || fd < 0 || sock.destroyed) return undefined;
  const n = native().tcpOutq(fd);
  return n < 0 ? undefined : n;
}
