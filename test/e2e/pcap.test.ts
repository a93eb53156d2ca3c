/**
 * `hepbpf tail --pcap` on the real kernel: SIP over UDP (IPv4, IPv6), over TCP (sipp calls and a
 * 60 KiB message), over TLS (openssl s_client/s_server), and Diameter over TCP between two
 * freeDiameter daemons, written as pcapng and read back by Debian's tshark. Ground truth: tcpdump on
 * lo for the plaintext transports, the bytes fed to openssl (and decrypted by its peer) for TLS.
 * Every message must be dissected by tshark, once, byte for byte, on the connection's real
 * addresses, with no expert warning. And `tail --call-id X --flow` on one sipp call, as text.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { kernelSuiteSkipReason, REPO } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort } from '../helpers/collector.js';
import { startFreeDiameter, type FreeDiameter } from '../helpers/freediameter.js';
import { stopByPid } from '../helpers/receivers.js';
import { sippUac, sippUas } from '../helpers/sipp.js';
import { startTail } from '../helpers/tail.js';
import { callIdOf, LoopbackCapture, splitDiameter, splitSip } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('pcapng export end-to-end tests');
const TRAFFIC = resolve(REPO, 'test/fixtures/sip_traffic.py');
const TLS_MESSAGES = 6;

const traffic = (mode: string, ...ports: number[]) => {
  const r = spawnSync('python3', [TRAFFIC, mode, ...ports.map(String)], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
};

/** tail capturing by itself: no agent's control socket where it looks. */
const tailEnv = (dir: string) => ({ ...process.env, HEPBPF_SOCKET: join(dir, 'none.sock') });
/** Capture only the test's ports: a soak may run beside the test, host-wide, and would fill the file. */
const sipPorts = (ports: number[]) => ['--sip-ports', ports.join(',')];

/** A stream on lo, split the way its first bytes say: a TLS record (kept whole), Diameter, or SIP. */
const splitAny = (s: Buffer) => (!s.length ? [] : s[0] === 0x16 ? [s] : s[0] === 1 ? splitDiameter(s) : splitSip(s));

const key = (srcIp: string, srcPort: number, dstIp: string, dstPort: number, payload: Buffer) => `${srcIp}:${srcPort}>${dstIp}:${dstPort}|${payload.toString('base64')}`;

interface Dissected {
  key: string;
  comment: string;
  callId?: string;
}

/** Every SIP and Diameter message tshark dissects in `file` on one of `ports` (Diameter decoded on `diameterPorts`). */
function dissect(file: string, ports: number[], diameterPorts: number[]): Dissected[] {
  const onPorts = ports.map((p) => `tcp.port==${p} or udp.port==${p}`).join(' or ');
  const fields = ['ip.src', 'ipv6.src', 'ip.dst', 'ipv6.dst', 'udp.srcport', 'tcp.srcport', 'udp.dstport', 'tcp.dstport', 'frame.comment', 'sip.Call-ID', 'diameter.cmd.code', 'tcp.reassembled.data', 'tcp.payload', 'udp.payload'];
  const out = execFileSync(
    'tshark',
    ['-r', file, ...diameterPorts.flatMap((p) => ['-d', `tcp.port==${p},diameter`]), '-Y', `(${onPorts}) and (sip or diameter)`, '-T', 'fields', '-E', 'separator=/t', ...fields.flatMap((f) => ['-e', f])],
    { encoding: 'utf8', maxBuffer: 256 << 20 },
  );
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [ip4s, ip6s, ip4d, ip6d, us, ts, ud, td, comment, callId, _cmd, reassembled, tcpPayload, udpPayload] = line.split('\t');
      const bytes = Buffer.from((reassembled || tcpPayload || udpPayload).replace(/:/g, ''), 'hex');
      return { key: key(ip4s || ip6s, Number(us || ts), ip4d || ip6d, Number(ud || td), bytes), comment, callId: callId || undefined };
    });
}

/** tshark's expert summary (warnings and errors, checksums verified) for the packets on `ports`: '' when there is none. */
function expertWarnings(file: string, ports: number[], diameterPorts: number[]): string {
  const onPorts = ports.map((p) => `tcp.port==${p} or udp.port==${p}`).join(' or ');
  const checksums = ['ip', 'udp', 'tcp'].flatMap((p) => ['-o', `${p}.check_checksum:TRUE`]);
  const out = execFileSync('tshark', ['-r', file, ...checksums, ...diameterPorts.flatMap((p) => ['-d', `tcp.port==${p},diameter`]), '-q', '-z', `expert,warn,${onPorts}`], { encoding: 'utf8' });
  return /Errors|Warnings|Malformed/.test(out) ? out : '';
}

