import type { Logger } from 'pino';
import type { BpfLink, BpfObject } from '../bpf/libbpf.js';
import { hasCapability } from './privileges.js';
import { TlsDiscovery, type TlsTarget } from './tls-discovery.js';

/** Each TLS function and the programs of bpf/hepbpf.bpf.c that hook its entry and its return. */
const PROGRAMS: Record<string, { enter: string; ret: string }> = {
  SSL_write: { enter: 'tls_ssl_write', ret: 'tls_ssl_ret' },
  SSL_read: { enter: 'tls_ssl_read', ret: 'tls_ssl_ret' },
  SSL_write_ex: { enter: 'tls_ssl_write_ex', ret: 'tls_ssl_ret' },
  SSL_read_ex: { enter: 'tls_ssl_read_ex', ret: 'tls_ssl_ret' },
  gnutls_record_send: { enter: 'tls_gnutls_send', ret: 'tls_gnutls_ret' },
  gnutls_record_recv: { enter: 'tls_gnutls_recv', ret: 'tls_gnutls_ret' },
  // handshakes, for failures (bpf/conn_events.bpf.h)
  SSL_do_handshake: { enter: 'tls_ssl_do_handshake', ret: 'tls_ssl_ret' },
  SSL_connect: { enter: 'tls_ssl_connect', ret: 'tls_ssl_ret' },
  SSL_accept: { enter: 'tls_ssl_accept', ret: 'tls_ssl_ret' },
  gnutls_handshake: { enter: 'tls_gnutls_handshake', ret: 'tls_gnutls_ret' },
};

/** Programs attached per TLS library file, not by their SEC(). */
export const TLS_PROGRAMS = new Set(Object.values(PROGRAMS).flatMap((p) => [p.enter, p.ret]));

/**
 * Uprobes on every TLS library and executable in use on the host: found by TlsDiscovery, attached
 * once per file for every process (uprobes belong to the inode), kept until the BPF object closes.
 */
export class TlsProbes {
  private readonly discovery: TlsDiscovery;

  constructor(
    private readonly obj: BpfObject,
    private readonly log: Logger,
  ) {
    this.discovery = new TlsDiscovery({ selfPid: process.pid, log, attach: (t) => this.attach(t) });
  }

  /** Attaches to what every running process uses. */
  start(): void {
    if (!hasCapability('CAP_SYS_PTRACE'))
      this.log.warn('missing CAP_SYS_PTRACE: TLS libraries of other users\' processes cannot be found (no /proc/PID/maps), their TLS is not captured');
    this.discovery.scanAll();
  }

  /** The kernel saw pid exec or map code: attach to any TLS library new to us. */
  processChanged(pid: number): void {
    this.discovery.processChanged(pid);
  }

  private attach(target: TlsTarget): void {
    const links: BpfLink[] = [];
    try {
      for (const fn of target.functions) {
        const { enter, ret } = PROGRAMS[fn];
        links.push(this.obj.attach(enter, { binaryPath: target.path, funcName: fn }));
        links.push(this.obj.attach(ret, { binaryPath: target.path, funcName: fn, retprobe: true }));
      }
    } catch (err) {
      for (const l of links) l.destroy();
      throw err;
    }
  }

  /** Files checked, probed and failed. */
  stats() {
    return this.discovery.stats();
  }

  /** Stops discovery; the links go with the BPF object. */
  close(): void {
    this.discovery.close();
  }
}
