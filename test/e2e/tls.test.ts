/**
 * SIP inside TLS, captured as plaintext from the TLS libraries: OpenSSL through a socket BIO
 * (openssl s_client/s_server), GnuTLS (gnutls-cli), and the OpenSSL inside the node executable
 * through memory BIOs (Node's tls). Ground truth: the bytes the test fed to each peer and the
 * peer's own output (what it decrypted), the TCP connection from tcpdump on lo. Every message must
 * reach the collector exactly once, byte for byte, with the connection's real addresses, HEP IP
 * protocol 22, and nothing of the ciphertext.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { CLI, kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort, tcpCollector, udpCollector, type HepCollector } from '../helpers/collector.js';
import { sippUac, sippUas } from '../helpers/sipp.js';
import { callIdOf, LoopbackCapture, type WireMessage } from '../helpers/wire.js';
import { startKamailioTlsHop } from '../helpers/kamailio-tls.js';

const why = kernelSuiteSkipReason('end-to-end TLS capture tests');

const MESSAGES = 20;
const KAMAILIO_CALLS = 100;
/** sipp's built-in uac/uas: INVITE, ACK, BYE one way, 180, 200, 200 the other (checked in kamailio-tls-harness.test.ts). */
const TLS_MESSAGES_PER_CALL = 6;
const TLS_PIPE = resolve(REPO, 'test/fixtures/tls_pipe.mjs');
const TLS_PIPE_DLOPEN = resolve(REPO, 'test/fixtures/tls_pipe_dlopen.py');

/** A private copy of libssl/libcrypto: files no process had mapped when the agent started. */
function privateLibssl(dir: string): NodeJS.ProcessEnv {
  mkdirSync(dir);
  for (const so of ['libssl.so.3', 'libcrypto.so.3']) copyFileSync(join('/usr/lib/x86_64-linux-gnu', so), join(dir, so));
  return { ...process.env, LD_LIBRARY_PATH: dir };
}

/** The agent logged that it probed this file. */
function probed(agent: RunningAgent, path: string): boolean {
  return agent.logs.some((l) => l.msg === 'TLS library probed' && String(l.path).endsWith(path));
}

