/**
 * SIP over WebSocket (RFC 7118) on the real agent, with real peers:
 * - Kamailio's websocket module as the server, the `ws` package as the client sending REGISTER,
 *   INVITE, OPTIONS and MESSAGE (text and binary frames, pings between them), over ws:// and wss://;
 * - the `ws` package on both ends for what Kamailio does not take (it refuses fragmented messages):
 *   requests and answers fragmented, with pings between their fragments, text and binary.
 * Ground truth: for ws://, tcpdump on lo, each direction decoded by the `ws` package's own Receiver
 * (no code from src/); for wss://, Kamailio's siptrace, or what the `ws` peers received.
 * Compared message by message, byte by byte, both directions, with the addresses.
 */
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { Receiver, WebSocketServer } from 'ws';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent } from '../helpers/agent.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { startKamailioWs, type KamailioWs } from '../helpers/kamailio-ws.js';
import { startTail } from '../helpers/tail.js';
import { LoopbackCapture } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end SIP over WebSocket tests');

interface Seen {
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  payload: Buffer;
}
const key = (m: Seen) => `${m.srcIp}:${m.srcPort} -> ${m.dstIp}:${m.dstPort} ${m.payload.toString('latin1')}`;
const keys = (ms: Seen[]) => ms.map(key).sort();
const fromHep = (p: HepPacket): Seen => ({ srcIp: p.srcIp!, srcPort: p.srcPort!, dstIp: p.dstIp!, dstPort: p.dstPort!, payload: p.payload! });

/** One direction of a WebSocket connection on the wire, decoded by `ws`: the handshake is skipped, each data message kept. */
function wsMessages(stream: Buffer): Buffer[] {
  const end = stream.indexOf('\r\n\r\n');
  if (end < 0) return [];
  // The client's direction is masked: read it as a server does.
  const receiver = new Receiver({ isServer: stream.toString('latin1', 0, 4) === 'GET ', binaryType: 'nodebuffer', allowSynchronousEvents: true });
  const out: Buffer[] = [];
  receiver.on('message', (data: Buffer) => out.push(Buffer.from(data)));
  receiver.on('error', (err) => {
    throw err;
  });
  receiver.write(stream.subarray(end + 4));
  return out;
}

const sipRequest = (method: string, transport: 'WS' | 'WSS', callId: string, body = '') =>
  Buffer.from(
    `${method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/${transport} df7jal23ls0d.invalid;branch=z9hG4bK-${callId};rport\r\n` +
      `Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=t-${callId}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: ${callId}\r\n` +
      `CSeq: 1 ${method}\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n` +
      (body ? 'Content-Type: application/sdp\r\n' : '') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n' + 'a=x-pad:'.padEnd(200, 'p') + '\r\n';

/** Connects a `ws` client offering only the sip subprotocol. */
async function connect(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, 'sip', { perMessageDeflate: false, rejectUnauthorized: false });
  await Promise.race([once(ws, 'open'), once(ws, 'error').then(([e]) => Promise.reject(e))]);
  expect(ws.protocol).toBe('sip');
  return ws;
}

async function close(ws: WebSocket): Promise<void> {
  const closed = once(ws, 'close');
  ws.close(1000);
  await closed;
}

/** Sends `frames` (the parts of one message; more than one: fragments) with a ping between each two, and returns the answer. */
async function exchange(ws: WebSocket, frames: Buffer[], binary = false): Promise<Buffer> {
  const answer = once(ws, 'message');
  for (let i = 0; i < frames.length; i++) {
    if (i > 0) ws.ping('between fragments');
    ws.send(frames[i], { binary, fin: i === frames.length - 1 });
  }
  return Buffer.from((await answer)[0] as Buffer);
}

/** REGISTER and INVITE as text, OPTIONS after a ping and pong, MESSAGE as binary: each answered. */
async function kamailioTraffic(ws: WebSocket, transport: 'WS' | 'WSS'): Promise<void> {
  const id = `${transport.toLowerCase()}-${process.pid}`;
  expect((await exchange(ws, [sipRequest('REGISTER', transport, `${id}-reg`)])).toString()).toMatch(/^SIP\/2.0 200 /);
  expect((await exchange(ws, [sipRequest('INVITE', transport, `${id}-inv`, SDP)])).toString()).toMatch(/^SIP\/2.0 486 /);
  ws.ping('keep-alive');
  await once(ws, 'pong');
  expect((await exchange(ws, [sipRequest('OPTIONS', transport, `${id}-opt`)])).toString()).toMatch(/^SIP\/2.0 200 /);
  expect((await exchange(ws, [sipRequest('MESSAGE', transport, `${id}-msg`, 'hello over a binary frame')], true)).toString()).toMatch(/^SIP\/2.0 200 /);
}

interface WsStats {
  handshakes: number;
  rejectedHandshakes: number;
  resyncs: number;
  controlFrames: number;
  notSip: number;
}
interface Stats {
  forwarded: number;
  duplicates: number;
  streams: { discardedBytes: number; truncatedMessages: number; websocket: WsStats };
}

