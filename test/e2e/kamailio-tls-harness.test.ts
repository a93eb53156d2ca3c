/**
 * The oracle of the TLS capture tests checks itself: 100 sipp calls through two Kamailio proxies
 * joined by TLS 1.3, without the agent. siptrace's report of what crossed the TLS hop must be
 * complete, exact and consistent with what tcpdump saw on lo (one connection, TLS records only).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kernelSuiteSkipReason } from '../helpers/agent.js';
import { startKamailioTlsHop, type TlsHopMessage } from '../helpers/kamailio-tls.js';
import { callIdOf, LoopbackCapture, splitSip } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('Kamailio TLS harness tests');

const CALLS = 100;

/** How many messages a sipp built-in scenario sends per call: its <send> elements (sipp -sd exits 1 after dumping). */
const sippSends = (scenario: 'uac' | 'uas') => (spawnSync('sipp', ['-sd', scenario], { encoding: 'utf8' }).stdout.match(/<send[\s>]/g) ?? []).length;

interface TlsRecord {
  type: number;
  body: Buffer;
}

/** Splits one direction of a TLS connection into records; throws unless the bytes are whole records. */
function tlsRecords(stream: Buffer): TlsRecord[] {
  const records: TlsRecord[] = [];
  for (let i = 0; i < stream.length; ) {
    if (i + 5 > stream.length) throw new Error(`TLS record header cut at ${i}`);
    const type = stream[i];
    const version = stream.readUInt16BE(i + 1);
    const len = stream.readUInt16BE(i + 3);
    if (type < 0x14 || type > 0x17 || (version !== 0x0301 && version !== 0x0303)) throw new Error(`not a TLS record at ${i}: type ${type}, version ${version.toString(16)}`);
    if (i + 5 + len > stream.length) throw new Error(`TLS record at ${i} cut: ${len} bytes announced`);
    records.push({ type, body: stream.subarray(i + 5, i + 5 + len) });
    i += 5 + len;
  }
  return records;
}

/** The version a ServerHello selects: its supported_versions extension (TLS 1.3), else its legacy version. */
function serverHelloVersion(record: TlsRecord): number {
  const b = record.body;
  if (record.type !== 0x16 || b[0] !== 2) throw new Error('first server record is not a ServerHello');
  let p = 4 + 2 + 32; // handshake header, legacy_version, random
  p += 1 + b[p]; // session id
  p += 2 + 1; // cipher suite, compression
  const end = p + 2 + b.readUInt16BE(p);
  for (p += 2; p + 4 <= end; p += 4 + b.readUInt16BE(p + 2)) if (b.readUInt16BE(p) === 43) return b.readUInt16BE(p + 4);
  return b.readUInt16BE(4);
}

/**
 * TLS 1.3 sends everything after the hellos as application-data records, each 17 bytes longer than
 * its plaintext (inner content type, 16-byte AEAD tag; OpenSSL adds no padding). Record and message
 * boundaries need not match (Kamailio sends what it queued during the handshake in one record), but
 * handshake messages and data never share a record. Returns how many application-data records come
 * before the ones whose plaintext is exactly `sip`; throws if no run of last records is.
 */
function sipRecords(records: TlsRecord[], sip: TlsHopMessage[]): number {
  const data = records.filter((r) => r.type === 0x17);
  let left = sip.reduce((n, m) => n + m.payload.length, 0);
  let i = data.length;
  while (left > 0 && i > 0) left -= data[--i].body.length - 17;
  if (left !== 0) throw new Error(`no run of last application-data records carries exactly the ${sip.length} SIP messages (${left} bytes off)`);
  return i;
}

/** "INVITE", "ACK", ... for a request; "180 INVITE", "200 BYE", ... (status and CSeq method) for a reply. */
function kind(m: TlsHopMessage): string {
  const text = m.payload.toString('latin1');
  const cseqMethod = /\r\nCSeq:[ \t]*\d+[ \t]+(\S+)/i.exec(text)?.[1];
  const status = /^SIP\/2\.0 (\d{3}) /.exec(text)?.[1];
  return status ? `${status} ${cseqMethod}` : text.slice(0, text.indexOf(' '));
}

