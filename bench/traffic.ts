/**
 * Recorded traffic for the pipeline bench and its end-to-end unit test: the records the kernel
 * emits when two containers on this host talk SIP over UDP, TCP (pipelined writes, reads split
 * anywhere) and TLS, and Diameter over TCP. Each message is seen twice, leaving the sender and
 * entering the receiver, as on a real host. Built with src/capture/replay.ts.
 */
import { batchOf, encodeRecord, type RecordSpec } from '../src/capture/replay.js';
import { F_COUNTERPART, F_SEQ, F_TLS, L7_DIAMETER, L7_SIP, L7_WEBSOCKET } from '../src/capture/record.js';
import { ContainerResolver } from '../src/enrich/containers.js';
import type { CgroupIndex } from '../src/enrich/cgroups.js';
import type { DockerApi } from '../src/enrich/docker-api.js';
import type { HepSender } from '../src/output/hep-sender.js';
import { parseHepTarget } from '../src/output/target.js';
import { MAX_UDP_PACKET } from '../src/hep/chunks.js';
import { diameterMessage, TGPP } from '../test/helpers/diameter.js';
import { encodeFrame } from '../test/helpers/websocket.js';

/** One end: a process in a Docker container (compose project `ims`). */
export interface Peer {
  cgroupId: bigint;
  pid: number;
  comm: string;
  containerId: string;
  /** Container name and compose service. */
  name: string;
  addr: number[];
}

export const PCSCF: Peer = { cgroupId: 1001n, pid: 1100, comm: 'pcscf', containerId: 'a1'.repeat(32), name: 'pcscf', addr: [127, 0, 0, 1] };
export const SCSCF: Peer = { cgroupId: 1002n, pid: 1200, comm: 'scscf', containerId: 'b2'.repeat(32), name: 'scscf', addr: [127, 0, 0, 1] };
const NETNS = 4026531840;

/**
 * A ContainerResolver that answers from memory: stand-ins for the cgroup index (which reads /proc
 * and cgroupfs) and for the Docker API, naming PCSCF and SCSCF, so attribution runs as on a host
 * whose runtime knows both containers, with no kernel, cgroup or runtime behind it.
 */
export function memoryContainers(peers: Peer[] = [PCSCF, SCSCF]): ContainerResolver {
  const paths = new Map(peers.map((p) => [p.cgroupId, `/system.slice/docker-${p.containerId}.scope`]));
  const byId = new Map(peers.map((p) => [p.containerId, p]));
  const cgroups = { resolve: async (id: bigint) => paths.get(id), sweep: async () => [], pathOf: (id: bigint) => paths.get(id), size: paths.size };
  const docker = {
    inspect: async (id: string) => {
      const p = byId.get(id);
      return p && { name: p.name, image: 'ims:1', labels: { 'com.docker.compose.project': 'ims', 'com.docker.compose.service': p.name } };
    },
  };
  return new ContainerResolver(cgroups as unknown as CgroupIndex, { docker: docker as unknown as DockerApi });
}

/** Resolves once both names are known, so what is measured is the path of a host already running. */
export async function namesKnown(resolver: ContainerResolver, peers: Peer[] = [PCSCF, SCSCF]): Promise<void> {
  for (const p of peers) resolver.lookup(p.cgroupId, p.pid);
  while (peers.some((p) => resolver.lookup(p.cgroupId, p.pid) === undefined)) await new Promise((r) => setImmediate(r));
}

/** A HEP sender with no socket: keeps (or only counts) the packets the forwarder encodes. */
export function memorySender(keep?: Buffer[]): HepSender & { packets: number; bytes: number } {
  return {
    target: parseHepTarget('udp://127.0.0.1:9060'),
    name: 'udp://127.0.0.1:9060',
    maxPacket: MAX_UDP_PACKET,
    packets: 0,
    bytes: 0,
    send(packet: Buffer, length = packet.length) {
      this.packets++;
      this.bytes += length;
      keep?.push(Buffer.from(packet.subarray(0, length)));
    },
    flush: async () => {},
    close: async () => {},
    stats() {
      return { sent: this.packets, dropped: 0, errors: 0, queued: 0, queuedBytes: 0, up: 1 };
    },
  };
}

