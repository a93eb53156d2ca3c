/**
 * Ground truth from the wire: tcpdump on `lo`, parsed here without any code from src/ (the oracle
 * must not share the code under test). Every packet on lo appears once in a capture on lo.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';

export interface WireMessage {
  transport: 'udp' | 'tcp';
  family: 4 | 6;
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  payload: Buffer;
}

/** tcpdump writing a pcap file, on lo (start) or on an interface in another network namespace (inNetns). */
export class LoopbackCapture {
  /** Sentinels that tcpdump wrote, left out of what stop() returns. */
  private readonly sentinels: Buffer[] = [];

  private constructor(
    private readonly proc: ChildProcess,
    readonly file: string,
    private readonly sendSentinel: (sentinel: Buffer) => Promise<void> | void,
    private readonly stderr: () => string,
  ) {}

  /** Starts tcpdump on lo for traffic to or from `ports`, resolving once it is capturing. */
  static start(file: string, ports: number[]): Promise<LoopbackCapture> {
    const filter = ports.map((p) => `port ${p}`).join(' or ');
    const send = async (sentinel: Buffer) => {
      const sock = createSocket('udp4');
      await new Promise<void>((r) => sock.send(sentinel, ports[0], '127.0.0.1', () => r()));
      sock.close();
    };
    // Immediate mode gives one ring slot per snaplen-sized frame: -B makes the ring big enough for bursts.
    return LoopbackCapture.spawn(['tcpdump', '-i', 'lo', '--immediate-mode', '-B', '262144', '-U', '-n', '-s', '0', '-w', file, filter], file, send);
  }

  /**
   * Starts tcpdump on `ifc` in the network namespace of `pid`, for all UDP and TCP; its sentinels go to
   * `sentinelIp` (an address reached over `ifc`), port 9, where nothing needs to listen.
   */
  static inNetns(pid: number, ifc: string, sentinelIp: string, file: string): Promise<LoopbackCapture> {
    const send = (sentinel: Buffer) =>
      void execFileSync('nsenter', ['-t', String(pid), '-n', 'python3', '-c', 'import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), (sys.argv[2], 9))', sentinel.toString(), sentinelIp]);
    return LoopbackCapture.spawn(['nsenter', '-t', String(pid), '-n', 'tcpdump', '-i', ifc, '--immediate-mode', '-U', '-n', '-s', '0', '-w', file, 'udp or tcp'], file, send);
  }

