/** HEP receivers on 127.0.0.1 that keep the raw packets; decoding is left to the test (our decoder, hep-js). */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

export interface HepCollector {
  port: number;
  url: string;
  packets: Buffer[];
  /** Resolves when `count` packets arrived, then waits `settleMs` more so extra packets would be seen too. */
  waitFor(count: number, timeoutMs?: number, settleMs?: number): Promise<Buffer[]>;
  close(): Promise<void>;
}

function waiter(packets: Buffer[]) {
  return async (count: number, timeoutMs = 20_000, settleMs = 1000) => {
    const deadline = Date.now() + timeoutMs;
    while (packets.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, settleMs));
    return packets;
  };
}

export async function udpCollector(): Promise<HepCollector> {
  const sock: UdpSocket = createSocket('udp4');
  const packets: Buffer[] = [];
  sock.on('message', (msg) => packets.push(msg));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  // Bursts of HEP must not overflow the default receive buffer on the test side.
  sock.setRecvBufferSize(32 * 1024 * 1024);
  const port = sock.address().port;
  return {
    port,
    url: `udp://127.0.0.1:${port}`,
    packets,
    waitFor: waiter(packets),
    close: () => new Promise((r) => sock.close(() => r())),
  };
}

/** HEP over TCP, or over TLS when given a certificate; on `port` (a collector coming back) or an ephemeral one. */
export async function tcpCollector(tls?: { cert: Buffer; key: Buffer }, port = 0): Promise<HepCollector> {
  const packets: Buffer[] = [];
  const conns = new Set<import('node:net').Socket>();
  const onConnection = (conn: import('node:net').Socket) => {
    conns.add(conn);
    conn.on('close', () => conns.delete(conn));
    let pending = Buffer.alloc(0);
    conn.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= 6) {
        if (pending.toString('latin1', 0, 4) !== 'HEP3') throw new Error('HEP TCP stream out of sync');
        const len = pending.readUInt16BE(4);
        if (pending.length < len) break;
        packets.push(Buffer.from(pending.subarray(0, len)));
        pending = pending.subarray(len);
      }
    });
  };
  const server: Server = tls ? createTlsServer(tls, onConnection) : createServer(onConnection);
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const bound = (server.address() as AddressInfo).port;
  return {
    port: bound,
    url: `${tls ? 'tls' : 'tcp'}://127.0.0.1:${bound}`,
    packets,
    waitFor: waiter(packets),
    close: () => {
      for (const c of conns) c.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** A port free for both UDP and TCP on 127.0.0.1 (sipp binds both). */
export async function freePort(): Promise<number> {
  for (;;) {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const port = s.address().port;
    const tcp = createServer();
    const ok = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false));
      tcp.listen(port, '127.0.0.1', () => r(true));
    });
    await new Promise<void>((r) => s.close(() => r()));
    if (ok) {
      await new Promise<void>((r) => tcp.close(() => r()));
      return port;
    }
  }
}