export const invite = (callId: string, icid: string) => {
  const sdp =
    'v=0\r\no=- 3711 3711 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0 8 101\r\n' +
    'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n';
  return Buffer.from(
    `INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-${callId}\r\nMax-Forwards: 70\r\n` +
      `From: <sip:alice@ims.test>;tag=${callId}-a\r\nTo: <sip:bob@ims.test>\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\n` +
      `Contact: <sip:alice@127.0.0.1:5070>\r\nP-Charging-Vector: icid-value=${icid};icid-generated-at=127.0.0.1\r\n` +
      `User-Agent: hepbpf-bench\r\nContent-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`,
  );
};

export const ok = (callId: string) => {
  const sdp = 'v=0\r\no=- 4242 4242 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n';
  return Buffer.from(
    `SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-${callId}\r\nFrom: <sip:alice@ims.test>;tag=${callId}-a\r\n` +
      `To: <sip:bob@ims.test>;tag=${callId}-b\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:5060>\r\n` +
      `Content-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`,
  );
};

/** Rx AAR carrying the call's icid (correlated to its Call-ID), and its answer. */
export const aar = (session: string, icid: string, hopByHop: number) =>
  diameterMessage({
    request: true, proxiable: true, command: 265, app: 16777236, hopByHop, endToEnd: hopByHop,
    avps: [
      { code: 263, value: session },
      { code: 264, value: 'pcscf.ims.test' },
      { code: 296, value: 'ims.test' },
      { code: 258, value: 16777236 },
      { code: 505, vendor: TGPP, value: icid },
      { code: 517, vendor: TGPP, value: [{ code: 518, vendor: TGPP, value: 1 }, { code: 520, vendor: TGPP, value: 0 }] },
    ],
  });
export const aaa = (session: string, hopByHop: number) =>
  diameterMessage({
    request: false, proxiable: true, command: 265, app: 16777236, hopByHop, endToEnd: hopByHop,
    avps: [{ code: 263, value: session }, { code: 268, value: 2001 }, { code: 264, value: 'pcrf.ims.test' }, { code: 296, value: 'ims.test' }],
  });
/** Cx MAA with an authentication vector, whose secrets are masked; `secret` fills them all (0x58: as masked). */
export const maa = (session: string, hopByHop: number, secret?: number) => {
  const vector = (n: number, fill: number) => Buffer.alloc(n, secret ?? fill);
  return diameterMessage({
    request: false, proxiable: true, command: 303, app: 16777216, hopByHop, endToEnd: hopByHop,
    avps: [
      { code: 263, value: session },
      { code: 268, value: 2001 },
      { code: 1, value: 'alice@ims.test' },
      {
        code: 612, vendor: TGPP,
        value: [
          { code: 608, vendor: TGPP, value: 'Digest-AKAv1-MD5' },
          { code: 609, vendor: TGPP, value: vector(32, 0x5a) },
          { code: 610, vendor: TGPP, value: vector(16, 0x5b) },
          { code: 625, vendor: TGPP, value: vector(16, 0x5c) },
          { code: 626, vendor: TGPP, value: vector(16, 0x5d) },
        ],
      },
    ],
  });
};

/** Builds records with one running capture clock: each record 10 µs after the previous one. */
export class Recorder {
  readonly records: Buffer[] = [];
  /** SIP and Diameter messages that should come out, each once. */
  messages = 0;
  private tsNs: bigint;
  /** Local TCP: the sequence number of each flow's next byte, by `fromPort>toPort`. */
  private readonly nextSeq = new Map<string, number>();

  constructor(startNs = 1_000_000_000n) {
    this.tsNs = startNs;
  }

  private record(spec: RecordSpec): void {
    this.tsNs += 10_000n;
    this.records.push(encodeRecord({ tsNs: this.tsNs, netns: NETNS, ...spec }));
  }

