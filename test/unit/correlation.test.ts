import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { correlationHeader, correlationRegex, Correlator, identityKey, REGEX_SCAN_BYTES } from '../../src/enrich/correlation.js';
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

  it('icid-value: the parameter name in any case, only as a parameter of its own, its first non-empty value', () => {
    const aarFor = (icid: string, hbh: number) => req(265, 16777236, hbh, [{ code: 263, value: `pcscf;rx;${hbh}` }, { code: 505, vendor: TGPP, value: icid }]);
    const pcv = (callId: string, value: string) => invite(callId, '').replace(/P-Charging-Vector: [^\r]*/, `P-CHARGING-VECTOR:${value}`);
    const c = new Correlator();
    sip(c, pcv('upper', ' ICID-Value = "AbC=";orig-ioi=ims.test')); // no `icid-value` in lower case anywhere
    sip(c, pcv('suffix', 'orig-icid-value=wrong;icid-generated-at=icid-value=wrong2; icid-value=right'));
    sip(c, pcv('empty', 'icid-value=;icid-value=second'));
    sip(c, pcv('none', 'xicid-value=no'));
    expect([aarFor('AbC=', 1), aarFor('right', 2), aarFor('second', 3)].map((m, i) => dia(c, m, i).id)).toEqual(['upper', 'suffix', 'empty']);
    for (const icid of ['wrong', 'wrong2', 'no']) expect(dia(c, aarFor(icid, 9), 9).id).toBe('pcscf;rx;9');
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

  it('reads an identity as the regexes it replaced did, whatever the text', () => {
    const byRegex = (id: string) => {
      let s = id.trim();
      const lt = s.indexOf('<');
      if (lt >= 0) s = s.slice(lt + 1, s.indexOf('>', lt) >>> 0);
      s = s.replace(/^(?:sips?|tel):/i, '');
      const semi = s.search(/[;?>]/);
      return (semi >= 0 ? s.slice(0, semi) : s).toLowerCase();
    };
    const pieces = ['sip:', 'SIP:', 'sips:', 'SiPs:', 'sipx:', 'sip', 'tel:', 'TEL:', 'te:', ':', 's', 'S', 'ſ', 'K', '<', '>', ';', '?', ' ', '\t', '\u00a0', 'a', 'B', '@', 'é', '\u0131'];
    fc.assert(fc.property(fc.array(fc.constantFrom(...pieces), { maxLength: 12 }), (parts) => {
      const id = parts.join('');
      expect(identityKey(id)).toBe(byRegex(id));
    }), { numRuns: 20000 });
  });
});

