/** TLS records without a kernel: late attribution, per-connection streams, the HEP IP protocol of TLS. */
import { createSocket } from 'node:dgram';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { CaptureEvent } from '../../src/enrich/event.js';
import { decodeBatch, F_NO_CONN, F_NO_PEER, F_TLS, SRC_TLS_CONN } from '../../src/capture/record.js';
import { TlsAttribution } from '../../src/capture/tls-attribution.js';
import { decodeHep } from '../../src/hep/decode.js';
import { HepForwarder } from '../../src/output/hep-forwarder.js';
import { createSenders } from '../../src/output/hep-forwarder.js';
import { parseHepTarget } from '../../src/output/target.js';
import { StreamAssembler } from '../../src/stream/assembler.js';
import type { Message } from '../../src/stream/message.js';
import { batchOf, encodeRecord, type RecordSpec } from '../../src/capture/replay.js';
import { sipMessage } from './records.js';

const SRC_SSL_WRITE = 11;
const SRC_SSL_READ = 12;
const TLS = 0x1234n;
const CLIENT = [127, 0, 0, 1];
const SERVER = [127, 0, 0, 2];

/** A plaintext record of TLS connection TLS in pid 100, with or without its socket. */
const plaintext = (data: Buffer, known: boolean, spec: Partial<RecordSpec> = {}): Buffer =>
  encodeRecord({
    tlsId: TLS,
    ipProto: 6,
    source: SRC_SSL_WRITE,
    flags: known ? F_TLS : F_TLS | F_NO_CONN | F_NO_PEER,
    sockId: known ? 0xffff888000002000n : 0n,
    localAddr: known ? CLIENT : [0, 0, 0, 0],
    remoteAddr: known ? SERVER : [0, 0, 0, 0],
    localPort: known ? 40000 : 0,
    remotePort: known ? 5061 : 0,
    data,
    ...spec,
  });

/** The kernel's notice that TLS's socket is now known. */
const connNotice = () =>
  encodeRecord({ tlsId: TLS, ipProto: 6, source: SRC_TLS_CONN, flags: 0, sockId: 0xffff888000002000n, localAddr: CLIENT, remoteAddr: SERVER, localPort: 40000, remotePort: 5061, l7: 0, data: Buffer.alloc(0) });

function pipeline() {
  const messages: Message[] = [];
  const assembler = new StreamAssembler((m) => messages.push({ ...m, payload: Buffer.from(m.payload) }));
  const tls = new TlsAttribution((r) => assembler.push(r), 1_000_000_000n, 4096);
  const feed = (...records: Buffer[]) => decodeBatch(batchOf(records), (r) => tls.push(r));
  return { messages, tls, feed };
}