describe.skipIf(!!why)('SIP over WebSocket', () => {
  let dir: string;
  let hep: HepCollector;
  let kamailio: KamailioWs;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-websocket-'));
    hep = await udpCollector();
    kamailio = await startKamailioWs(dir);
  });

  afterAll(async () => {
    await kamailio?.stop();
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `traffic` under a fresh agent; returns what it forwarded (waiting for `expected` packets) and its final stats. */
  async function underAgent(expected: number, traffic: (env: NodeJS.ProcessEnv) => Promise<void>) {
    hep.packets.length = 0;
    const env = { ...process.env, HEPBPF_SOCKET: join(dir, 'agent.sock') };
    const agent = await startAgent(['run', '--hep', hep.url], env);
    let stopped;
    try {
      await traffic(env);
      await hep.waitFor(expected);
    } finally {
      stopped = await agent.stop();
    }
    expect(stopped.code).toBe(0);
    return { forwarded: hep.packets.map((p) => decodeHep(p)), stats: stopped.final!.capture as Stats };
  }

  it('ws:// to Kamailio: each message once, byte-exact, as the wire decoded by ws carried it', async () => {
    const capture = await LoopbackCapture.start(join(dir, 'ws.pcap'), [kamailio.wsPort]);
    let wire: Seen[] = [];
    const { forwarded, stats } = await underAgent(8, async () => {
      let stopping;
      try {
        const ws = await connect(`ws://127.0.0.1:${kamailio.wsPort}/`);
        await kamailioTraffic(ws, 'WS');
        await close(ws);
      } finally {
        stopping = capture.stop(wsMessages);
      }
      wire = await stopping;
    });
    expect(wire.length).toBe(8);
    expect(keys(forwarded.map(fromHep))).toEqual(keys(wire));
    for (const p of forwarded) expect(p.ipProto, 'HEP IP protocol of ws, as siptrace marks what it receives over ws').toBe(22);
    // Both ends are on this host, over TCP in the clear: the receiver's reads of what the sender's records
    // carried are not sent (bpf/local_copies.bpf.h), so each message, handshake and control frame is seen
    // once, or twice when the receiver read it before its sender's record was made (paired by dedup).
    expect(stats).toMatchObject({ forwarded: 8, streams: { discardedBytes: 0, truncatedMessages: 0, websocket: { rejectedHandshakes: 0, resyncs: 0, notSip: 0 } } });
    expect(stats.duplicates).toBeLessThan(8);
    expect(stats.streams.websocket.handshakes).toBeGreaterThanOrEqual(2);
    expect(stats.streams.websocket.handshakes).toBeLessThanOrEqual(4);
    // A ping and its pong, and both close frames.
    expect(stats.streams.websocket.controlFrames).toBeGreaterThanOrEqual(4);
    expect(stats.streams.websocket.controlFrames).toBeLessThanOrEqual(2 * 4);
  });

  it('wss:// to Kamailio: each message once, byte-exact, as Kamailio siptrace reported it; tail shows WSS', async () => {
    const port = kamailio.wssPort;
    let human = '';
    let json: Array<Record<string, unknown>> = [];
    const { forwarded, stats } = await underAgent(8, async (env) => {
      const tails = [await startTail(['--port', String(port)], env), await startTail(['--json', '--port', String(port)], env)];
      try {
        const ws = await connect(`wss://127.0.0.1:${port}/`);
        await kamailioTraffic(ws, 'WSS');
        await close(ws);
        human = await tails[0].waitForOutput((out) => out.split('\n').length > 8);
        json = (await tails[1].waitForOutput((out) => out.split('\n').length > 8)).trim().split('\n').map((l) => JSON.parse(l));
      } finally {
        for (const t of tails) await t.stop();
      }
    });
    // siptrace reports what Kamailio received (requests) and sent (answers) on the WSS port, unmasked and unframed.
    let traced: HepPacket[] = [];
    const deadline = Date.now() + 10_000;
    while ((traced = kamailio.traced(port)).length < 8 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(traced.length).toBe(8);
    expect(keys(forwarded.map(fromHep))).toEqual(keys(traced.map(fromHep)));
    for (const p of [...forwarded, ...traced]) expect(p.ipProto, 'HEP IP protocol of wss (22, as siptrace)').toBe(22);
    expect(stats).toMatchObject({ forwarded: 8, duplicates: 8, streams: { discardedBytes: 0, websocket: { handshakes: 4, resyncs: 0, notSip: 0 } } });
    expect(human.trim().split('\n').map((l) => l.split(' ')[4])).toEqual(Array(8).fill('WSS'));
    expect(json.map((r) => r.transport)).toEqual(Array(8).fill('wss'));
    expect(json.map((r) => String(r.summary).split(' ')[0]).sort()).toEqual(['200', '200', '200', '486', 'INVITE', 'MESSAGE', 'OPTIONS', 'REGISTER']);
  });

  /** A `ws` server selecting sip that answers each request in three fragments with pings between them. */
  async function fragmentingServer(secure: boolean): Promise<{ port: number; received: Buffer[]; close(): Promise<void> }> {
    let server: HttpServer | HttpsServer;
    if (secure) {
      const key = join(dir, 'node-key.pem');
      const cert = join(dir, 'node-cert.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-ws.test'], { stdio: 'ignore' });
      server = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) });
    } else server = createHttpServer();
    const wss = new WebSocketServer({ server, perMessageDeflate: false, handleProtocols: (offered) => (offered.has('sip') ? 'sip' : false) });
    const received: Buffer[] = [];
    wss.on('connection', (ws) => {
      ws.on('message', (data: Buffer, isBinary) => {
        received.push(Buffer.from(data));
        const callId = /Call-ID: (\S+)/.exec(data.toString())![1];
        const answer = Buffer.from(`SIP/2.0 200 OK\r\nCall-ID: ${callId}\r\nCSeq: 1 ${data.toString().split(' ')[0]}\r\nContent-Length: 0\r\n\r\n`);
        const third = Math.ceil(answer.length / 3);
        for (let i = 0; i < 3; i++) {
          if (i > 0) ws.ping();
          ws.send(answer.subarray(i * third, (i + 1) * third), { binary: isBinary, fin: i === 2 });
        }
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return {
      port: (server.address() as { port: number }).port,
      received,
      close: async () => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close();
        await once(server, 'close');
      },
    };
  }

  /** Fragmented requests (text, then binary) with pings between fragments; answers fragmented the same way. */
  async function fragmentedTraffic(ws: WebSocket, transport: 'WS' | 'WSS'): Promise<Buffer[]> {
    const id = `frag-${transport.toLowerCase()}-${process.pid}`;
    const answers: Buffer[] = [];
    for (const [n, binary] of [[0, false], [1, true], [2, false]] as const) {
      const req = sipRequest(n === 1 ? 'INVITE' : 'REGISTER', transport, `${id}-${n}`, n === 1 ? SDP : '');
      const parts = [req.subarray(0, 7), req.subarray(7, 150), Buffer.alloc(0), req.subarray(150)];
      answers.push(await exchange(ws, parts, binary));
    }
    return answers;
  }

  for (const secure of [false, true]) {
    const scheme = secure ? 'wss' : 'ws';
    it(`${scheme}:// fragmented messages with pings between fragments, both directions (ws server and client)`, async () => {
      const server = await fragmentingServer(secure);
      const capture = secure ? undefined : await LoopbackCapture.start(join(dir, 'frag.pcap'), [server.port]);
      let truth: Seen[] = [];
      try {
        const { forwarded, stats } = await underAgent(6, async () => {
          let stopping;
          try {
            const ws = await connect(`${scheme}://127.0.0.1:${server.port}/`);
            const local = { ip: '127.0.0.1', port: (ws as unknown as { _socket: { localPort: number } })._socket.localPort };
            const answers = await fragmentedTraffic(ws, secure ? 'WSS' : 'WS');
            await close(ws);
            // What each peer's ws decoded: the requests the server received, the answers the client received.
            truth = [
              ...server.received.map((payload) => ({ srcIp: local.ip, srcPort: local.port, dstIp: '127.0.0.1', dstPort: server.port, payload })),
              ...answers.map((payload) => ({ srcIp: '127.0.0.1', srcPort: server.port, dstIp: local.ip, dstPort: local.port, payload })),
            ];
          } finally {
            stopping = capture?.stop(wsMessages);
          }
          // For ws://, the wire itself.
          if (capture) expect(keys(await stopping!)).toEqual(keys(truth));
        });
        expect(truth.length).toBe(6);
        expect(keys(forwarded.map(fromHep))).toEqual(keys(truth));
        expect(stats).toMatchObject({ forwarded: 6, streams: { discardedBytes: 0, websocket: { resyncs: 0, notSip: 0 } } });
        // Per exchange 3 pings between the request's 4 fragments and 2 between the answer's 3, each
        // answered by a pong; then both close frames. Over TLS each is seen on both ends; over TCP in the
        // clear once, or twice when the receiver read it before its sender's record was made (see ws:// above).
        const frames = 3 * (3 + 3 + 2 + 2) + 2;
        if (secure) {
          expect(stats).toMatchObject({ duplicates: 6, streams: { websocket: { handshakes: 4 } } });
          expect(stats.streams.websocket.controlFrames).toBe(2 * frames);
        } else {
          expect(stats.duplicates).toBeLessThan(6);
          expect(stats.streams.websocket.handshakes).toBeGreaterThanOrEqual(2);
          expect(stats.streams.websocket.handshakes).toBeLessThanOrEqual(4);
          expect(stats.streams.websocket.controlFrames).toBeGreaterThanOrEqual(frames);
          expect(stats.streams.websocket.controlFrames).toBeLessThanOrEqual(2 * frames);
        }
      } finally {
        await server.close();
      }
    });
  }
});
