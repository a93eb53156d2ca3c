export interface HepTlsOptions {
  /** PEM CA certificates the collector's certificate must chain to; default: the system's. */
  ca?: Buffer;
  /** Do not verify the collector's certificate (and name). */
  insecure?: boolean;
}

export interface HepTarget {
  transport: 'udp' | 'tcp' | 'tls';
  host: string;
  port: number;
  url: string;
  /** tls:// only. */
  tls?: HepTlsOptions;
}

/** `udp://127.0.0.1:9060`, `tcp://[::1]:9061`, `tls://homer.example:9062` -> target; a clear error for anything else. */
export function parseHepTarget(url: string, tls: HepTlsOptions = {}): HepTarget {
  const m = /^(udp|tcp|tls):\/\/(\[[0-9a-fA-F:.]+\]|[^:/\s\]]+):(\d{1,5})\/?$/.exec(url);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new Error(`bad HEP collector "${url}": expected udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (IPv6 as [::1])`);
  const transport = m[1] as HepTarget['transport'];
  return { transport, host: m[2].replace(/^\[|\]$/g, ''), port, url, ...(transport === 'tls' ? { tls } : {}) };
}

/**
 * One --hep value: a collector, or a failover group `tcp://primary:9060|tcp://backup:9060` whose
 * members are all TCP or TLS (README "Spool and failover").
 */
export function parseHepGroup(value: string, tls: HepTlsOptions = {}): HepTarget[] {
  const group = value.split('|').map((url) => parseHepTarget(url.trim(), tls));
  if (group.length > 1 && group.some((t) => t.transport === 'udp'))
    throw new Error(`bad HEP collector group "${value}": failover needs tcp:// or tls:// collectors (UDP cannot tell that a collector is gone)`);
  return group;
}
