/**
 * The pcapng writer against tshark (Debian's, the oracle): recorded tail events of every transport
 * become a file tshark reads without a single expert error, dissecting each SIP and Diameter message
 * with its exact bytes, time and comment. The end-to-end form (real capture) is test/e2e/pcap.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packetComment, PcapngWriter } from '../../src/output/pcapng.js';
import type { TailEventFields } from '../../src/output/tail-protocol.js';
import { diameterMessage } from '../helpers/diameter.js';

const dir = mkdtempSync(join(tmpdir(), 'hepbpf-pcapng-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sip = (method: string, callId: string, host: string, body = '') =>
  Buffer.from(
    `${method} sip:bob@${host} SIP/2.0\r\nVia: SIP/2.0/UDP ${host};branch=z9hG4bK-${callId}\r\nFrom: <sip:alice@${host}>;tag=1\r\n` +
      `To: <sip:bob@${host}>\r\nCall-ID: ${callId}\r\nCSeq: 1 ${method}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );

function event(transport: string, src: [string, number], dst: [string, number], payload: Buffer, us: number, extra: Partial<TailEventFields> = {}): TailEventFields {
  return {
    ts: `2026-12-02T06:00:00.${String(us).padStart(6, '0')}Z`,
    proto: payload[0] === 1 ? 'diameter' : 'sip',
    transport,
    src: { ip: src[0], port: src[1] },
    dst: { ip: dst[0], port: dst[1] },
    pid: 42,
    comm: 'kamailio',
    cgroupId: '1',
    correlationId: `corr-${us}`,
    summary: '',
    size: payload.length,
    truncated: false,
    connectionUnknown: false,
    payload,
    container: null,
    peerContainer: null,
    ...extra,
  };
}

/** tshark's fields of every frame, one array per frame. */
function tsharkFields(file: string, fields: string[], extra: string[] = []): string[][] {
  const out = execFileSync('tshark', ['-r', file, '-o', 'tcp.desegment_tcp_streams:TRUE', ...extra, '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

describe('pcapng export', () => {
  it('UDP (IPv4, IPv6), TCP (a 40 kB message cut in segments, then a reply), TLS and Diameter: tshark dissects each, byte for byte, without errors', () => {
    const big = sip('MESSAGE', 'big@tcp', '127.0.0.1', 'x'.repeat(40_000));
    const cer = diameterMessage({ request: true, command: 257, app: 0, hopByHop: 1, endToEnd: 2, avps: [{ code: 264, value: 'client.test' }, { code: 296, value: 'test' }] });
    const cea = diameterMessage({ request: false, command: 257, app: 0, hopByHop: 1, endToEnd: 2, avps: [{ code: 268, value: 2001 }, { code: 264, value: 'server.test' }] });
    const events = [
      event('udp', ['127.0.0.1', 40000], ['127.0.0.1', 5060], sip('OPTIONS', 'udp4', '127.0.0.1'), 1),
      event('udp', ['::1', 40001], ['::1', 5060], sip('OPTIONS', 'udp6', '[::1]'), 2),
      event('tcp', ['127.0.0.1', 40002], ['127.0.0.1', 5060], big, 3),
      event('tcp', ['127.0.0.1', 5060], ['127.0.0.1', 40002], sip('MESSAGE', 'reply@tcp', '127.0.0.1'), 4),
      event('tls', ['127.0.0.1', 40003], ['127.0.0.1', 5061], sip('INVITE', 'tls', '127.0.0.1'), 5, {
        container: { id: 'abcdef0123456789', name: 'pbx', runtime: 'docker' },
      }),
      event('tcp', ['::1', 40004], ['::1', 3868], cer, 6),
      event('tcp', ['::1', 3868], ['::1', 40004], cea, 7),
    ];
    const w = new PcapngWriter();
    const file = join(dir, 'all.pcapng');
    writeFileSync(file, Buffer.concat([w.header(), ...events.map((e) => w.packets(e))]));

    // Every header correct: no expert info of warning level or worse, no malformed packet.
    const expert = execFileSync('tshark', ['-r', file, '-q', '-z', 'expert,warn'], { encoding: 'utf8' });
    expect(expert).not.toMatch(/Errors|Warnings|Malformed/);

    const frames = tsharkFields(file, ['frame.number', 'frame.time_epoch', 'frame.comment', 'ip.checksum.status', 'udp.checksum.status', 'tcp.checksum.status', 'sip.Call-ID', 'diameter.cmd.code', 'tcp.reassembled.data', 'udp.payload', 'tcp.payload'], [
      '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE',
    ]);
    // The 40 kB message went out in 3 segments: 9 frames.
    expect(frames.length).toBe(9);
    // Checksum status 1: good (0 bad, 2 unverified); IPv6 has no header checksum, each frame one of UDP or TCP.
    for (const f of frames) expect({ ip: f[3], l4: f[4] + f[5] }).toEqual({ ip: f[3] && '1', l4: '1' });
    const dissected = frames.filter((f) => f[6] || f[7]);
    expect(dissected.map((f) => f[6] || `diameter ${f[7]}`)).toEqual(['udp4', 'udp6', 'big@tcp', 'reply@tcp', 'tls', 'diameter 257', 'diameter 257']);
    // Bytes: the reassembled (or single) payload of each dissected frame is the message.
    const bytes = dissected.map((f) => Buffer.from((f[8] || f[9] || f[10]).replace(/:/g, ''), 'hex'));
    expect(bytes).toEqual(events.map((e) => Buffer.from(e.payload)));
    // Times to the microsecond the events carry, comments naming process, container, correlation id, TLS.
    expect(dissected.map((f) => f[1])).toEqual(events.map((_, i) => `1796191200.00000${i + 1}000`));
    expect(dissected[0][2]).toBe('process kamailio[42]; container host; correlation id corr-1');
    expect(dissected[4][2]).toBe('process kamailio[42]; container pbx; correlation id corr-5; TLS plaintext (decrypted by hepbpf), shown as TCP');
  });

  it('names what a message shown as TCP really travelled in: TLS, WebSocket (frames removed), SCTP', () => {
    const comment = (transport: string) => packetComment(event(transport, ['127.0.0.1', 1], ['127.0.0.1', 2], sip('OPTIONS', 'c', 'h'), 1));
    expect(comment('tcp')).toBe('process kamailio[42]; container host; correlation id corr-1');
    expect(comment('wss')).toBe('process kamailio[42]; container host; correlation id corr-1; TLS plaintext (decrypted by hepbpf), WebSocket message without its frames, shown as TCP');
    expect(comment('ws')).toMatch(/; WebSocket message without its frames, shown as TCP$/);
    expect(comment('sctp')).toMatch(/; SCTP, shown as TCP$/);
  });
});
