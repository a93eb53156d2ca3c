import { describe, expect, it } from 'vitest';
import { Correlator, identityKey } from '../../src/enrich/correlation.js';
import { redactDiameter, redactSip } from '../../src/enrich/redact.js';
import { parseDiameter } from '../../src/protocols/diameter.js';
import { parseSip } from '../../src/protocols/sip.js';
import type { Message } from '../../src/stream/message.js';
import { diameterMessage, TGPP, type AvpSpec } from '../helpers/diameter.js';

function message(payload: Buffer, tsMs: number, proto: 'sip' | 'diameter', src = 5060, dst = 5070): Message {
  return {
    tsNs: BigInt(tsMs) * 1_000_000n,
    proto,
    transport: 'tcp',
    family: 4,
    src: { ip: '127.0.0.1', port: src },
    dst: { ip: '127.0.0.1', port: dst },
    pid: 1,
    tid: 1,
    comm: 'x',
    cgroupId: 1n,
    netns: 0,
    sockId: 1n,
    direction: 'egress',
    payload,
    size: payload.length,
    truncated: false,
    peerUnknown: false,
    connectionUnknown: false,
  };
}

const sip = (c: Correlator, text: string, tsMs = 0) => {
  const m = message(Buffer.from(text), tsMs, 'sip');
  return c.sip(m, parseSip(m.payload)!);
};
const dia = (c: Correlator, bytes: Buffer, tsMs = 0, src = 3868, dst = 40000) => c.diameter(message(bytes, tsMs, 'diameter', src, dst), parseDiameter(bytes)!);

const invite = (callId: string, icid: string) =>
  `INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nCall-ID: ${callId}\r\nCSeq: 1 INVITE\r\n` +
  `P-Charging-Vector: icid-value="${icid}";icid-generated-at=127.0.0.1;orig-ioi=ims.test\r\nContent-Length: 0\r\n\r\n`;

const req = (command: number, app: number, hbh: number, avps: AvpSpec[]) => diameterMessage({ request: true, proxiable: true, command, app, hopByHop: hbh, endToEnd: hbh + 1000, avps });
const ans = (command: number, app: number, hbh: number, avps: AvpSpec[]) => diameterMessage({ request: false, proxiable: true, command, app, hopByHop: hbh, endToEnd: hbh + 1000, avps });

describe('correlation ids', () => {
  it('Rx AAR whose AF-Charging-Identifier is the icid of an INVITE: the INVITE Call-ID; the AAA follows with latency; the STR by Session-Id', () => {
    const c = new Correlator();
    expect(sip(c, invite('call-1@ims', 'AyretyU0dm+6O2IrT5tAFrbHLso='))).toBe('call-1@ims');
    const aar = req(265, 16777236, 1, [{ code: 263, value: 'pcscf;rx;1' }, { code: 505, vendor: TGPP, value: 'AyretyU0dm+6O2IrT5tAFrbHLso=' }]);
    expect(dia(c, aar, 100)).toEqual({ id: 'call-1@ims' });
    expect(dia(c, ans(265, 16777236, 1, [{ code: 263, value: 'pcscf;rx;1' }, { code: 268, value: 2001 }]), 512, 40000, 3868)).toEqual({ id: 'call-1@ims', latencyMs: 412 });
    expect(dia(c, req(275, 16777236, 2, [{ code: 263, value: 'pcscf;rx;1' }]), 900).id).toBe('call-1@ims');
  });

  it('Ro CCR with IMS-Charging-Identifier nested in Service-Information: the INVITE Call-ID', () => {
    const c = new Correlator();
    sip(c, invite('call-2@ims', 'icid-2'));
    const ims: AvpSpec = { code: 873, vendor: TGPP, value: [{ code: 876, vendor: TGPP, value: [{ code: 841, vendor: TGPP, value: 'icid-2' }] }] };
    expect(dia(c, req(272, 4, 5, [{ code: 263, value: 'scscf;ro;1' }, ims])).id).toBe('call-2@ims');
  });

  it('Cx MAR / SAR for the user of a REGISTER in progress: the REGISTER Call-ID; forgotten after registration', () => {
    const c = new Correlator();
    sip(
      c,
      'REGISTER sip:ims.test SIP/2.0\r\nTo: <sip:Alice@ims.test>\r\nFrom: <sip:alice@ims.test>;tag=1\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n' +
        'Authorization: Digest username="alice@ims.test", realm="ims.test", uri="sip:ims.test"\r\nContent-Length: 0\r\n\r\n',
    );
    const mar = req(303, 16777216, 7, [{ code: 263, value: 'scscf;cx;1' }, { code: 1, value: 'alice@ims.test' }, { code: 601, vendor: TGPP, value: 'sip:alice@ims.test' }]);
    expect(dia(c, mar, 10).id).toBe('reg-1');
    const udr = req(306, 16777217, 8, [{ code: 263, value: 'as;sh;1' }, { code: 700, vendor: TGPP, value: [{ code: 601, vendor: TGPP, value: 'sip:alice@ims.test' }] }]);
    expect(dia(c, udr, 20).id).toBe('reg-1');
    sip(c, 'SIP/2.0 200 OK\r\nTo: <sip:alice@ims.test>;tag=2\r\nCall-ID: reg-1\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n', 30);
    expect(dia(c, req(301, 16777216, 9, [{ code: 263, value: 'scscf;cx;2' }, { code: 601, vendor: TGPP, value: 'sip:alice@ims.test' }]), 5_000).id).toBe('reg-1');
    expect(dia(c, req(301, 16777216, 10, [{ code: 263, value: 'scscf;cx;3' }, { code: 601, vendor: TGPP, value: 'sip:alice@ims.test' }]), 60_000).id).toBe('scscf;cx;3');
  });

  it('otherwise the Session-Id; base messages without one name the peer connection, the same both ways', () => {
    const c = new Correlator();
    expect(dia(c, req(272, 16777238, 11, [{ code: 263, value: 'pgw;gx;1' }])).id).toBe('pgw;gx;1');
    const cer = dia(c, req(257, 0, 12, [{ code: 264, value: 'a.test' }]), 0, 40000, 3868);
    expect(cer.id).toBe('diameter:127.0.0.1:3868-127.0.0.1:40000');
    expect(dia(c, ans(257, 0, 12, [{ code: 264, value: 'b.test' }, { code: 268, value: 2001 }]), 3, 3868, 40000)).toEqual({ id: cer.id, latencyMs: 3 });
    expect(dia(c, req(280, 0, 13, [{ code: 264, value: 'b.test' }]), 5, 3868, 40000).id).toBe(cer.id);
    // An answer whose request was not seen still gets an id.
    expect(dia(c, ans(280, 0, 99, [{ code: 268, value: 2001 }]), 5, 3868, 40000).id).toBe(cer.id);
  });

  it('identities compare without scheme, brackets, parameters or case', () => {
    expect(identityKey(' <sip:Alice@IMS.test;transport=tcp>;tag=1')).toBe('alice@ims.test');
    expect(identityKey('tel:+123')).toBe('+123');
  });
});

