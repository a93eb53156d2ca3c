import { describe, expect, it } from 'vitest';
import { parseSip, sipSummary, type HeaderLines } from '../../src/protocols/sip.js';
import { SipFramer } from '../../src/stream/sip-framer.js';

const sip = (s: string) => Buffer.from(s.replace(/\n/g, '\r\n'), 'latin1');

describe('SIP parsing for routing', () => {
  it('reads a request: method, URI, Call-ID, CSeq, Content-Length, summary', () => {
    const m = sip('INVITE sip:bob@biloxi.example.com SIP/2.0\nVia: SIP/2.0/UDP pc33;branch=z9hG4bK776\nCall-ID: a84b4c76e66710@pc33\nCSeq: 314159 INVITE\nContent-Length: 4\n\nv=0\n');
    expect(parseSip(m)).toEqual({
      method: 'INVITE', requestUri: 'sip:bob@biloxi.example.com', callId: 'a84b4c76e66710@pc33', cseqNumber: 314159, cseqMethod: 'INVITE', contentLength: 4,
    });
    expect(sipSummary(parseSip(m)!)).toBe('INVITE sip:bob@biloxi.example.com');
  });

  it('reads a response and compact headers in any case', () => {
    const m = sip('SIP/2.0 180 Ringing\nI : abc@h\ncseq:2   BYE\nL:0\n\n');
    expect(parseSip(m)).toEqual({ statusCode: 180, reason: 'Ringing', callId: 'abc@h', cseqNumber: 2, cseqMethod: 'BYE', contentLength: 0 });
    expect(sipSummary(parseSip(m)!)).toBe('180 Ringing');
  });

  it('keeps a multi-word reason and allows an empty one', () => {
    expect(sipSummary(parseSip(sip('SIP/2.0 481 Call/Transaction Does Not Exist\n\n'))!)).toBe('481 Call/Transaction Does Not Exist');
    expect(parseSip(sip('SIP/2.0 200\n\n'))).toMatchObject({ statusCode: 200, reason: '' });
    expect(sipSummary(parseSip(sip('SIP/2.0 200\n\n'))!)).toBe('200');
  });

  it('summarises the start line as it was: any reason phrase, a status code with a leading zero', () => {
    for (const line of ['SIP/2.0 200 OK', 'SIP/2.0 200 Okay', 'SIP/2.0 200 OK then', 'SIP/2.0 486 Busy Here', 'SIP/2.0 486 busy here', 'SIP/2.0 099 Odd', 'SIP/2.0 007']) {
      expect(sipSummary(parseSip(sip(`${line}\n\n`))!)).toBe(line.slice(8));
    }
    expect(sipSummary(parseSip(sip('REGISTER sips:ims.test;transport=tls SIP/2.0\n\n'))!)).toBe('REGISTER sips:ims.test;transport=tls');
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

  it('reads the icid-value of the first P-Charging-Vector that has one, in the header block only', () => {
    const m = sip('INVITE sip:b@x SIP/2.0\nP-Charging-Vector: orig-ioi=a\np-charging-vector : icid-value="AyU0=";orig-ioi=x\nP-Charging-Vector: icid-value=second\nl: 42\n\nP-Charging-Vector: icid-value=body\n');
    expect(parseSip(m)?.icid).toBe('AyU0=');
    expect(parseSip(sip('SIP/2.0 200 OK\nl: 33\n\nP-Charging-Vector: icid-value=body\n'))?.icid).toBeUndefined();
  });
});

describe('SIP parsing from the line feeds its framer found', () => {
  /** Each message a SIP framer emits from `stream` in writes of `step` bytes, parsed with the line feeds it handed on and without. */
  function framed(stream: Buffer, step: number) {
    const out: { withLines: unknown; alone: unknown; lines?: HeaderLines }[] = [];
    const f = new SipFramer({ messages: 0, discardedBytes: 0, truncatedMessages: 0 }, (p, _size, _truncated, lines) => {
      out.push({ withLines: parseSip(p, lines), alone: parseSip(Buffer.from(p)), lines: lines && lines.message === p ? lines : undefined });
    });
    for (let i = 0; i < stream.length; i += step) f.push(stream.subarray(i, i + step));
    return out;
  }

  const manyHeaders = Array.from({ length: 80 }, (_, i) => `X-H${i}: ${i}\n`).join('');
  const stream = Buffer.concat([
    sip('INVITE sip:bob@x SIP/2.0\nCall-ID: one\nCSeq: 1 INVITE\nP-Charging-Vector: icid-value=i1\nContent-Length: 3\n\nv=0'),
    sip('SIP/2.0 200 OK\nCSeq: 1 INVITE\nl: 0\ni: two\n\n'),
    // more header lines than the framer keeps line feeds of: the parser searches for the rest
    sip(`OPTIONS sip:x SIP/2.0\n${manyHeaders}Call-ID: three\nCSeq: 7 OPTIONS\nl: 0\n\n`),
    // a bare LF empty line ends the parser's header block before the framer's CRLF CRLF
    Buffer.from('MESSAGE sip:y SIP/2.0\r\nCall-ID: four\r\n\nCSeq: 9 MESSAGE\r\nContent-Length: 0\r\n\r\n', 'latin1'),
  ]);

  it('parses each message as from its bytes alone, whatever the writes', () => {
    for (const step of [stream.length, 1, 7, 64]) {
      const out = framed(stream, step);
      expect(out.map((o) => o.withLines)).toEqual(out.map((o) => o.alone));
      expect(out.map((o) => (o.alone as { callId: string }).callId)).toEqual(['one', 'two', 'three', 'four']);
    }
    // In one write every header is walked once, by the framer, and its line feeds handed on.
    expect(framed(stream, stream.length).every((o) => o.lines)).toBe(true);
  });

  it('keeps no message after the sink\'s call (a batch or stream buffer would stay alive)', () => {
    let handed: HeaderLines | undefined;
    const f = new SipFramer({ messages: 0, discardedBytes: 0, truncatedMessages: 0 }, (p, _size, _truncated, lines) => {
      expect(lines?.message).toBe(p);
      handed = lines;
    });
    f.push(stream);
    expect(handed).toBeDefined();
    expect(handed!.message).toBeUndefined();
  });

  it('ignores line feeds found in another message', () => {
    const other = sip('SIP/2.0 200 OK\nCall-ID: other\nCSeq: 1 INVITE\nl: 0\n\n');
    const parsed: unknown[] = [];
    const f = new SipFramer({ messages: 0, discardedBytes: 0, truncatedMessages: 0 }, (_p, _size, _truncated, lines) => parsed.push(parseSip(other, lines)));
    f.push(stream);
    expect(parsed).toEqual(Array(4).fill(parseSip(other)));
  });
});

