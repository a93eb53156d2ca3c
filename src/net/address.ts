/** Socket address families (linux/socket.h), as records and HEP chunks carry them. */
export const AF_INET = 2;
export const AF_INET6 = 10;

/** 127.0.0.0/8 or ::1. By its characters: startsWith() was a builtin call, four or five a message. */
export const isLoopback = (ip: string) =>
  (ip.charCodeAt(0) === 0x31 && ip.charCodeAt(1) === 0x32 && ip.charCodeAt(2) === 0x37 && ip.charCodeAt(3) === 0x2e) || ip === '::1';

/** The address of a socket bound to any: 0.0.0.0 or ::. */
export const isWildcard = (ip: string) => ip === '0.0.0.0' || ip === '::';

/** IPv4 dotted quad, or IPv6 in RFC 5952 form (longest zero run compressed). */
export function formatAddr(buf: Buffer, off: number, family: number): string {
  if (family === AF_INET) return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(off + i * 2));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
