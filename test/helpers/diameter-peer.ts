/**
 * A small Diameter peer over TCP for application messages that the npm `diameter` package cannot
 * build: its dictionary has no Rx (16777236) or Cx (16777216) application and no 3GPP
 * AF-Charging-Identifier or SIP-Auth-Data-Item AVPs. Messages are built with test/helpers/diameter.ts.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { diameterMessage, TGPP, type AvpSpec } from './diameter.js';

export const APP = { ro: 4, cx: 16777216, rx: 16777236, gx: 16777238 } as const;

export interface Parsed {
  request: boolean;
  command: number;
  app: number;
  hopByHop: number;
  endToEnd: number;
  sessionId?: string;
  bytes: Buffer;
}

function parse(bytes: Buffer): Parsed {
  const p: Parsed = {
    request: (bytes[4] & 0x80) !== 0,
    command: bytes.readUIntBE(5, 3),
    app: bytes.readUInt32BE(8),
    hopByHop: bytes.readUInt32BE(12),
    endToEnd: bytes.readUInt32BE(16),
    bytes,
  };
  for (let o = 20; o + 8 <= bytes.length; ) {
    const len = bytes.readUIntBE(o + 5, 3);
    if (bytes.readUInt32BE(o) === 263) p.sessionId = bytes.toString('utf8', o + 8, o + len);
    o += (len + 3) & ~3;
  }
  return p;
}

/** Splits a stream into messages by the 24-bit length; calls back per message. */
function reader(onMessage: (m: Parsed) => void) {
  let pending = Buffer.alloc(0);
  return (d: Buffer) => {
    pending = Buffer.concat([pending, d]);
    while (pending.length >= 20) {
      const len = pending.readUIntBE(1, 3);
      if (pending.length < len) break;
      onMessage(parse(Buffer.from(pending.subarray(0, len))));
      pending = pending.subarray(len);
    }
  };
}

const identity = (host: string): AvpSpec[] => [
  { code: 264, value: host },
  { code: 296, value: 'test' },
];

export function cer(host: string, hbh: number): Buffer {
  return diameterMessage({
    request: true,
    command: 257,
    app: 0,
    hopByHop: hbh,
    endToEnd: hbh,
    avps: [
      ...identity(host),
      { code: 257, value: Buffer.from([0, 1, 127, 0, 0, 1]) },
      { code: 266, value: 0 },
      { code: 269, value: 'hepbpf-test' },
      { code: 265, value: TGPP },
      ...Object.values(APP).map((id) => ({ code: 258, value: id })),
    ],
  });
}

/** An answer to `req` from `host`: Session-Id copied, Result-Code 2001, plus `extra`. */
export function answer(req: Parsed, host: string, extra: AvpSpec[] = []): Buffer {
  return diameterMessage({
    request: false,
    proxiable: req.command !== 257 && req.command !== 280,
    command: req.command,
    app: req.app,
    hopByHop: req.hopByHop,
    endToEnd: req.endToEnd,
    avps: [...(req.sessionId ? [{ code: 263, value: req.sessionId }] : []), { code: 268, value: 2001 }, ...identity(host), ...extra],
  });
}

/** Answers everything: CER with the applications of APP, MAR with one AKA vector (`secrets`), the rest with 2001. */
export async function startServerPeer(port: number, host: string, secrets: AvpSpec[]): Promise<{ close(): Promise<void> }> {
  const conns = new Set<Socket>();
  const server: Server = createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.on(
      'data',
      reader((m) => {
        if (!m.request) return;
        if (m.command === 257)
          sock.write(answer(m, host, [{ code: 257, value: Buffer.from([0, 1, 127, 0, 0, 1]) }, { code: 266, value: 0 }, { code: 269, value: 'hepbpf-test' }, ...Object.values(APP).map((id) => ({ code: 258, value: id }))]));
        else if (m.command === 303) sock.write(answer(m, host, [{ code: 612, vendor: TGPP, value: [{ code: 613, vendor: TGPP, value: 1 }, { code: 608, vendor: TGPP, value: 'Digest-AKAv1-MD5' }, ...secrets] }]));
        else sock.write(answer(m, host));
      }),
    );
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    close: () =>
      new Promise((r) => {
        for (const s of conns) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A client peer: CER first, then requests; resolves each with its answer. */
export async function connectClientPeer(port: number, host: string) {
  const sock = connect(port, '127.0.0.1');
  const waiting = new Map<number, (m: Parsed) => void>();
  sock.on(
    'data',
    reader((m) => {
      if (m.request && m.command === 280) sock.write(answer(m, host));
      else if (!m.request) waiting.get(m.hopByHop)?.(m);
    }),
  );
  await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
  let hbh = 0x5000;
  const request = (bytes: Buffer) =>
    new Promise<Parsed>((resolve, reject) => {
      const id = bytes.readUInt32BE(12);
      const timer = setTimeout(() => reject(new Error(`no answer to command ${bytes.readUIntBE(5, 3)}`)), 10_000);
      waiting.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      sock.write(bytes);
    });
  const cea = await request(cer(host, hbh++));
  return {
    cea,
    nextHopByHop: () => hbh++,
    /** A proxiable request to `destination` through a relay (realm "test"): Session-Id `sid`, Origin, Destination and Auth-Application-Id, then `avps`. */
    routedRequest(command: number, app: number, sid: string, avps: AvpSpec[], destination = 'server.test'): Buffer {
      const id = hbh++;
      const route: AvpSpec[] = [...identity(host), { code: 283, value: 'test' }, { code: 293, value: destination }, { code: 258, value: app }];
      return diameterMessage({ request: true, proxiable: true, command, app, hopByHop: id, endToEnd: id, avps: [{ code: 263, value: sid }, ...route, ...avps] });
    },
    request,
    write: (b: Buffer) => new Promise<void>((r) => sock.write(b, () => r())),
    close: () => sock.destroy(),
  };
}
