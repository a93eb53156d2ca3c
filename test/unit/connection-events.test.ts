/** Connection events from kernel records (no kernel): the id they carry, when they go out, their JSON and ends. */
import { describe, expect, it } from 'vitest';
import { MonotonicClock } from '../../src/capture/clock.js';
import { decodeBatch, SRC_TCP_ACCEPT, SRC_TCP_CLOSE, SRC_TCP_CONNECT, SRC_TLS_HANDSHAKE_FAILED } from '../../src/capture/record.js';
import { batchOf, encodeRecord, type RecordSpec } from '../../src/capture/replay.js';
import { ConnectionEvents } from '../../src/enrich/connection-events.js';
import type { CaptureEvent } from '../../src/enrich/event.js';
import type { Message } from '../../src/stream/message.js';
import { Selection, type SelectionOptions } from '../../src/enrich/selection.js';

const SOCK = 0xffff888000002000n;

function setup(selectionOptions: SelectionOptions = {}) {
  const out: CaptureEvent[] = [];
  const selection = new Selection(selectionOptions);
  const events = new ConnectionEvents(new MonotonicClock(), (ev) => out.push(ev), selection);
  const feed = (spec: Partial<RecordSpec>) =>
    decodeBatch(batchOf([encodeRecord({ data: Buffer.alloc(0), ipProto: 6, sockId: SOCK, localPort: 40000, remotePort: 5061, comm: 'kamailio', ...spec })]), (r) => events.record(r));
  const sip = (callId: string, selected = true, sockId = SOCK) =>
    events.correlated({ sockId, transport: 'tcp', proto: 'sip', pid: 7, comm: 'kamailio', cgroupId: 9n } as Message, callId, selected);
  const line = (ev: CaptureEvent) => `${ev.correlationId} ${ev.message.src.port}->${ev.message.dst.port} ${ev.payload.toString()}`;
  const filtered = () => selection.stats().filtered.selection;
  return { out, events, feed, sip, line, filtered };
}

describe('connection events', () => {
  it('a connect waits for the first correlated SIP, is dated when it happened, and names the client first', () => {
    const { out, feed, sip, line } = setup();
    feed({ source: SRC_TCP_CONNECT, tsNs: 5_000_000_000n, origLen: 1500 }); // established 1.5 ms before the record
    expect(out).toEqual([]);
    sip('call-1');
    expect(out.map(line)).toEqual(['call-1 40000->5061 {"Protocol":"TCP","Event":"CONNECTED","Status":"SUCCESS","Message":"Connected"}']);
    expect(out[0].message.tsNs).toBe(5_000_000_000n - 1_500_000n);
    expect(out[0].summary).toBe('TCP CONNECTED SUCCESS: Connected');
    // Known connection: the close goes at once, from the client, with the process its messages named.
    feed({ source: SRC_TCP_CLOSE, pid: 0, comm: 'swapper/1' });
    expect(out.map(line)[1]).toBe('call-1 40000->5061 {"Protocol":"TCP","Event":"CLOSED","Status":"SUCCESS","Message":"Connection closed"}');
    expect([out[1].message.pid, out[1].message.comm]).toEqual([7, 'kamailio']);
  });

  it('an accepted TLS connection: the client is the remote end', () => {
    const { out, feed, sip, line } = setup();
    feed({ source: SRC_TCP_ACCEPT, tlsId: 0x55n, localPort: 5061, remotePort: 40000 });
    sip('call-2');
    expect(out.map(line)).toEqual(['call-2 40000->5061 {"Protocol":"TLS","Event":"ACCEPTED","Status":"SUCCESS","Message":"Connection accepted"}']);
  });

  it('a failed handshake carries no SIP: it goes out after the hold with its flow id, the side from the kernel', () => {
    const { out, events, feed, line } = setup();
    feed({ source: SRC_TLS_HANDSHAKE_FAILED, tlsId: 0x66n, origLen: -1 >>> 0, fd: 1 | 0x100 });
    feed({ source: SRC_TLS_HANDSHAKE_FAILED, tlsId: 0x67n, sockId: SOCK + 1n, localPort: 5061, remotePort: 40001, origLen: -348 >>> 0, fd: 4 | 0x200 });
    events.expire(process.hrtime.bigint());
    expect(out).toEqual([]);
    events.expire(process.hrtime.bigint() + 3_000_000_000n);
    expect(out.map(line)).toEqual([
      'tls:127.0.0.1:40000-127.0.0.1:5061 40000->5061 {"Protocol":"TLS","Event":"CONNECTED","Status":"FAILURE","Message":"TLS handshake failed: SSL_do_handshake returned -1, then the connection closed"}',
      'tls:127.0.0.1:40001-127.0.0.1:5061 40001->5061 {"Protocol":"TLS","Event":"ACCEPTED","Status":"FAILURE","Message":"TLS handshake failed: gnutls_handshake returned -348 (GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR), then the connection closed"}',
    ]);
    expect(events.stats).toMatchObject({ events: 2, waitedOut: 2 });
  });

  it('at most 4096 connections wait: the next one goes out at once with its flow id, counted', () => {
    const { out, events, feed } = setup();
    for (let i = 0n; i < 4097n; i++) feed({ source: SRC_TCP_CONNECT, sockId: SOCK + i });
    expect(out.length).toBe(1);
    expect(events.stats.waitingFull).toBe(1);
  });

  it('with selective forwarding: the events of a connection wait for a selected message and carry its id; those of a connection with none are left out, counted', () => {
    const { out, events, feed, sip, filtered } = setup({ callId: ['call-b'] });
    const other = SOCK + 1n;
    feed({ source: SRC_TCP_CONNECT });
    feed({ source: SRC_TCP_CONNECT, sockId: other, localPort: 40001 });
    sip('call-a', false); // not selected: the connect keeps waiting
    sip('call-x', false, other);
    expect(out).toEqual([]);
    sip('call-b'); // a later call on the same connection is selected
    expect(out.map((ev) => `${ev.correlationId} ${ev.summary}`)).toEqual(['call-b TCP CONNECTED SUCCESS: Connected']);
    sip('call-a', false);
    feed({ source: SRC_TCP_CLOSE });
    // It carried a selected call: its close goes, with the id of the last selected message.
    expect(out.map((ev) => ev.correlationId)).toEqual(['call-b', 'call-b']);
    // The other connection carried nothing selected: its connect is left out after the hold, its close at once.
    events.expire(process.hrtime.bigint() + 3_000_000_000n);
    feed({ source: SRC_TCP_CLOSE, sockId: other, localPort: 40001 });
    expect(out).toHaveLength(2);
    expect(filtered()).toBe(2);
    expect(events.stats).toMatchObject({ events: 2, waitedOut: 0 });
  });

  it('with selective forwarding: a failed handshake (no message) is judged by its ends', () => {
    const cases: [SelectionOptions, number][] = [[{ port: [5061] }, 1], [{ address: ['10.0.0.0/8'] }, 0], [{ callId: ['c'] }, 0], [{ excludeMethod: ['OPTIONS'] }, 1]];
    for (const [o, sent] of cases) {
      const { out, events, feed, filtered } = setup(o);
      feed({ source: SRC_TLS_HANDSHAKE_FAILED, tlsId: 0x66n, origLen: -1 >>> 0, fd: 1 | 0x100 });
      events.flush();
      expect([out.length, filtered()], JSON.stringify(o)).toEqual([sent, 1 - sent]);
    }
  });
});
