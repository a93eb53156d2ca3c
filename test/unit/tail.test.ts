import { describe, expect, it } from 'vitest';
import { tailFilter } from '../../src/cli/tail.js';
import { encodeTailEvent, TailEventReader, type TailEventFields } from '../../src/output/tail-protocol.js';
import { formatTailLine, isoMicros, toTailRecord } from '../../src/output/tail-record.js';

const event = (over: Partial<TailEventFields> = {}): TailEventFields => ({
  ts: '2026-11-24T08:00:00.123456Z', proto: 'sip', transport: 'udp', src: { ip: '::1', port: 5060 }, dst: { ip: '127.0.0.1', port: 5070 },
  pid: 7, comm: 'kamailio', cgroupId: '1', correlationId: 'c1', summary: '200 OK', callId: 'c1', cseqMethod: 'INVITE',
  size: 20, truncated: false, connectionUnknown: false, payload: Buffer.from('SIP/2.0 200 OK\r\n\r\n'), container: null, peerContainer: null, ...over,
});

describe('tail', () => {
  it('filters as run does (src/enrich/selection.ts): by Call-ID, by method (requests and their responses), by port and user', () => {
    const ok = () => event({ payload: Buffer.from('SIP/2.0 200 OK\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nTo: <sip:bob@ims.test>;tag=2\r\n\r\n') });
    expect(tailFilter({ callId: ['c1'] })(ok())).toBe(true);
    expect(tailFilter({ callId: ['c2'] })(ok())).toBe(false);
    expect(tailFilter({ method: ['INVITE'] })(ok())).toBe(true);
    expect(tailFilter({ method: ['BYE'] })(ok())).toBe(false);
    expect(tailFilter({ port: [5070] })(ok())).toBe(true);
    expect(tailFilter({ port: [9] })(ok())).toBe(false);
    expect(tailFilter({ user: ['bob'] })(ok())).toBe(true);
    expect(tailFilter({ excludeUser: ['bob@*'] })(ok())).toBe(false);
  });

  it('prints one line per message and the documented JSON record', () => {
    expect(formatTailLine(event())).toBe('08:00:00.123456 [::1]:5060 -> 127.0.0.1:5070 UDP kamailio[7] 200 OK c1');
    const rec = toTailRecord(event(), true);
    expect(rec).toMatchObject({ container: null, callId: 'c1', payload: 'SIP/2.0 200 OK\r\n\r\n' });
    expect(rec).not.toHaveProperty('cseqMethod');
    expect(toTailRecord(event(), false)).not.toHaveProperty('payload');
    expect(isoMicros(1_795_500_000_123_456)).toBe('2026-11-24T06:00:00.123456Z');
  });

  it('Diameter: filters by Session-Id, shows the summary and the correlation id, base64 payload', () => {
    const aaa = event({ proto: 'diameter', transport: 'tcp', summary: 'AAA 2001 (412 ms)', callId: undefined, cseqMethod: undefined, sessionId: 'pcscf;rx;1', correlationId: 'call-1', payload: Buffer.from([1, 0, 0, 20]) });
    expect(tailFilter({ sessionId: 'pcscf;rx;1' })(aaa)).toBe(true);
    expect(tailFilter({ sessionId: 'other' })(aaa)).toBe(false);
    expect(tailFilter({ sessionId: 'pcscf;rx;1' })(event())).toBe(false);
    expect(formatTailLine(aaa)).toBe('08:00:00.123456 [::1]:5060 -> 127.0.0.1:5070 TCP kamailio[7] AAA 2001 (412 ms) call-1');
    const rec = toTailRecord(aaa, true);
    expect(rec).toMatchObject({ proto: 'diameter', sessionId: 'pcscf;rx;1', correlationId: 'call-1', payload: 'AQAAFA==' });
    expect(JSON.parse(JSON.stringify(rec))).not.toHaveProperty('callId');
    const [decoded] = (() => {
      const got: TailEventFields[] = [];
      new TailEventReader().push(Buffer.from(encodeTailEvent(aaa)), (e) => got.push(e));
      return got;
    })();
    expect(decoded.sessionId).toBe('pcscf;rx;1');
  });

  it('marks TLS plaintext whose connection was never found, on the line, in JSON and through the control socket', () => {
    const lost = event({ transport: 'tls', src: { ip: '0.0.0.0', port: 0 }, dst: { ip: '0.0.0.0', port: 0 }, connectionUnknown: true });
    expect(formatTailLine(lost)).toBe('08:00:00.123456 0.0.0.0:0 -> 0.0.0.0:0 TLS kamailio[7] 200 OK [connection unknown] c1');
    expect(toTailRecord(lost, false)).toMatchObject({ transport: 'tls', connectionUnknown: true });
    expect(toTailRecord(event(), false)).not.toHaveProperty('connectionUnknown');
    const got: TailEventFields[] = [];
    new TailEventReader().push(Buffer.from(encodeTailEvent(lost)), (e) => got.push(e));
    expect(got[0].connectionUnknown).toBe(true);
  });

  it('reads length-delimited events split anywhere in the stream', () => {
    const bytes = Buffer.concat([encodeTailEvent(event()), encodeTailEvent(event({ callId: 'c2' }))]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const got: string[] = [];
      const reader = new TailEventReader();
      reader.push(bytes.subarray(0, cut), (e) => got.push(e.callId!));
      reader.push(bytes.subarray(cut), (e) => got.push(e.callId!));
      expect(got).toEqual(['c1', 'c2']);
    }
  });
});
