/**
 * Default redaction on the real agent: the IMS AKA keys `ck`/`ik` of the S-CSCF's 401
 * (TS 24.229) and SDP `a=key-mgmt:mikey` data, in SIP over UDP and over TLS. What crossed the
 * connection (tcpdump on lo for UDP; for TLS what each Node tls peer decrypted) carries the secrets;
 * what the agent forwarded must be the same bytes with exactly the secrets' bytes turned to 'X'.
 */
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { udpCollector, type HepCollector } from '../helpers/collector.js';
import { startTlsPeers } from '../helpers/tls-pipe.js';
import { LoopbackCapture } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end redaction tests');

const CK = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
const IK = '0f9e8d7c6b5a49382716a5b4c3d2e1f0';
const MIKEY = 'AQAFgM0XflABAAAAAAAAAAAAAAYAyO3rnQAAAAAJAQAEEQQXdZqh/5C4j0e2HbQqrP4wbgQBAAAQFzNNPgACAQAKAgEBAgEBAgEAAAIAAAA=';
const SECRETS = [CK, IK, MIKEY];

/** A REGISTER (no secret), the S-CSCF's 401 with ck/ik, and an INVITE with MIKEY, each with `transport` in its Via. */
function messages(transport: string, tag: string): Buffer[] {
  const head = (start: string, cseq: string) =>
    `${start}\r\nVia: SIP/2.0/${transport} 127.0.0.1;branch=z9hG4bK-${tag}\r\nFrom: <sip:alice@ims.test>;tag=a-${tag}\r\nTo: <sip:alice@ims.test>\r\n` +
    `Call-ID: redact-${tag}\r\nCSeq: ${cseq}\r\n`;
  const sdp = `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=key-mgmt:mikey ${MIKEY}\r\n`;
  return [
    `${head('REGISTER sip:ims.test SIP/2.0', '1 REGISTER')}Authorization: Digest username="alice@ims.test", realm="ims.test", nonce="", uri="sip:ims.test", response=""\r\nContent-Length: 0\r\n\r\n`,
    `${head('SIP/2.0 401 Unauthorized', '1 REGISTER')}WWW-Authenticate: Digest realm="ims.test", nonce="CjkyMzRmMjIwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", algorithm=AKAv1-MD5, ck="${CK}", ik="${IK}"\r\nContent-Length: 0\r\n\r\n`,
    `${head('INVITE sip:bob@ims.test SIP/2.0', '2 INVITE')}Content-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`,
  ].map((m) => Buffer.from(m));
}

/** What the agent must forward for `wire`: each secret's bytes 'X', nothing else changed (no code from src/). */
const maskedCopy = (wire: Buffer) => Buffer.from(SECRETS.reduce((m, s) => m.split(s).join('X'.repeat(s.length)), wire.toString('latin1')), 'latin1');

describe.skipIf(!!why)('redaction of IMS AKA keys and MIKEY on the real agent', () => {
  let dir: string;
  let hep: HepCollector;
  let agent: RunningAgent;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-redact-'));
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url]);
  });

  afterAll(async () => {
    await agent?.stop();
    await hep?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The forwarded payloads of messages whose Call-ID is redact-`tag`, in arrival order. */
  const forwardedOf = (tag: string) =>
    hep.packets.map((p) => decodeHep(p)).filter((p) => p.payload!.includes(`Call-ID: redact-${tag}\r\n`));

  it('SIP over UDP: each secret masked where it is on the wire, every other byte identical', async () => {
    const [a, b] = [createSocket('udp4'), createSocket('udp4')];
    const received: Buffer[] = [];
    b.on('message', (m) => received.push(m));
    a.on('message', (m) => received.push(m));
    await Promise.all([a, b].map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))));
    const [pa, pb] = [a.address().port, b.address().port];
    const capture = await LoopbackCapture.start(join(dir, 'udp.pcap'), [pa, pb]);
    let wire;
    try {
      const [register, challenge, invite] = messages('UDP', 'udp');
      const send = async (from: typeof a, to: number, m: Buffer) => {
        const want = received.length + 1;
        from.send(m, to, '127.0.0.1');
        await until('datagram received', () => received.length >= want);
      };
      await send(a, pb, register);
      await send(b, pa, challenge);
      await send(a, pb, invite);
    } finally {
      wire = await capture.stop();
      a.close();
      b.close();
    }
    expect(wire.map((m) => m.payload.toString('latin1'))).toEqual(messages('UDP', 'udp').map((m) => m.toString('latin1')));
    await until('3 UDP messages forwarded', () => forwardedOf('udp').length >= 3);
    await hep.waitFor(hep.packets.length, 1, 500); // settle: a duplicate would show
    const got = forwardedOf('udp');
    expect(got.map((p) => `${p.srcPort}>${p.dstPort}`)).toEqual(wire.map((m) => `${m.srcPort}>${m.dstPort}`));
    expect(got.map((p) => p.payload!.toString('latin1'))).toEqual(wire.map((m) => maskedCopy(m.payload).toString('latin1')));
    // The secrets were on the wire, and the masks are exactly their bytes: 32 + 32 + the MIKEY data.
    const changed = wire.map((m, i) => [...m.payload].filter((byte, j) => byte !== got[i].payload![j]).length);
    expect(changed).toEqual([0, 64, MIKEY.length - [...MIKEY].filter((c) => c === 'X').length]);
  });

  it('SIP over TLS (Node tls peers): the same, against what each peer decrypted', async () => {
    const [register, challenge, invite] = messages('TLS', 'tls');
    const peers = await startTlsPeers(dir);
    const port = peers.port;
    try {
      await peers.send(peers.client, register);
      await peers.send(peers.server, challenge);
      await peers.send(peers.client, invite);
      expect(peers.server.out().toString('latin1')).toBe(Buffer.concat([register, invite]).toString('latin1'));
      expect(peers.client.out().toString('latin1')).toBe(challenge.toString('latin1'));
    } finally {
      await peers.stop();
    }
    await until('3 TLS messages forwarded', () => forwardedOf('tls').length >= 3);
    await hep.waitFor(hep.packets.length, 1, 500);
    const got = forwardedOf('tls');
    expect(got.map((p) => (p.dstPort === port ? 'to server' : p.srcPort === port ? 'from server' : '?'))).toEqual(['to server', 'from server', 'to server']);
    expect(got.map((p) => p.payload!.toString('latin1'))).toEqual([register, challenge, invite].map((m) => maskedCopy(m).toString('latin1')));
    expect(got[1].payload!.toString('latin1')).toContain(`ck="${'X'.repeat(32)}", ik="${'X'.repeat(32)}"\r\n`);
    expect(got[2].payload!.toString('latin1')).toContain(`a=key-mgmt:mikey ${'X'.repeat(MIKEY.length)}\r\n`);
  });
});
