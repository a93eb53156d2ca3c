import { describe, expect, it } from 'vitest';
import { decodeBatch } from '../../src/capture/record.js';
import { StreamAssembler } from '../../src/stream/assembler.js';
import { DiameterFramer } from '../../src/stream/diameter-framer.js';
import type { FramerStats } from '../../src/stream/framer.js';
import type { Message } from '../../src/stream/message.js';
import { diameterJsonBytes, diameterSummary, MAX_GROUP_DEPTH, parseDiameter, type DiameterInfo, type DiameterJson } from '../../src/protocols/diameter.js';
import { avp, diameterMessage, diameterResyncChain, TGPP, type AvpSpec } from '../helpers/diameter.js';
import { batchOf, encodeRecord } from '../../src/capture/replay.js';

/** The HEP payload of a Diameter message, read back. */
const diameterJson = (d: DiameterInfo): DiameterJson => JSON.parse(diameterJsonBytes(d).toString());

const cer = diameterMessage({
  request: true,
  command: 257,
  app: 0,
  hopByHop: 0x1111,
  endToEnd: 0x2222,
  avps: [
    { code: 264, value: 'pcscf.ims.test' },
    { code: 296, value: 'ims.test' },
    { code: 257, value: Buffer.from([0, 1, 127, 0, 0, 1]) },
    { code: 266, value: 0 },
    { code: 269, value: 'test' },
  ],
});
const aar = diameterMessage({
  request: true,
  proxiable: true,
  command: 265,
  app: 16777236,
  hopByHop: 7,
  endToEnd: 9,
  avps: [
    { code: 263, value: 'pcscf.ims.test;1;rx' },
    { code: 505, vendor: TGPP, value: Buffer.from('icid-0001') },
    {
      code: 517,
      vendor: TGPP,
      value: [
        { code: 518, vendor: TGPP, value: 1 },
        { code: 520, vendor: TGPP, value: 0 },
      ],
    },
    { code: 9999, vendor: 12345, value: Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x01]) },
  ],
});

function framer() {
  const stats: FramerStats = { messages: 0, discardedBytes: 0, truncatedMessages: 0 };
  const dstats = { malformed: 0 };
  const out: Array<{ bytes: Buffer; size: number; truncated: boolean }> = [];
  const f = new DiameterFramer(stats, dstats, (p, size, truncated) => out.push({ bytes: Buffer.from(p), size, truncated }));
  return { f, out, stats, dstats };
}

describe('Diameter framing by the 24-bit length', () => {
  it('frames several messages in one segment, whatever the split point', () => {
    const stream = Buffer.concat([cer, aar, cer]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const { f, out, dstats } = framer();
      f.push(stream.subarray(0, cut));
      f.push(stream.subarray(cut));
      expect(out.map((m) => m.bytes)).toEqual([cer, aar, cer]);
      expect(dstats.malformed).toBe(0);
    }
  });

  it('frames one message arriving across many segments (a byte at a time)', () => {
    const { f, out } = framer();
    for (const b of aar) f.push(Buffer.from([b]));
    expect(out.map((m) => m.bytes)).toEqual([aar]);
  });

  it('a truncated header followed by a valid message: counted, and the message is framed', () => {
    const { f, out, dstats } = framer();
    f.push(Buffer.concat([aar.subarray(0, 12), cer]));
    expect(out.map((m) => m.bytes)).toEqual([cer]);
    expect(dstats.malformed).toBe(1);
  });

  it('a 16 MiB length claim: counted, resynchronised on the next message', () => {
    const bogus = Buffer.from(cer);
    bogus.writeUIntBE(0xfffffc, 1, 3);
    const { f, out, dstats } = framer();
    f.push(Buffer.concat([bogus.subarray(0, 40), aar]));
    expect(out.map((m) => m.bytes)).toEqual([aar]);
    expect(dstats.malformed).toBe(1);
    expect(f.buffered).toBe(0);
  });

  it('an AVP length running past the message: counted, the next message is framed', () => {
    const bad = Buffer.from(cer);
    bad.writeUIntBE(200, 20 + 5, 3); // first AVP claims 200 bytes
    const { f, out, dstats } = framer();
    f.push(Buffer.concat([bad, aar]));
    expect(out.map((m) => m.bytes)).toEqual([aar]);
    expect(dstats.malformed).toBe(1);
  });

  it('random bytes then a message: the message is framed', () => {
    const { f, out } = framer();
    const junk = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37 + 11) & 0xff));
    f.push(Buffer.concat([junk, cer]));
    expect(out.map((m) => m.bytes)).toEqual([cer]);
  });

  it('messages among header candidates that share AVP chains: each framed, the candidates counted once per run', () => {
    // Resynchronising over the crafted candidates reads AVPs through shared chains; the messages
    // after them, between them and a second run, and after that are framed as a walk would frame them.
    const { f, out, dstats, stats } = framer();
    const chain = diameterResyncChain(4096);
    f.push(Buffer.concat([chain, cer, chain, aar, cer]));
    expect(out.map((m) => m.bytes)).toEqual([cer, aar, cer]);
    expect(dstats.malformed).toBe(2);
    expect(stats.discardedBytes).toBe(2 * chain.length);
  });

  it('a message over 64 KiB is emitted cut and flagged; the next one is framed whole', () => {
    const big = diameterMessage({ request: true, command: 272, app: 4, hopByHop: 1, endToEnd: 1, avps: [{ code: 263, value: 's' }, { code: 606, vendor: TGPP, value: Buffer.alloc(70_000, 0x41) }] });
    const { f, out } = framer();
    f.push(Buffer.concat([big, cer]));
    expect(out.map((m) => [m.bytes.length, m.size, m.truncated])).toEqual([
      [65536, big.length, true],
      [cer.length, cer.length, false],
    ]);
  });
});