function sipRequest(i: number, host: string): Buffer {
  const body = i % 2 ? '' : `v=0\r\no=- ${i} 1 IN IP4 ${host}\r\ns=pcap\r\nc=IN IP4 ${host}\r\nt=0 0\r\nm=audio ${20000 + 2 * i} RTP/AVP 0\r\n`;
  return Buffer.from(
    `MESSAGE sip:bob@${host} SIP/2.0\r\nVia: SIP/2.0/TLS ${host};branch=z9hG4bK-pcap-${i}\r\nFrom: <sip:alice@${host}>;tag=${i}\r\nTo: <sip:bob@${host}>\r\n` +
      `Call-ID: pcap-tls-${i}@pcap.test\r\nCSeq: ${i + 1} MESSAGE\r\nContent-Type: application/sdp\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );
}
const okTo = (req: Buffer) => {
  const text = req.toString('latin1');
  const h = (n: string) => new RegExp(`\\r\\n${n}: ([^\\r]+)`).exec(text)![1];
  return Buffer.from(`SIP/2.0 200 OK\r\nVia: ${h('Via')}\r\nCall-ID: ${h('Call-ID')}\r\nCSeq: ${h('CSeq')}\r\nContent-Length: 0\r\n\r\n`);
};

function startPeer(args: string[]): { proc: ChildProcess; output(): Buffer } {
  const proc = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'ignore'] });
  const out: Buffer[] = [];
  proc.stdout!.on('data', (d: Buffer) => out.push(d));
  proc.stdin!.on('error', () => {});
  return { proc, output: () => Buffer.concat(out) };
}

const listening = (port: number) => execFileSync('ss', ['-Hltn', `sport = :${port}`]).toString().trim() !== '';
const connected = (port: number) => execFileSync('ss', ['-Htn', 'state', 'established', `dport = :${port}`]).toString().trim() !== '';

describe.skipIf(!!why)('hepbpf tail --pcap', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-pcap-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('FILE: SIP over UDP (IPv4, IPv6), TCP (sipp, 60 KiB), TLS and Diameter over TCP (freeDiameter); tshark dissects every message byte for byte', async () => {
    const [udp4, udp4b, udp6, udp6b, uas, uac, big, tls, diaA, diaB] = await Promise.all(Array.from({ length: 10 }, () => freePort()));
    const ports = [udp4, udp4b, udp6, udp6b, uas, uac, big, tls, diaA, diaB];
    const dia = [diaA, diaB];
    const cert = join(dir, 'cert.pem');
    const certKey = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', certKey, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
    const file = join(dir, 'tail.pcapng');
    const wire = await LoopbackCapture.start(join(dir, 'wire.pcap'), ports);
    const tail = await startTail(['--pcap', file, ...sipPorts(ports)], tailEnv(dir));
    onTestFinished(() => void tail.stop()); // also when the test fails before it stops tail
    const tlsReqs = Array.from({ length: TLS_MESSAGES }, (_, i) => sipRequest(i, '127.0.0.1'));
    const tlsResps = tlsReqs.map(okTo);
    const peers: ChildProcess[] = [];
    let sipUas: Awaited<ReturnType<typeof sippUas>> | undefined;
    let fdA: FreeDiameter | undefined;
    let fdB: FreeDiameter | undefined;
    let wireMessages;
    try {
      traffic('udp-unconnected', udp4, udp4b);
      traffic('udp6', udp6, udp6b);
      sipUas = await sippUas(uas, 't1', dir);
      expect(await sippUac(uas, uac, 't1', 2, dir)).toBe(0);
      traffic('tcp-big', big);

      const srv = startPeer(['s_server', '-accept', `127.0.0.1:${tls}`, '-cert', cert, '-key', certKey, '-quiet', '-naccept', '1']);
      peers.push(srv.proc);
      await until('s_server listening', () => listening(tls));
      const cli = startPeer(['s_client', '-connect', `127.0.0.1:${tls}`, '-quiet']);
      peers.push(cli.proc);
      // Their libssl is the host's, probed before tail was ready (the loader paths of its root): no
      // wait for a probe, only for s_client to connect (it writes what it read after its handshake).
      await until('s_client connected', () => connected(tls));
      cli.proc.stdin!.write(Buffer.concat(tlsReqs));
      await until('requests decrypted by s_server', () => srv.output().length >= Buffer.concat(tlsReqs).length);
      srv.proc.stdin!.write(Buffer.concat(tlsResps));
      await until('responses decrypted by s_client', () => cli.output().length >= Buffer.concat(tlsResps).length);
      expect(srv.output().equals(Buffer.concat(tlsReqs))).toBe(true);

      // Two freeDiameter daemons: CER/CEA once both are up, DPR/DPA when A stops (and DWR/DWA if a watchdog falls in between).
      const a = { identity: 'a.test', port: diaA };
      const b = { identity: 'b.test', port: diaB };
      fdB = await startFreeDiameter(dir, b, [a]);
      fdA = await startFreeDiameter(dir, a, [b]);
      await until('freeDiameter a.test and b.test connected', () => /STATE_OPEN'\s+'b\.test'/.test(fdA!.log()) && /STATE_OPEN'\s+'a\.test'/.test(fdB!.log()), 30_000);
      await stopByPid(fdA.proc, 10_000);
    } finally {
      for (const p of peers) await stopByPid(p);
      await sipUas?.stop();
      if (fdA) await stopByPid(fdA.proc, 10_000);
      if (fdB) await stopByPid(fdB.proc, 10_000);
      wireMessages = await wire.stop(splitAny);
    }

    // The truth: every plaintext message on lo, and the TLS plaintext on its connection's tuple.
    const streams = wireMessages.filter((m) => m.srcPort === tls || m.dstPort === tls);
    const up = streams.find((m) => m.dstPort === tls)!;
    const down = streams.find((m) => m.srcPort === tls)!;
    expect(up.payload[0], 'TLS on the wire').toBe(0x16);
    const plain = wireMessages.filter((m) => m.srcPort !== tls && m.dstPort !== tls);
    expect(plain.filter((m) => m.payload[0] !== 1).length).toBe(1 + 2 + 12 + 1); // UDP 1 + 2 (IPv6), sipp 2 calls of 6, 60 KiB
    const diameterCommands = plain.filter((m) => m.payload[0] === 1).map((m) => `${m.payload.readUIntBE(5, 3)}${m.payload[4] & 0x80 ? 'R' : 'A'}`);
    // CER/CEA at least (DPR/DPA depend on freeDiameter's way out): every Diameter message on the wire is compared below.
    for (const c of ['257R', '257A']) expect(diameterCommands, `${c} on the wire\n${fdA!.log()}${fdB!.log()}`).toContain(c);
    const expected = [
      ...plain.map((m) => key(m.srcIp, m.srcPort, m.dstIp, m.dstPort, m.payload)),
      ...tlsReqs.map((p) => key(up.srcIp, up.srcPort, up.dstIp, up.dstPort, p)),
      ...tlsResps.map((p) => key(down.srcIp, down.srcPort, down.dstIp, down.dstPort, p)),
    ].sort();

    // What tail wrote, once it showed every message.
    const complete = () => dissect(file, ports, dia).length >= expected.length;
    await until('every message in the pcapng', complete, 20_000).catch(() => undefined); // fewer: the comparison says what is missing
    await tail.stop();
    const got = dissect(file, ports, dia);
    expect(got.map((d) => d.key).sort()).toEqual(expected);
    expect(expertWarnings(file, ports, dia)).toBe('');
    for (const d of got) {
      const tlsPacket = d.key.includes(`:${tls}>`) || d.key.includes(`>127.0.0.1:${tls}|`);
      const payload = Buffer.from(d.key.split('|')[1], 'base64');
      const corr = d.callId ?? '';
      expect(d.comment).toMatch(new RegExp(`^process [^;]+\\[\\d+\\]; container host; correlation id ${corr ? corr.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : '\\S+'}${tlsPacket ? '; TLS plaintext \\(decrypted by hepbpf\\), shown as TCP' : ''}$`));
      if (d.callId) expect(d.callId).toBe(callIdOf(payload));
    }
    expect(got.filter((d) => d.comment.includes('TLS plaintext')).length).toBe(2 * TLS_MESSAGES);
    expect(readFileSync(file).readUInt32LE(0)).toBe(0x0a0d0d0a);
  });

  it('-: pcapng on stdout, read live by tshark from a pipe; notices stay on stderr; exit 0 when the reader goes away', async () => {
    const [port, port2] = [await freePort(), await freePort()];
    // As `hepbpf tail --pcap - | tshark -i -`: tail's stdout is tshark's stdin.
    const tshark = spawn('tshark', ['-l', '-i', '-', '-T', 'fields', '-e', 'sip.Call-ID', '-e', 'udp.payload'], { stdio: ['pipe', 'pipe', 'ignore'] });
    onTestFinished(() => stopByPid(tshark));
    let seen = '';
    tshark.stdout!.on('data', (d) => (seen += d));
    const tail = await startTail(['--pcap', '-', '--port', String(port), ...sipPorts([port, port2])], tailEnv(dir), tshark.stdin!);
    onTestFinished(() => void tail.stop());
    const wire = await LoopbackCapture.start(join(dir, 'stdout.pcap'), [port]);
    let truth;
    try {
      traffic('udp-unconnected', port, port2);
    } finally {
      truth = await wire.stop();
    }
    // Live: tshark dissected it while tail still runs.
    await until('tshark showing the message', () => seen.includes('udp-unconnected-sendto'));
    expect(tail.proc.exitCode).toBe(null);
    const [callId, hex] = seen.trim().split('\t');
    expect(callId).toBe('udp-unconnected-sendto');
    expect(truth.length).toBe(1);
    expect(Buffer.from(hex.replace(/:/g, ''), 'hex').equals(truth[0].payload)).toBe(true);
    expect(tail.err()).toMatch(/^hepbpf tail: ready, capturing/);

    // The reader goes away: tail's next write fails (EPIPE) and it exits 0 by itself.
    await stopByPid(tshark);
    traffic('udp-unconnected', port, port2);
    await until('tail exiting once its reader is gone', () => tail.proc.exitCode !== null);
    expect(tail.proc.exitCode, tail.err()).toBe(0);
  });

  it('--call-id X --flow: one sipp call as a ladder, arrows in the order of the wire, no colour on a pipe', async () => {
    const [uas, uac] = [await freePort(), await freePort()];
    const callId = `flow-${process.pid}-${Date.now()}@pcap.test`;
    const tail = await startTail(['--call-id', callId, '--flow', ...sipPorts([uas, uac])], tailEnv(dir));
    onTestFinished(() => void tail.stop());
    const wire = await LoopbackCapture.start(join(dir, 'flow.pcap'), [uas, uac]);
    let sipUas: Awaited<ReturnType<typeof sippUas>> | undefined;
    let truth;
    try {
      sipUas = await sippUas(uas, 'u1', dir);
      expect(await sippUac(uas, uac, 'u1', 1, dir, 50, ['-sn', 'uac', '-cid_str', callId])).toBe(0);
    } finally {
      await sipUas?.stop();
      truth = await wire.stop();
    }
    // The call on the wire: INVITE, 180, 200, ACK, BYE, 200 (sipp's built-in scenarios).
    const labels = truth.map((m) => /^(?:SIP\/2\.0 (\d{3} [^\r]*)|(\w+) )/.exec(m.payload.toString('latin1'))!.slice(1).find(Boolean));
    expect(labels).toEqual(['INVITE', '180 Ringing', '200 OK', 'ACK', 'BYE', '200 OK']);
    const arrows = (out: string) => out.split('\n').filter((l) => l.startsWith('+')).length;
    await tail.waitForOutput((out) => arrows(out) >= labels.length).catch(() => undefined); // fewer: the comparison says what is missing
    expect(await tail.stop()).toBe(0);
    // Times vary from run to run: each is checked to grow, then shown as +t.ttt.
    const times = [...tail.out().matchAll(/^\+(\d+\.\d{3})/gm)].map((m) => Number(m[1]));
    expect(times).toEqual([...times].sort((x, y) => x - y));
    expect(times[0]).toBe(0);
    expect(tail.out().replace(/^\+\d+\.\d{3}/gm, '+t.ttt')).toBe(flowGolden(uac, uas));
  });
});

/** What `tail --call-id X --flow` printed for one call between sipp's built-in UAC on `uac` and UAS on `uas` (times as +t.ttt). */
const flowGolden = (uac: number, uas: number) => `    127.0.0.1:${uac}         127.0.0.1:${uas}
          sipp
            │                       │
+t.ttt      │─────── INVITE ───────>│
    127.0.0.1:${uac}         127.0.0.1:${uas}
          sipp                    sipp
            │                       │
+t.ttt      │<──── 180 Ringing ─────│
+t.ttt      │<─────── 200 OK ───────│
+t.ttt      │──────── ACK ─────────>│
+t.ttt      │──────── BYE ─────────>│
+t.ttt      │<─────── 200 OK ───────│
`;
