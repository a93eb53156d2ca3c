import { describe, expect, it } from 'vitest';
import { parseSip } from '../../src/protocols/sip.js';

const sip = (s: string) => Buffer.from(s.replace(/\n/g, '\r\n'), 'latin1');

describe('SIP parsing for routing', () => {
  it('reads a request: method, URI, Call-ID, CSeq, Content-Length, summary', () => {
    const m = sip('INVITE sip:bob@biloxi.example.com SIP/2.0\nVia: SIP/2.0/UDP pc33;branch=z9hG4bK776\nCall-ID: a84b4c76e66710@pc33\nCSeq: 314159 INVITE\nContent-Length: 4\n\nv=0\n');
    expect(parseSip(m)).toEqual({
      method: 'INVITE', requestUri: 'sip:bob@biloxi.example.com', callId: 'a84b4c76e66710@pc33', cseqNumber: 314159, cseqMethod: 'INVITE', contentLength: 4, summary: 'INVITE sip:bob@biloxi.example.com',
    });
  });

  it('reads a response and compact headers in any case', () => {
    const m = sip('SIP/2.0 180 Ringing\nI : abc@h\ncseq:2   BYE\nL:0\n\n');
    expect(parseSip(m)).toEqual({ statusCode: 180, reason: 'Ringing', callId: 'abc@h', cseqNumber: 2, cseqMethod: 'BYE', contentLength: 0, summary: '180 Ringing' });
  });

  it('keeps a multi-word reason and allows an empty one', () => {
    expect(parseSip(sip('SIP/2.0 481 Call/Transaction Does Not Exist\n\n'))?.summary).toBe('481 Call/Transaction Does Not Exist');
    expect(parseSip(sip('SIP/2.0 200\n\n'))).toMatchObject({ statusCode: 200, reason: '', summary: '200' });
  });

  it('does not read headers from the body', () => {
    const m = sip('MESSAGE sip:a@b SIP/2.0\nl: 20\n\nCall-ID: not-a-header');
    expect(parseSip(m)).toMatchObject({ contentLength: 20 });
    expect(parseSip(m)?.callId).toBeUndefined();
  });

  it('returns null for what is not SIP', () => {
    for (const s of ['GET / HTTP/1.1\n\n', 'INVITE sip:x HTTP/1.1\n\n', 'SIP/2.0 abc\n\n', '\x00\x01\x02', 'INVITEsip:x SIP/2.0\n\n', ''])
      expect(parseSip(sip(s))).toBeNull();
  });

  it('ignores a Content-Length that is not a number', () => {
    expect(parseSip(sip('OPTIONS sip:a SIP/2.0\nContent-Length: 1x\n\n'))?.contentLength).toBeUndefined();
  });
});