describe('Diameter decoding', () => {
  it('header, vendor-specific and grouped AVPs, unknown AVPs kept as code/vendor/hex', () => {
    const d = parseDiameter(aar)!;
    expect(d).toMatchObject({ request: true, proxiable: true, error: false, retransmit: false, commandCode: 265, applicationId: 16777236, hopByHop: 7, endToEnd: 9 });
    expect(d.sessionId).toBe('pcscf.ims.test;1;rx');
    expect(diameterSummary(d)).toBe('AAR Rx');
    const json = diameterJson(d);
    expect(json).toMatchObject({ command: 'AA-Request', application: 'Rx', length: aar.length, flags: { request: true, proxiable: true } });
    expect(json.avps).toEqual([
      { code: 263, flags: 'M', name: 'Session-Id', value: 'pcscf.ims.test;1;rx' },
      { code: 505, vendorId: TGPP, flags: 'VM', name: 'AF-Charging-Identifier', hex: Buffer.from('icid-0001').toString('hex') },
      {
        code: 517,
        vendorId: TGPP,
        flags: 'VM',
        name: 'Media-Component-Description',
        avps: [
          { code: 518, vendorId: TGPP, flags: 'VM', name: 'Media-Component-Number', value: 1 },
          { code: 520, vendorId: TGPP, flags: 'VM', name: 'Media-Type', value: 0 },
        ],
      },
      { code: 9999, vendorId: 12345, flags: 'VM', hex: 'deadbeef01' },
    ]);
  });

  it('answers: result code, and latency in the summary', () => {
    const aaa = diameterMessage({ request: false, command: 265, app: 16777236, hopByHop: 7, endToEnd: 9, avps: [{ code: 263, value: 's' }, { code: 268, value: 2001 }] });
    expect(diameterSummary(parseDiameter(aaa)!, 412)).toBe('AAA 2001 (412 ms)');
    const cea = diameterMessage({ request: false, command: 257, app: 0, hopByHop: 1, endToEnd: 1, avps: [{ code: 268, value: 2001 }] });
    expect(diameterSummary(parseDiameter(cea)!)).toBe('CEA 2001');
    expect(diameterSummary(parseDiameter(cer)!)).toBe('CER');
    const exp = diameterMessage({ request: false, command: 303, app: 16777216, hopByHop: 1, endToEnd: 1, avps: [{ code: 297, value: [{ code: 266, value: TGPP }, { code: 298, value: 2001 }] }] });
    expect(diameterSummary(parseDiameter(exp)!)).toBe('MAA 2001');
    const typed = diameterJson(parseDiameter(cer)!);
    expect(typed.avps[2]).toEqual({ code: 257, flags: 'M', name: 'Host-IP-Address', value: '127.0.0.1' });
  });

  it('a grouped AVP nested too deep is kept as hex and reported', () => {
    let inner: AvpSpec = { code: 263, value: 'x' };
    for (let i = 0; i < MAX_GROUP_DEPTH + 2; i++) inner = { code: 873, vendor: TGPP, value: [inner] };
    const d = parseDiameter(diameterMessage({ request: true, command: 272, app: 4, hopByHop: 1, endToEnd: 1, avps: [inner] }))!;
    expect(d.malformed).toMatch(/nested deeper/);
    let depth = 0;
    for (let a = d.avps[0]; a.avps; a = a.avps[0]) depth++;
    expect(depth).toBe(MAX_GROUP_DEPTH - 1);
  });

  it('a grouped AVP whose child runs past it is reported; what decoded before is kept', () => {
    const msg = diameterMessage({ request: true, command: 272, app: 4, hopByHop: 1, endToEnd: 1, avps: [{ code: 263, value: 's' }, { code: 443, value: [{ code: 450, value: 0 }] }] });
    const inner = 20 + avp({ code: 263, value: 's' }).length + 8;
    msg.writeUIntBE(40, inner + 5, 3);
    const d = parseDiameter(msg)!;
    expect(d.sessionId).toBe('s');
    expect(d.malformed).toMatch(/runs past/);
  });
});

describe('SCTP records (recorded: this kernel has no SCTP)', () => {
  it('each sendmsg/recvmsg record of an SCTP association is framed as Diameter with transport sctp', () => {
    const out: Message[] = [];
    const asm = new StreamAssembler((m) => out.push({ ...m, payload: Buffer.from(m.payload) }));
    const recs = [cer, aar].map((data, i) => encodeRecord({ data, ipProto: 132, l7: 2, localPort: 3868, remotePort: 40000, tsNs: BigInt(i + 1) }));
    decodeBatch(batchOf(recs), (r) => asm.push(r));
    expect(out.map((m) => [m.proto, m.transport, m.src.port, m.dst.port])).toEqual([
      ['diameter', 'sctp', 3868, 40000],
      ['diameter', 'sctp', 3868, 40000],
    ]);
    expect(out.map((m) => m.payload)).toEqual([cer, aar]);
  });
});