  private static async spawn(argv: string[], file: string, send: (sentinel: Buffer) => Promise<void> | void): Promise<LoopbackCapture> {
    const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
      proc.stderr!.on('data', (d: Buffer) => {
        err += d;
        if (err.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
    });
    const capture = new LoopbackCapture(proc, file, send, () => err);
    // tcpdump says "listening" just before its socket is live: it captures once a sentinel is in its file.
    if (!(await capture.sentinelWritten())) {
      proc.kill('SIGKILL');
      throw new Error(`tcpdump did not capture a sentinel within 5 s: ${err}`);
    }
    return capture;
  }

  private async sentinelWritten(): Promise<boolean> {
    const sentinel = await untilSentinelWritten(this.file, this.sendSentinel);
    if (sentinel) this.sentinels.push(sentinel);
    return !!sentinel;
  }

  /**
   * Stops tcpdump and returns the SIP messages it captured. Packets still queued in tcpdump's socket
   * are lost if it stops first, so a sentinel datagram is sent last and tcpdump is stopped only once
   * the sentinel is in the file.
   */
  async stop(split: (stream: Buffer) => Buffer[] = splitSip): Promise<WireMessage[]> {
    const complete = await this.sentinelWritten();
    // 'close', not 'exit': tcpdump's last words (its drop count) may still be in the stderr pipe at exit.
    const closed = new Promise((r) => this.proc.once('close', r));
    this.proc.kill('SIGINT');
    await closed;
    if (!complete) throw new Error('tcpdump did not capture the sentinel: the capture is incomplete');
    const dropped = Number(/(\d+) packets? dropped by kernel/.exec(this.stderr())?.[1] ?? 'NaN');
    if (dropped !== 0) throw new Error(`tcpdump lost packets (${this.stderr().trim()}): the ground truth is incomplete`);
    return sipMessagesFromPcap(readFileSync(this.file), split).filter((m) => !this.sentinels.some((s) => m.payload.equals(s)));
  }
}

/**
 * Sends a fresh sentinel datagram with `send`, again every 100 ms until tcpdump has written it to
 * `file` (with -U it writes packet by packet): then everything sent before it is in the file, and
 * tcpdump is capturing. Resolves with the sentinel, or undefined if it was not written within 5 s.
 */
async function untilSentinelWritten(file: string, send: (sentinel: Buffer) => Promise<void> | void): Promise<Buffer | undefined> {
  const sentinel = Buffer.from(`hepbpf-capture-sentinel-${randomUUID()}`);
  for (let i = 0; i < 250; i++) {
    if (i % 5 === 0) await send(sentinel);
    if (existsSync(file) && readFileSync(file).includes(sentinel)) return sentinel;
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}

interface Segment {
  key: string;
  family: 4 | 6;
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  seq: number;
  syn: boolean;
  payload: Buffer;
}

const ipv4 = (b: Buffer, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
function ipv6(b: Buffer, o: number): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(o + 2 * i).toString(16));
  return g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
}

/** Classic pcap (Ethernet, as tcpdump writes lo) -> UDP datagrams and reassembled TCP messages, framed by `split` (SIP by default). */
export function sipMessagesFromPcap(pcap: Buffer, split: (stream: Buffer) => Buffer[] = splitSip): WireMessage[] {
  const magic = pcap.readUInt32LE(0);
  if (magic !== 0xa1b2c3d4 && magic !== 0xa1b23c4d) throw new Error('not a little-endian classic pcap');
  const linktype = pcap.readUInt32LE(20);
  const l2 = linktype === 1 ? 14 : linktype === 113 ? 16 : linktype === 276 ? 20 : -1;
  if (l2 < 0) throw new Error(`unsupported link type ${linktype}`);
  const out: WireMessage[] = [];
  const streams = new Map<string, Segment[]>();
  for (let off = 24; off + 16 <= pcap.length; ) {
    const caplen = pcap.readUInt32LE(off + 8);
    const frame = pcap.subarray(off + 16, off + 16 + caplen);
    off += 16 + caplen;
    let p = l2;
    const ver = frame[p] >> 4;
    let proto: number, srcIp: string, dstIp: string, end: number;
    if (ver === 4) {
      proto = frame[p + 9];
      srcIp = ipv4(frame, p + 12);
      dstIp = ipv4(frame, p + 16);
      end = p + frame.readUInt16BE(p + 2);
      p += (frame[p] & 0xf) * 4;
    } else if (ver === 6) {
      proto = frame[p + 6];
      srcIp = ipv6(frame, p + 8);
      dstIp = ipv6(frame, p + 24);
      end = p + 40 + frame.readUInt16BE(p + 4);
      p += 40;
    } else continue;
    const family = ver === 4 ? 4 : 6;
    const srcPort = frame.readUInt16BE(p);
    const dstPort = frame.readUInt16BE(p + 2);
    if (proto === 17) {
      const payload = Buffer.from(frame.subarray(p + 8, end));
      if (payload.length && !/^[\r\n]*$/.test(payload.toString('latin1')))
        out.push({ transport: 'udp', family, srcIp, srcPort, dstIp, dstPort, payload });
    } else if (proto === 6) {
      const key = `${srcIp}|${srcPort}|${dstIp}|${dstPort}`;
      const seg: Segment = {
        key, family, srcIp, srcPort, dstIp, dstPort,
        seq: frame.readUInt32BE(p + 4),
        syn: (frame[p + 13] & 0x02) !== 0,
        payload: Buffer.from(frame.subarray(p + (frame[p + 12] >> 4) * 4, end)),
      };
      if (!streams.has(key)) streams.set(key, []);
      streams.get(key)!.push(seg);
    }
  }
  for (const segs of streams.values()) out.push(...frameTcp(segs, split));
  return out;
}

/** Orders one direction's segments by sequence number (dropping retransmitted bytes) and splits it into messages. */
function frameTcp(segs: Segment[], split: (stream: Buffer) => Buffer[]): WireMessage[] {
  const syn = segs.find((s) => s.syn);
  const isn = syn ? syn.seq + 1 : Math.min(...segs.map((s) => s.seq));
  const parts: Buffer[] = [];
  let next = 0;
  for (const s of [...segs].sort((a, b) => ((a.seq - isn) >>> 0) - ((b.seq - isn) >>> 0))) {
    const rel = (s.seq - isn) >>> 0;
    if (!s.payload.length || rel + s.payload.length <= next) continue;
    parts.push(s.payload.subarray(next - rel));
    next = rel + s.payload.length;
  }
  const stream = Buffer.concat(parts);
  const first = segs[0];
  const msgs: WireMessage[] = [];
  for (const payload of split(stream))
    msgs.push({ transport: 'tcp', family: first.family, srcIp: first.srcIp, srcPort: first.srcPort, dstIp: first.dstIp, dstPort: first.dstPort, payload });
  return msgs;
}

const START = /^(?:[A-Z]+ \S+ SIP\/2\.0|SIP\/2\.0 \d{3})/;

/** Complete SIP messages in a byte stream: header block + Content-Length. Bytes that do not start a message are skipped line by line. */
export function splitSip(stream: Buffer): Buffer[] {
  const text = stream.toString('latin1');
  const msgs: Buffer[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === '\r' || text[i] === '\n') {
      i++;
      continue;
    }
    const eol = text.indexOf('\n', i);
    if (!START.test(text.slice(i, eol < 0 ? text.length : eol))) {
      if (eol < 0) break;
      i = eol + 1;
      continue;
    }
    const hdrEnd = text.indexOf('\r\n\r\n', i);
    if (hdrEnd < 0) break;
    const m = /\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)/i.exec(text.slice(i, hdrEnd));
    const end = hdrEnd + 4 + (m ? Number(m[1]) : 0);
    if (end > text.length) break;
    msgs.push(Buffer.from(stream.subarray(i, end)));
    i = end;
  }
  return msgs;
}