  /**
   * `from` writes `writes` (each one syscall, or one SSL_write), `to` reads the same bytes as
   * `reads`; both sides on the same connection: ports `fromPort` -> `toPort`.
   */
  exchange(o: {
    from: Peer; to: Peer; fromPort: number; toPort: number; ipProto: 6 | 17; l7: number; tls?: boolean;
    writes: Buffer[]; reads?: Buffer[]; messages: number;
    /**
     * As the kernel records two processes of this host (bpf/local_copies.bpf.h), the receiver's copies carry no bytes.
     * UDP: both copies carry the datagram's hash. TCP: both carry the sequence number of their first byte.
     */
    receiverHeaderOnly?: boolean;
  }): void {
    const side = (p: Peer, direction: 0 | 1, local: number, remote: number, data: Buffer): RecordSpec => ({
      cgroupId: p.cgroupId, pid: p.pid, comm: p.comm, direction, ipProto: o.ipProto, l7: o.l7,
      // one socket (or TLS connection) per end of a connection
      sockId: 0xffff888000000000n + BigInt(local) * 65536n + BigInt(remote),
      tlsId: o.tls ? BigInt(local) : 0n,
      flags: o.tls ? F_TLS : 0,
      source: o.tls ? (direction === 0 ? 11 : 12) : 3,
      localAddr: p.addr, remoteAddr: direction === 0 ? o.to.addr : o.from.addr, localPort: local, remotePort: remote, data,
    });
    if (o.receiverHeaderOnly && o.ipProto === 6) {
      const flow = `${o.fromPort}>${o.toPort}`;
      const first = this.nextSeq.get(flow) ?? 0xfffff000; // the run wraps past 2^32
      let seq = first;
      for (const w of o.writes) {
        this.record({ ...side(o.from, 0, o.fromPort, o.toPort, w), msgHash: seq, flags: F_SEQ });
        seq = (seq + w.length) >>> 0;
      }
      seq = first;
      for (const r of o.reads ?? o.writes) {
        this.record({ ...side(o.to, 1, o.toPort, o.fromPort, Buffer.alloc(0)), msgHash: seq, origLen: r.length, flags: F_SEQ | F_COUNTERPART });
        seq = (seq + r.length) >>> 0;
      }
      this.nextSeq.set(flow, seq);
    } else if (o.receiverHeaderOnly) {
      for (const w of o.writes) {
        const msgHash = kernelHash(w);
        this.record({ ...side(o.from, 0, o.fromPort, o.toPort, w), msgHash });
        this.record({ ...side(o.to, 1, o.toPort, o.fromPort, Buffer.alloc(0)), msgHash, origLen: w.length, flags: F_COUNTERPART, source: 8 });
      }
    } else {
      for (const w of o.writes) this.record(side(o.from, 0, o.fromPort, o.toPort, w));
      for (const r of o.reads ?? o.writes) this.record(side(o.to, 1, o.toPort, o.fromPort, r));
    }
    this.messages += o.messages;
  }

  batches(recordsPerBatch = 64): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < this.records.length; i += recordsPerBatch) out.push(batchOf(this.records.slice(i, i + recordsPerBatch)));
    return out;
  }
}

/** Stands for the kernel's msg_hash of a datagram's first 512 bytes: any nonzero value both copies share. */
function kernelHash(data: Buffer): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < Math.min(data.length, 512); i++) h = Math.imul(h ^ data[i], 0x01000193);
  return h >>> 0 || 1;
}

/** `buf` cut into `parts` reads of about equal size. */
const split = (buf: Buffer, parts: number) =>
  Array.from({ length: parts }, (_, i) => buf.subarray(Math.floor((buf.length * i) / parts), Math.floor((buf.length * (i + 1)) / parts)));

export type Scenario = 'SIP/UDP' | 'SIP/UDP local' | 'SIP/TCP' | 'SIP/TCP local' | 'SIP/TLS' | 'SIP/WS' | 'Diameter';
/** The mixed traffic's scenarios. */
export const SCENARIOS: Scenario[] = ['SIP/UDP', 'SIP/TCP', 'SIP/TLS', 'SIP/WS', 'Diameter'];