describe('redaction', () => {
  const secret = (code: number, n: number) => ({ code, vendor: TGPP, value: Buffer.alloc(n, 0xa5) });

  it('Cx MAA SIP-Auth-Data-Item contents are masked, every length field unchanged', () => {
    const maa = ans(303, 16777216, 1, [
      { code: 263, value: 'scscf;cx;1' },
      { code: 268, value: 2001 },
      {
        code: 612,
        vendor: TGPP,
        value: [{ code: 608, vendor: TGPP, value: 'Digest-AKAv1-MD5' }, secret(609, 32), secret(610, 16), secret(625, 16), secret(626, 16)],
      },
    ]);
    const d = parseDiameter(maa)!;
    const masked = redactDiameter(maa, d.avps)!;
    expect(masked.length).toBe(maa.length);
    expect(masked.includes(0xa5)).toBe(false);
    const diff = [...maa].map((b, i) => (b !== masked[i] ? i : -1)).filter((i) => i >= 0);
    expect(diff.length).toBe(32 + 16 + 16 + 16);
    expect(diff.every((i) => maa[i] === 0xa5 && masked[i] === 0x58)).toBe(true);
    expect(parseDiameter(masked)!.avps[2].avps!.map((a) => a.data.length)).toEqual([16, 32, 16, 16, 16]);
  });

  it('S6a AIA vectors are masked; a message without secrets is left alone', () => {
    const aia = ans(318, 16777251, 1, [
      { code: 263, value: 'mme;s6a;1' },
      { code: 1413, vendor: TGPP, value: [{ code: 1414, vendor: TGPP, value: [secret(1447, 16), secret(1448, 8), secret(1449, 16), secret(1450, 32)] }] },
    ]);
    const masked = redactDiameter(aia, parseDiameter(aia)!.avps)!;
    expect(masked.length).toBe(aia.length);
    expect(masked.includes(0xa5)).toBe(false);
    const dwr = req(280, 0, 2, [{ code: 264, value: 'a.test' }]);
    expect(redactDiameter(dwr, parseDiameter(dwr)!.avps)).toBeUndefined();
  });

  it('SDP a=crypto keys in SIP are masked; Content-Length still matches', () => {
    const body = 'v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n';
    const msg = Buffer.from(`INVITE sip:b@x SIP/2.0\r\nCall-ID: c\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const masked = redactSip(msg)!;
    expect(masked.length).toBe(msg.length);
    expect(masked.toString()).toContain('inline:' + 'X'.repeat(40) + '|2^20|1:32');
    expect(redactSip(Buffer.from('OPTIONS sip:b@x SIP/2.0\r\n\r\n'))).toBeUndefined();
  });
});