/** Diameter messages in a byte stream, by the 24-bit length after the version byte; stops at anything that is not version 1. */
export function splitDiameter(stream: Buffer): Buffer[] {
  const msgs: Buffer[] = [];
  for (let i = 0; i + 20 <= stream.length && stream[i] === 1; ) {
    const len = stream.readUIntBE(i + 1, 3);
    if (len < 20 || i + len > stream.length) break;
    msgs.push(Buffer.from(stream.subarray(i, i + len)));
    i += len;
  }
  return msgs;
}

/** The Call-ID of a SIP message, read independently of src/. */
export function callIdOf(payload: Buffer): string | undefined {
  return /\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)/i.exec(payload.toString('latin1'))?.[1].trim();
}

/**
 * The plaintext of every TLS connection in a capture, decrypted by tshark with the session secrets
 * the peers' TLS library logged itself (SSLKEYLOGFILE): per connection and direction, a byte stream.
 * tlsPorts: the servers' ports, dissected as TLS.
 */
export function decryptedTlsStreams(pcap: string, keyLog: string, tlsPorts: number[]): WireMessage[] {
  const tshark = (args: string[]) =>
    // rdpmt: tshark's RDP heuristic claims some decrypted records, which then go missing from follow.
    execFileSync('tshark', ['-r', pcap, '--disable-protocol', 'rdpmt', '-o', `tls.keylog_file:${keyLog}`, ...tlsPorts.flatMap((p) => ['-d', `tcp.port==${p},tls`]), ...args], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  const syns = tshark(['-Y', 'tcp.flags.syn==1 && tcp.flags.ack==0', '-T', 'fields', '-e', 'tcp.stream', '-e', 'ip.src', '-e', 'tcp.srcport', '-e', 'ip.dst', '-e', 'tcp.dstport'])
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'));
  const out: WireMessage[] = [];
  for (const [stream, cIp, cPort, sIp, sPort] of syns) {
    // One line per TLS record: from node 0 at the margin, from node 1 indented with a tab.
    const follow = tshark(['-q', '-z', `follow,tls,raw,${stream}`]);
    const node0 = /Node 0: (\S+):(\d+)/.exec(follow);
    const node0IsServer = node0?.[2] === sPort;
    const parts: [Buffer[], Buffer[]] = [[], []];
    for (const line of follow.split('\n')) {
      const hex = line.trim();
      if (!/^[0-9a-f]+$/.test(hex)) continue;
      parts[line.startsWith('\t') ? 1 : 0].push(Buffer.from(hex, 'hex'));
    }
    const [fromServer, fromClient] = node0IsServer ? parts : [parts[1], parts[0]];
    const conn = { transport: 'tcp' as const, family: 4 as const };
    out.push({ ...conn, srcIp: cIp, srcPort: Number(cPort), dstIp: sIp, dstPort: Number(sPort), payload: Buffer.concat(fromClient) });
    out.push({ ...conn, srcIp: sIp, srcPort: Number(sPort), dstIp: cIp, dstPort: Number(cPort), payload: Buffer.concat(fromServer) });
  }
  return out;
}