describe('TLS plaintext before its socket is known (memory BIO)', () => {
  const a = sipMessage('tls-a');
  const b = sipMessage('tls-b');

  it('waits for the connection notice, then goes on with its addresses, in order', () => {
    const { messages, tls, feed } = pipeline();
    // The first message cut across two SSL_writes, both before the ciphertext went out.
    feed(plaintext(a.subarray(0, 50), false), plaintext(Buffer.concat([a.subarray(50), b]), false));
    expect(messages).toEqual([]);
    expect(tls.heldRecords).toBe(2);
    feed(connNotice());
    expect(messages.map((m) => m.payload.toString())).toEqual([a.toString(), b.toString()]);
    for (const m of messages) {
      expect(m).toMatchObject({ transport: 'tls', src: { ip: '127.0.0.1', port: 40000 }, dst: { ip: '127.0.0.2', port: 5061 }, connectionUnknown: false, peerUnknown: false });
    }
    expect([tls.attributedLate, tls.unattributed, tls.heldRecords]).toEqual([2, 0, 0]);
  });

  it('takes the addresses from the next record of the same connection when no notice comes first', () => {
    const { messages, tls, feed } = pipeline();
    feed(plaintext(a, false), plaintext(b, true));
    expect(messages.map((m) => [m.payload.toString(), m.src.port])).toEqual([[a.toString(), 40000], [b.toString(), 40000]]);
    expect(tls.attributedLate).toBe(1);
  });

  it('forwards what no record names within the hold time with empty addresses, marked and counted', () => {
    const { messages, tls, feed } = pipeline();
    feed(plaintext(a, false, { tsNs: 5_000_000n }));
    tls.expire(5_000_000n + 999_999_999n);
    expect(messages).toEqual([]);
    tls.expire(5_000_000n + 1_000_000_000n);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatchObject({ connectionUnknown: true, src: { ip: '0.0.0.0', port: 0 }, dst: { ip: '0.0.0.0', port: 0 } });
    expect(messages[0].payload.equals(a)).toBe(true);
    expect(tls.unattributed).toBe(1);
  });

  it('holds a bounded number of bytes: past it the oldest connection goes out unattributed, the rest keeps waiting', () => {
    const { messages, tls, feed } = pipeline();
    const big = sipMessage('big', 'x'.repeat(3800)); // fits alone, not with a
    feed(plaintext(big, false, { tlsId: 1n }), plaintext(a, false, { tlsId: 2n }));
    expect(tls.unattributed).toBe(1);
    expect(messages.map((m) => m.payload.toString())).toEqual([big.toString()]);
    tls.flush();
    expect(messages.map((m) => m.payload.toString())).toEqual([big.toString(), a.toString()]);
    expect(tls.unattributed).toBe(2);
  });

  it('keeps two connections of one process and the same connection id in two processes apart', () => {
    const { messages, feed } = pipeline();
    feed(
      plaintext(a.subarray(0, 30), true, { tlsId: 1n }),
      plaintext(b.subarray(0, 30), true, { tlsId: 2n }),
      plaintext(a.subarray(0, 30), true, { tlsId: 1n, pid: 200 }),
      plaintext(a.subarray(30), true, { tlsId: 1n }),
      plaintext(b.subarray(30), true, { tlsId: 2n }),
    );
    expect(messages.map((m) => m.payload.toString())).toEqual([a.toString(), b.toString()]);
  });

  it('frames plaintext read by the receiver (SSL_read) as ingress of the same connection', () => {
    const { messages, feed } = pipeline();
    feed(plaintext(Buffer.concat([a, b]), true, { source: SRC_SSL_READ, direction: 1 }));
    expect(messages.map((m) => [m.direction, m.src.port, m.dst.port])).toEqual([
      ['ingress', 5061, 40000],
      ['ingress', 5061, 40000],
    ]);
  });
});

describe('HEP IP protocol of TLS', () => {
  async function forwardedIpProto(tlsIpProto?: number): Promise<number | undefined> {
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const got = new Promise<Buffer>((r) => sock.once('message', r));
    const fwd = new HepForwarder(createSenders([[parseHepTarget(`udp://127.0.0.1:${sock.address().port}`)]], pino({ level: 'silent' })), { captureId: 1 }, { tlsIpProto });
    await new Promise((r) => setTimeout(r, 50)); // the UDP sender drops (and counts) until its socket is connected
    const asm = new StreamAssembler((message) => {
      const ev: CaptureEvent = { message, payload: message.payload, summary: 'MESSAGE', wallUs: 1, correlationId: 'p', container: null, peerContainer: null };
      fwd.forward(ev);
    });
    decodeBatch(batchOf([plaintext(sipMessage('p'), true)]), (r) => asm.push(r));
    const packet = decodeHep(await got);
    await fwd.close();
    sock.close();
    return packet.ipProto;
  }

  it('is 22 as Kamailio siptrace marks TLS, or 6 when the operator asks', async () => {
    expect(await forwardedIpProto()).toBe(22);
    expect(await forwardedIpProto(6)).toBe(6);
  });
});