const WS_UPGRADE = Buffer.from(
  'GET / HTTP/1.1\r\nHost: scscf.ims.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
    'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n',
);
const WS_ACCEPT = Buffer.from(
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n' +
    'Sec-WebSocket-Protocol: sip\r\n\r\n',
);

/** `calls` rounds of one scenario between PCSCF and SCSCF; `tag` keeps Call-IDs and sessions apart between recordings. */
export function record(rec: Recorder, scenario: Scenario, calls: number, tag = ''): void {
  const sip = { from: PCSCF, to: SCSCF, fromPort: 5070, toPort: 5060, l7: L7_SIP };
  const back = { from: SCSCF, to: PCSCF, fromPort: 5060, toPort: 5070, l7: L7_SIP };
  for (let i = 0; i < calls; i++) {
    const id = `${scenario}-${tag}${i}`;
    const icid = `icid-${tag}${i}`;
    if (scenario === 'SIP/UDP' || scenario === 'SIP/UDP local') {
      // SIP/UDP: both copies whole; SIP/UDP local: as the kernel now records two local processes' datagrams.
      const receiverHeaderOnly = scenario === 'SIP/UDP local';
      rec.exchange({ ...sip, ipProto: 17, writes: [invite(id, icid)], messages: 1, receiverHeaderOnly });
      rec.exchange({ ...back, ipProto: 17, writes: [ok(id)], messages: 1, receiverHeaderOnly });
    } else if (scenario === 'SIP/TCP' || scenario === 'SIP/TCP local' || scenario === 'SIP/TLS') {
      // Two INVITEs in one write (pipelining), read in three pieces; the answers written one by one, read together.
      // SIP/TCP local: the receiver's reads header only, as the kernel now records two local processes' connection.
      const tls = scenario === 'SIP/TLS';
      const receiverHeaderOnly = scenario === 'SIP/TCP local';
      const port = tls ? 5061 : 5060;
      const both = Buffer.concat([invite(`${id}a`, icid), invite(`${id}b`, icid)]);
      rec.exchange({ ...sip, toPort: port, ipProto: 6, tls, writes: [both], reads: split(both, 3), messages: 2, receiverHeaderOnly });
      const answers = [ok(`${id}a`), ok(`${id}b`)];
      rec.exchange({ ...back, fromPort: port, ipProto: 6, tls, writes: answers, reads: [Buffer.concat(answers)], messages: 2, receiverHeaderOnly });
    } else if (scenario === 'SIP/WS') {
      // One connection, opened by the handshake before the first request.
      const ws = { ...sip, toPort: 8080, ipProto: 6 as const, l7: L7_WEBSOCKET };
      const request = encodeFrame(0x81, invite(id, icid), { mask: 0x5a17c0de }); // a client masks its frames, a server does not
      const answer = encodeFrame(0x81, ok(id));
      rec.exchange({ ...ws, writes: [i === 0 ? Buffer.concat([WS_UPGRADE, request]) : request], messages: 1 });
      rec.exchange({ ...ws, from: SCSCF, to: PCSCF, fromPort: 8080, toPort: 5070, writes: [i === 0 ? Buffer.concat([WS_ACCEPT, answer]) : answer], messages: 1 });
    } else {
      const dia = { from: PCSCF, to: SCSCF, fromPort: 40000, toPort: 3868, ipProto: 6 as const, l7: L7_DIAMETER };
      const diaBack = { from: SCSCF, to: PCSCF, fromPort: 3868, toPort: 40000, ipProto: 6 as const, l7: L7_DIAMETER };
      const session = `pcscf.ims.test;${tag}${i}`;
      const request = aar(session, icid, 2 * i + 1);
      rec.exchange({ ...dia, writes: [request], reads: split(request, 2), messages: 1 });
      rec.exchange({ ...diaBack, writes: [aaa(session, 2 * i + 1)], messages: 1 });
      rec.exchange({ ...diaBack, writes: [maa(`${session};cx`, 2 * i + 2)], messages: 1 });
    }
  }
}