describe("the operator's correlation key", () => {
  /** A SIP message of `callId` with these extra header lines; a response when `status` is given. */
  const msg = (callId: string, extra: string[] = [], cseq = '1 INVITE', status?: number) =>
    `${status ? `SIP/2.0 ${status} OK` : `${cseq.split(' ')[1]} sip:bob@x SIP/2.0`}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nCall-ID: ${callId}\r\nCSeq: ${cseq}\r\n` +
    `${extra.map((h) => `${h}\r\n`).join('')}Content-Length: 0\r\n\r\n`;

  it('--correlation-header: every message carrying it, the rest of its Call-ID after it, and not before', () => {
    const c = new Correlator({ header: 'X-CID' });
    expect(sip(c, msg('leg-a', [], '1 OPTIONS'))).toBe('leg-a');
    expect(sip(c, msg('leg-a', ['x-cid: b2bua-1']))).toBe('b2bua-1');
    expect(sip(c, msg('leg-a', [], '1 INVITE', 200), 1)).toBe('b2bua-1');
    // The other leg: its own Call-ID, the same key (name in any case, blanks around the colon).
    expect(sip(c, msg('leg-b', ['X-Cid  :  b2bua-1 ']), 2)).toBe('b2bua-1');
    expect(sip(c, msg('leg-b', [], '1 ACK'), 3)).toBe('b2bua-1');
    // A message carrying another value takes it, and the call follows.
    expect(sip(c, msg('leg-a', ['X-CID: b2bua-2'], '2 INVITE'), 4)).toBe('b2bua-2');
    expect(sip(c, msg('leg-a', [], '2 INVITE', 200), 5)).toBe('b2bua-2');
    // Calls without it keep their Call-ID; an empty header is no key; a body line is not a header.
    expect(sip(c, msg('other', ['X-CID:'], '1 INVITE'), 6)).toBe('other');
    const body = 'X-CID: in-body\r\n';
    expect(sip(c, `MESSAGE sip:b@x SIP/2.0\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 7)).toBe('m1');
    // The header name is not confused with a longer one or a prefix.
    expect(sip(c, msg('other', ['X-CIDS: no', 'X-CI: no'], '2 INVITE'), 8)).toBe('other');
    expect(c.stats()).toMatchObject({ keyed: 3, keys: 2, keysEvicted: 0 });
  });

  it('the key outlives an idle hour only with traffic; after the BYE is answered it is kept 32 s more, not renewed', () => {
    const c = new Correlator({ header: 'X-Session' });
    sip(c, msg('c1', ['X-Session: s1']), 0);
    expect(sip(c, msg('c1', [], '2 INFO'), 3_000_000)).toBe('s1'); // 50 minutes on: renewed
    expect(sip(c, msg('c1', [], '3 INFO'), 6_700_000)).toBe('c1'); // over an hour since: forgotten
    sip(c, msg('c2', ['X-Session: s1']), 7_000_000);
    expect(sip(c, msg('c2', [], '2 BYE', 200), 7_000_010)).toBe('s1');
    expect(sip(c, msg('c2', [], '2 BYE'), 7_031_000)).toBe('s1'); // a retransmission
    expect(sip(c, msg('c2', [], '2 BYE', 200), 7_033_000)).toBe('c2');
  });

  it('the Diameter tied to a keyed call takes the key, also when the key came after the Diameter began', () => {
    const c = new Correlator({ header: 'X-CID' });
    const withIcid = (callId: string, key?: string) => invite(callId, 'icid-9').replace('Content-Length', key ? `X-CID: ${key}\r\nContent-Length` : 'Content-Length');
    sip(c, withIcid('call-9'));
    const aar = req(265, 16777236, 1, [{ code: 263, value: 'pcscf;rx;9' }, { code: 505, vendor: TGPP, value: 'icid-9' }]);
    expect(dia(c, aar, 1).id).toBe('call-9');
    expect(dia(c, ans(265, 16777236, 1, [{ code: 263, value: 'pcscf;rx;9' }]), 2, 40000, 3868).id).toBe('call-9');
    sip(c, withIcid('call-9', 'cid-9'), 3);
    // The STR, tied by its Session-Id to the call, and its answer.
    expect(dia(c, req(275, 16777236, 2, [{ code: 263, value: 'pcscf;rx;9' }]), 4).id).toBe('cid-9');
    expect(dia(c, ans(275, 16777236, 2, [{ code: 263, value: 'pcscf;rx;9' }]), 5, 40000, 3868).id).toBe('cid-9');
    // A new AAR by icid.
    expect(dia(c, req(265, 16777236, 3, [{ code: 263, value: 'pcscf;rx;10' }, { code: 505, vendor: TGPP, value: 'icid-9' }]), 6).id).toBe('cid-9');
  });

  it('--correlation-regex: the first capture group that matched, within the first REGEX_SCAN_BYTES', () => {
    const c = new Correlator({ regex: correlationRegex('[Xx]-[Tt]est-[Ii][Dd]: *([^\\r\\n;]+)|session=([a-z0-9]+)') });
    expect(sip(c, msg('r1', ['X-Test-Id: run-42;x=y']))).toBe('run-42');
    expect(sip(c, msg('r1', [], '1 INVITE', 180))).toBe('run-42');
    expect(sip(c, msg('r2', ['Subject: session=abc']))).toBe('abc');
    expect(sip(c, msg('r4', ['X-Test-Id: café']))).toBe('café');
    const far = msg('r3', [`X-Pad: ${'p'.repeat(REGEX_SCAN_BYTES)}`, 'X-Test-Id: too-far']);
    expect(sip(c, far)).toBe('r3');
  });

  it('header first, then the regex; a message without a Call-ID keeps its key to itself', () => {
    const c = new Correlator({ header: 'X-CID', regex: correlationRegex('Subject: (\\S+)') });
    expect(sip(c, msg('h1', ['Subject: subj', 'X-CID: hdr']))).toBe('hdr');
    expect(sip(c, msg('h2', ['Subject: subj']))).toBe('subj');
    expect(sip(c, 'OPTIONS sip:b@x SIP/2.0\r\nX-CID: lone\r\nContent-Length: 0\r\n\r\n')).toBe('lone');
    expect(c.stats().keys).toBe(2);
  });

  it('keys longer than a HEP chunk are cut and counted', () => {
    const c = new Correlator({ header: 'X-CID' });
    expect(sip(c, msg('long', [`X-CID: ${'k'.repeat(2000)}`])).length).toBe(1024);
    expect(c.stats().idsCut).toBe(1);
  });

  it('the table is bounded: the least recently used Call-ID is forgotten first, counted', () => {
    const c = new Correlator({ header: 'X-CID' });
    const n = 100_001;
    for (let i = 0; i < n; i++) sip(c, msg(`b${i}`, [`X-CID: k${i}`]), i);
    expect(c.stats()).toMatchObject({ keys: 100_000, keysEvicted: 1 });
    expect(sip(c, msg('b0', [], '2 INFO'), n)).toBe('b0');
    expect(sip(c, msg(`b${n - 1}`, [], '2 INFO'), n)).toBe(`k${n - 1}`);
  });

  it('options are validated with errors naming them', () => {
    expect(correlationHeader('X-CID')).toBe('X-CID');
    expect(() => correlationHeader('X-CID:')).toThrow('--correlation-header must be a SIP header name such as X-CID, got "X-CID:"');
    expect(() => correlationHeader('')).toThrow('--correlation-header');
    expect(() => correlationRegex('X-CID: (')).toThrow("--correlation-regex 'X-CID: (' is not a valid regular expression: Invalid regular expression: /X-CID: (/: Unterminated group");
    expect(() => correlationRegex('X-CID: \\S+')).toThrow("--correlation-regex 'X-CID: \\S+' has no capture group");
    expect(() => correlationRegex('(?:x)')).toThrow('has no capture group');
    expect(() => correlationRegex('(a)\\1')).toThrow('cannot run in linear time');
    expect(() => correlationRegex('(?<=x)(a)')).toThrow('cannot run in linear time');
  });

  it('a catastrophic pattern costs linear time: (a+)+$ over 3000 a and a !', () => {
    const c = new Correlator({ regex: correlationRegex('(a+)+$') });
    const t0 = process.hrtime.bigint();
    expect(sip(c, msg('cat', [`X-Pad: ${'a'.repeat(3000)}!`]))).toBe('cat');
    // Backtracking alone would take longer than the universe has; V8 moves to its linear engine.
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeLessThan(1000);
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
