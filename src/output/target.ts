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