/** SIP requests of one exchange, some with a body, all distinct. */
function requests(name: string): Buffer[] {
  return Array.from({ length: MESSAGES }, (_, i) => {
    const body = i % 3 === 0 ? `v=0\r\no=- ${i} 1 IN IP4 127.0.0.1\r\ns=${name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${20000 + 2 * i} RTP/AVP 0\r\n` : '';
    return Buffer.from(
      `${i % 2 ? 'MESSAGE' : 'OPTIONS'} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-${name}-${i}\r\n` +
        `From: <sip:alice@127.0.0.1>;tag=${i}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: ${name}-${i}@tls.test\r\nCSeq: ${i + 1} ${i % 2 ? 'MESSAGE' : 'OPTIONS'}\r\n` +
        `Content-Type: application/sdp\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
}

const responseTo = (req: Buffer) => {
  const text = req.toString('latin1');
  const header = (name: string) => new RegExp(`\\r\\n${name}: ([^\\r]+)`).exec(text)![1];
  return Buffer.from(`SIP/2.0 200 OK\r\nVia: ${header('Via')}\r\nCall-ID: ${header('Call-ID')}\r\nCSeq: ${header('CSeq')}\r\nContent-Length: 0\r\n\r\n`);
};

/** Chunk sizes that cut messages in two and pack several into one TLS record. */
const CHUNKS = [37, 700, 1, 1500, 213, 90];

async function writeInChunks(proc: ChildProcess, data: Buffer): Promise<void> {
  for (let off = 0, i = 0; off < data.length; i++) {
    const n = CHUNKS[i % CHUNKS.length];
    proc.stdin!.write(data.subarray(off, off + n));
    off += n;
    // Part of the scenario: paced so the peer reads, and encrypts, each chunk on its own.
    await new Promise((r) => setTimeout(r, 15));
  }
}

interface Peer {
  proc: ChildProcess;
  output(): Buffer;
  stop(): Promise<void>;
}

function startPeer(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Peer {
  const proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  proc.stdout!.on('data', (d: Buffer) => out.push(d));
  proc.stderr!.resume();
  proc.stdin!.on('error', () => {}); // a peer that already closed its end
  return {
    proc,
    output: () => Buffer.concat(out),
    stop: () =>
      new Promise((r) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
}

const listening = (port: number) => execFileSync('ss', ['-Hltn', `sport = :${port}`]).toString().trim() !== '';

const key = (srcIp: string, srcPort: number, dstIp: string, dstPort: number, payload: Buffer) =>
  `${srcIp}:${srcPort}>${dstIp}:${dstPort}|${payload.toString('base64')}`;

describe.skipIf(!!why)('SIP in TLS, plaintext from the TLS libraries', () => {
  let dir: string;
  let cert: string;
  let certKey: string;
  let agent: RunningAgent;
  let hep: HepCollector;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-tls-'));
    cert = join(dir, 'cert.pem');
    certKey = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', certKey, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url, '--hep-id', '2001']);
  });

  afterAll(async () => {
    const stopped = await agent?.stop();
    expect(stopped?.code).toBe(0);
    // Every TLS message of these exchanges had its connection: none went out without addresses.
    expect((stopped?.final?.capture as { tls: { unattributed: number } } | undefined)?.tls.unattributed).toBe(0);
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Runs one exchange: the client sends MESSAGES requests, the server answers each, both cut into
   * TLS records of awkward sizes. Returns what must have been forwarded and what was.
   */
  async function exchange(name: string, server: (port: number) => Peer, client: (port: number) => Peer, settleMs = 0) {
    const port = await freePort();
    const reqs = requests(name);
    const resps = reqs.map(responseTo);
    const wire = await LoopbackCapture.start(join(dir, `${name}.pcap`), [port]);
    const hepBefore = hep.packets.length;
    const peers: Peer[] = [];
    const pids = { server: 0, client: 0 };
    let exchanged = false;
    let stopping: Promise<WireMessage[]> | undefined;
    try {
      const srv = server(port);
      pids.server = srv.proc.pid!;
      peers.push(srv);
      await until(`${name} server listening`, () => listening(port));
      const cli = client(port);
      pids.client = cli.proc.pid!;
      peers.push(cli);
      // A late-started process: its TLS library must be found and probed before it talks. Part of the
      // scenario, not a guess: settleMs is the delay within which README promises that.
      if (settleMs) await new Promise((r) => setTimeout(r, settleMs));
      const sent = Buffer.concat(reqs);
      await writeInChunks(cli.proc, sent);
      await until(`${name} requests decrypted by the server`, () => srv.output().length >= sent.length);
      const answered = Buffer.concat(resps);
      await writeInChunks(srv.proc, answered);
      await until(`${name} responses decrypted by the client`, () => cli.output().length >= answered.length);
      // The peers' own output: every byte crossed the connection as sent.
      expect(srv.output().equals(sent)).toBe(true);
      expect(cli.output().equals(answered)).toBe(true);
      exchanged = true;
    } finally {
      for (const p of peers.reverse()) await p.stop();
      // Whole byte stream per direction. Stopped even when the exchange failed: tcpdump must not outlive the test.
      stopping = wire.stop((s) => (s.length ? [s] : []));
      if (!exchanged) stopping.catch(() => {});
    }
    // The connection's tuple, and the ciphertext.
    const streams = (await stopping).filter((m) => m.transport === 'tcp');
    const up = streams.find((m) => m.dstPort === port);
    const down = streams.find((m) => m.srcPort === port);
    expect(up && down, 'one TCP connection with data both ways on lo').toBeTruthy();
    for (const s of [up!, down!]) {
      expect(s.payload[0], 'a TLS handshake record first').toBe(0x16);
      expect(s.payload.includes('sip:bob@'), 'no plaintext SIP on the wire').toBe(false);
    }
    const packets = (await hep.waitFor(hepBefore + 2 * MESSAGES, 20_000, 1500)).slice(hepBefore);
    const forwarded = packets.map((p) => decodeHep(p)).filter((p) => p.srcPort === port || p.dstPort === port);
    return { up: up!, down: down!, reqs, resps, forwarded, pids };
  }

  function expectForwardedOnce(r: { up: WireMessage; down: WireMessage; reqs: Buffer[]; resps: Buffer[]; forwarded: HepPacket[] }): void {
    const { up, down } = r;
    const expected = [
      ...r.reqs.map((p) => key(up.srcIp, up.srcPort, up.dstIp, up.dstPort, p)),
      ...r.resps.map((p) => key(down.srcIp, down.srcPort, down.dstIp, down.dstPort, p)),
    ].sort();
    const got = r.forwarded.map((p) => key(p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!)).sort();
    expect(got).toEqual(expected);
    for (const p of r.forwarded) {
      expect(p.ipProto, 'HEP IP protocol of TLS').toBe(22);
      expect(p.protoType).toBe(1);
      expect(p.family).toBe(2);
      expect(p.correlationId).toBe(callIdOf(p.payload!));
    }
  }

  it('OpenSSL socket BIO (openssl s_client/s_server), a libssl the agent finds only after the processes start', async () => {
    const lib = join(dir, 'lib');
    const env = privateLibssl(lib);
    const result = await exchange(
      'openssl',
      (port) => startPeer('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', certKey, '-quiet', '-naccept', '1'], env),
      (port) => startPeer('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-quiet'], env),
      1000,
    );
    expectForwardedOnce(result);
    expect(probed(agent, join(lib, 'libssl.so.3'))).toBe(true);
  });

  it('a libssl loaded with dlopen() by a running process (Python imports ssl 200 ms after it started) is probed within a second', async () => {
    const lib = join(dir, 'lib-dlopen');
    const env = privateLibssl(lib);
    const result = await exchange(
      'dlopen',
      (port) => startPeer('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', certKey, '-quiet', '-naccept', '1']),
      (port) => startPeer('/usr/bin/python3', [TLS_PIPE_DLOPEN, String(port), '0.2'], env),
      1200,
    );
    expectForwardedOnce(result);
    expect(probed(agent, join(lib, 'libssl.so.3'))).toBe(true);
  });

  it('GnuTLS (gnutls-cli) against OpenSSL (openssl s_server)', async () => {
    const result = await exchange(
      'gnutls',
      (port) => startPeer('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', certKey, '-quiet', '-naccept', '1']),
      (port) => startPeer('gnutls-cli', ['--insecure', '--logfile', join(dir, 'gnutls-cli.log'), '-p', String(port), '127.0.0.1']),
    );
    expectForwardedOnce(result);
  });

  it('OpenSSL inside the node executable, memory BIO (Node tls client and server); tail shows them as tls', async () => {
    // tail attaches to the running agent over its control socket.
    const tail = spawn(process.execPath, [CLI, 'tail', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    tail.stdout!.on('data', (d) => (out += d));
    try {
      await new Promise<void>((res, rej) => {
        let err = '';
        const timer = setTimeout(() => rej(new Error(`tail not ready: ${err}`)), 30_000);
        tail.stderr!.on('data', (d) => {
          err += d;
          if (err.includes('ready')) res(clearTimeout(timer));
        });
      });
      const result = await exchange(
        'node',
        (port) => startPeer(process.execPath, [TLS_PIPE, 'server', String(port), cert, certKey]),
        (port) => startPeer(process.execPath, [TLS_PIPE, 'client', String(port)]),
      );
      expectForwardedOnce(result);
      const { up, pids } = result;
      const records = out.trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.src.port === up.dstPort || r.dst.port === up.dstPort);
      expect(records).toHaveLength(2 * MESSAGES);
      for (const r of records) {
        const request = r.dst.port === up.dstPort;
        // Each message is named after the process that sent it.
        expect(r).toMatchObject({ transport: 'tls', proto: 'sip', comm: 'node', pid: request ? pids.client : pids.server });
        expect(r.src).toEqual(request ? { ip: up.srcIp, port: up.srcPort } : { ip: up.dstIp, port: up.dstPort });
      }
    } finally {
      tail.kill('SIGINT');
    }
  });

  it(`Kamailio to Kamailio over TLS 1.3 (OpenSSL 3, memory BIO): ${KAMAILIO_CALLS} calls, every message both proxies' siptrace saw arrive over TLS`, async () => {
    const hopDir = join(dir, 'kamailio');
    mkdirSync(hopDir);
    const hepBefore = hep.packets.length;
    const hop = await startKamailioTlsHop(hopDir);
    let truth;
    try {
      expect(await hop.runCalls(KAMAILIO_CALLS)).toBe(0);
      truth = await hop.waitForTlsMessages(KAMAILIO_CALLS * TLS_MESSAGES_PER_CALL, 30_000, 1000);
    } finally {
      await hop.stop();
    }
    expect(truth).toHaveLength(KAMAILIO_CALLS * TLS_MESSAGES_PER_CALL);
    // The agent also forwards the UDP legs (sipp <-> edge, core <-> UAS): the TLS hop is what it marks 22.
    const packets = (await hep.waitFor(hepBefore + 2 * truth.length, 20_000, 1500)).slice(hepBefore);
    const forwarded = packets.map((p) => decodeHep(p)).filter((p) => p.ipProto === 22);
    const got = forwarded.map((p) => key(p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!)).sort();
    expect(got).toEqual(truth.map((m) => key(m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)).sort());
    for (const p of forwarded) expect(p.correlationId).toBe(callIdOf(p.payload!));
  });

  it('forwards to a HEP collector over TLS whose certificate it verifies (--hep-ca), every message of 10 sipp calls once', async () => {
    const collectorCert = join(dir, 'collector.pem');
    const collectorKey = join(dir, 'collector.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', collectorKey, '-out', collectorCert, '-days', '2', '-subj', '/CN=collector', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const collector = await tcpCollector({ cert: readFileSync(collectorCert), key: readFileSync(collectorKey) });
    const viaTls = await startAgent(['run', '--hep', collector.url, '--hep-ca', collectorCert]);
    const [uasPort, uacPort] = [await freePort(), await freePort()];
    const wire = await LoopbackCapture.start(join(dir, 'hep-tls.pcap'), [uasPort]);
    const uas = await sippUas(uasPort, 'u1', dir);
    try {
      expect(await sippUac(uasPort, uacPort, 'u1', 10, dir)).toBe(0);
    } finally {
      await uas.stop();
    }
    const truth = await wire.stop();
    const packets = (await collector.waitFor(truth.length, 20_000, 1500)).map((p) => decodeHep(p)).filter((p) => p.srcPort === uasPort || p.dstPort === uasPort);
    expect((await viaTls.stop()).code).toBe(0);
    await collector.close();
    expect(viaTls.logs.some((l) => l.msg === 'HEP TCP connected')).toBe(true);
    expect(packets.map((p) => key(p.srcIp!, p.srcPort!, p.dstIp!, p.dstPort!, p.payload!)).sort()).toEqual(
      truth.map((m) => key(m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)).sort(),
    );
  });
});
