/** Redaction of the SIP secrets besides SDES: IMS AKA ck/ik in WWW-Authenticate, SDP a=key-mgmt (MIKEY). */
import { describe, expect, it } from 'vitest';
import { redactSip } from '../../src/enrich/redact.js';

const CK = '9a1b2c3d4e5f60718293a4b5c6d7e8f9';
const IK = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const MIKEY = 'AQAFgM0XflABAAAAAAAAAAAAAAYAyO3rnQAAAAAJAQAEEQQXdZqh/5C4j0e2HbQqrP4wbgQBAAAQFzNNPgACAQAKAgEBAgEBAgEAAAIAAAA=';

/** The message with each of `secrets` replaced by as many 'X' (spelt out here, not by the code under test). */
const masked = (msg: string, secrets: string[]) => secrets.reduce((m, s) => m.split(s).join('X'.repeat(s.length)), msg);

const unauthorized = (auth: string) =>
  `SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP pcscf.ims.test;branch=z9hG4bK-1\r\nCall-ID: aka-1\r\nCSeq: 1 REGISTER\r\n${auth}\r\nContent-Length: 0\r\n\r\n`;

describe('SIP redaction: IMS AKA keys and MIKEY', () => {
  it('ck and ik of the S-CSCF 401 (TS 24.229) are masked inside their quotes; nonce, realm and the rest stay', () => {
    const msg = unauthorized(`WWW-Authenticate: Digest realm="ims.test", nonce="CjkyMzRmMjIwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", algorithm=AKAv1-MD5, ck="${CK}", ik="${IK}"`);
    const out = redactSip(Buffer.from(msg))!;
    expect(out.toString('latin1')).toBe(masked(msg, [CK, IK]));
  });

  it('any letter case, token values, spaces round `=`, a folded header; ck= in another header stays', () => {
    const msg = unauthorized(`www-authenticate : Digest realm="ims.test",\r\n  IK = ${IK} ,\r\n\tCk=${CK}\r\nWarning: 399 x "ck=${CK}"`);
    const want = unauthorized(`www-authenticate : Digest realm="ims.test",\r\n  IK = ${'X'.repeat(32)} ,\r\n\tCk=${'X'.repeat(32)}\r\nWarning: 399 x "ck=${CK}"`);
    expect(redactSip(Buffer.from(msg))!.toString('latin1')).toBe(want);
  });

  it('ck= inside another parameter\'s quoted value, and a parameter merely ending in ck, are not masked', () => {
    const msg = unauthorized(`WWW-Authenticate: Digest realm="a, ck=${CK}", nock="${IK}", ik="${IK}"`);
    const out = redactSip(Buffer.from(msg))!.toString('latin1');
    expect(out).toBe(msg.replace(`ik="${IK}"`, `ik="${'X'.repeat(IK.length)}"`));
  });

  it('an unterminated quoted ck is masked to the end of its line only', () => {
    const msg = unauthorized(`WWW-Authenticate: Digest ck="${CK}`);
    expect(redactSip(Buffer.from(msg))!.toString('latin1')).toBe(masked(msg, [CK]));
  });

  it('a=key-mgmt:mikey data is masked, any letter case, the protocol id kept; Content-Length still matches', () => {
    const body = `v=0\r\nm=audio 4000 RTP/SAVP 0\r\na=key-mgmt:mikey ${MIKEY}\r\nA=KEY-MGMT: mikey ${MIKEY.slice(4)}\r\na=sendrecv\r\n`;
    const msg = `INVITE sip:b@ims.test SIP/2.0\r\nCall-ID: mikey-1\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    const out = redactSip(Buffer.from(msg))!;
    expect(out.length).toBe(msg.length);
    expect(out.toString('latin1')).toBe(masked(msg, [MIKEY]).replace(` ${MIKEY.slice(4)}`, ` ${'X'.repeat(MIKEY.length - 4)}`));
    expect(out.toString('latin1')).toContain(`a=key-mgmt:mikey ${'X'.repeat(MIKEY.length)}\r\nA=KEY-MGMT: mikey ${'X'.repeat(MIKEY.length - 4)}\r\n`);
  });

  it('a message with none of them is left alone; an Authorization with ck-like text is no WWW-Authenticate', () => {
    expect(redactSip(Buffer.from(unauthorized('WWW-Authenticate: Digest realm="ims.test", nonce="abc"'))))
      .toEqual(Buffer.from(unauthorized('WWW-Authenticate: Digest realm="ims.test", nonce="abc"')));
    expect(redactSip(Buffer.from(`REGISTER sip:ims.test SIP/2.0\r\nAuthorization: Digest ck="${CK}"\r\n\r\n`))).toBeUndefined();
  });
});