describe.skipIf(!!why)('Kamailio edge -> TLS -> core: siptrace ground truth', () => {
  it(`reports every message of ${CALLS} calls once, whole, on one TLS 1.3 connection that carries no plaintext`, async () => {
    // The proxies forward statelessly (no 100 Trying of their own): every message sipp sends crosses the hop once.
    const perCall = sippSends('uac') + sippSends('uas');
    expect(perCall).toBe(6); // INVITE, ACK, BYE from the UAC; 180, 200, 200 from the UAS
    const dir = mkdtempSync(join(tmpdir(), 'hepbpf-kamailio-tls-'));
    const hop = await startKamailioTlsHop(dir).catch((err) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
    let capture: LoopbackCapture | undefined;
    try {
      expect(hop.pids.edge.length, 'edge: main process and workers').toBeGreaterThan(1);
      expect(hop.pids.core.length, 'core: main process and workers').toBeGreaterThan(1);
      capture = await LoopbackCapture.start(join(dir, 'tls.pcap'), [hop.corePort]);
      const code = await hop.runCalls(CALLS);
      const messages = await hop.waitForTlsMessages(CALLS * perCall);
      const wire = await capture.stop((stream) => [stream]);
      capture = undefined;
      expect(code, 'sipp UAC: every call must succeed').toBe(0);

      expect(messages.length).toBe(CALLS * perCall);
      for (const m of messages) {
        const text = m.payload.toString('latin1');
        expect(splitSip(m.payload), `a whole SIP message: ${text.slice(0, 60)}`).toEqual([m.payload]);
        const length = /\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)/i.exec(text)?.[1];
        expect(Number(length), 'Content-Length present and equal to the body').toBe(m.payload.length - text.indexOf('\r\n\r\n') - 4);
      }

      // Per call: the core received the UAC's requests, the edge the UAS's replies, nothing else.
      const calls = new Map<string, string[]>();
      for (const m of messages) {
        const id = callIdOf(m.payload)!;
        calls.set(id, [...(calls.get(id) ?? []), `${m.receiver}: ${kind(m)}`]);
      }
      expect(calls.size).toBe(CALLS);
      const want = ['core: INVITE', 'edge: 180 INVITE', 'edge: 200 INVITE', 'core: ACK', 'core: BYE', 'edge: 200 BYE'].sort();
      expect([...calls.values()].map((k) => k.sort()).filter((k) => JSON.stringify(k) !== JSON.stringify(want)).slice(0, 3)).toEqual([]);

      // One connection: the core's TLS port on one side, one ephemeral edge port on the other.
      const edgeSide = new Set(messages.map((m) => (m.receiver === 'core' ? m.srcPort : m.dstPort)));
      expect(edgeSide.size, 'one TLS connection').toBe(1);
      const [ephemeral] = edgeSide;
      expect(ephemeral).not.toBe(hop.corePort);
      for (const m of messages) {
        expect(m.ipProto).toBe(22);
        expect([m.srcIp, m.dstIp]).toEqual(['127.0.0.1', '127.0.0.1']);
        expect(m.receiver === 'core' ? [m.srcPort, m.dstPort] : [m.dstPort, m.srcPort]).toEqual([ephemeral, hop.corePort]);
      }

      // tcpdump on lo: that one connection, carrying TLS 1.3 records and no SIP in the clear.
      const streams = wire.filter((w) => w.transport === 'tcp');
      expect(streams.map((w) => `${w.srcPort}>${w.dstPort}`).sort()).toEqual([`${ephemeral}>${hop.corePort}`, `${hop.corePort}>${ephemeral}`].sort());
      const toCore = tlsRecords(streams.find((w) => w.dstPort === hop.corePort)!.payload);
      const toEdge = tlsRecords(streams.find((w) => w.srcPort === hop.corePort)!.payload);
      expect(toCore[0].type, 'ClientHello').toBe(0x16);
      expect(serverHelloVersion(toEdge[0]).toString(16), 'negotiated TLS version').toBe('304');
      // Every SIP byte travelled encrypted, and nothing else after the handshake: the SIP messages each
      // side received are exactly the plaintext of the sender's last application-data records.
      expect(sipRecords(toCore, messages.filter((m) => m.receiver === 'core')), 'before the requests: the client Finished').toBe(1);
      expect(sipRecords(toEdge, messages.filter((m) => m.receiver === 'edge')), 'before the replies: the server flight, at least its Finished').toBeGreaterThan(0);
      for (const w of streams) {
        expect(w.payload.includes('INVITE sip:'), 'plaintext INVITE on the wire').toBe(false);
        expect(w.payload.includes('SIP/2.0'), 'plaintext SIP on the wire').toBe(false);
      }
    } finally {
      await capture?.stop().catch(() => []);
      await hop.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    const alive = [...hop.pids.edge, ...hop.pids.core].filter((pid) => existsSync(`/proc/${pid}`));
    expect(alive, 'Kamailio processes left running').toEqual([]);
  });
});
