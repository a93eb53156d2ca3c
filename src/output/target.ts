export interface HepTarget {
  transport: 'udp' | 'tcp';
  host: string;
  port: number;
  url: string;
}

/** `udp://127.0.0.1:9060`, `tcp://[::1]:9061` -> target; a clear error for anything else. */
export function parseHepTarget(url: string): HepTarget {
  const m = /^(udp|tcp):\/\/(\[[0-9a-fA-F:.]+\]|[^:/\s\]]+):(\d{1,5})\/?$/.exec(url);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new Error(`bad HEP collector "${url}": expected udp://HOST:PORT or tcp://HOST:PORT (IPv6 as [::1])`);
  return { transport: m[1] as HepTarget['transport'], host: m[2].replace(/^\[|\]$/g, ''), port, url };
}
