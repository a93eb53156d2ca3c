/** `tail --flow` on a recorded call: an INVITE dialog through a proxy in a container, and the Rx exchange it triggered. */
import { describe, expect, it } from 'vitest';
import { tailFilter } from '../../src/cli/tail.js';
import { colourWanted, FlowLadder } from '../../src/output/flow-ladder.js';
import type { TailEventFields } from '../../src/output/tail-protocol.js';

const pbx = { id: 'c0ffee', name: 'pbx-1', runtime: 'docker', service: 'pbx', project: 'lab' };
const ev = (us: number, src: [string, number], dst: [string, number], summary: string, over: Partial<TailEventFields> = {}): TailEventFields => ({
  ts: `2026-12-02T06:30:0${Math.floor(us / 1e6)}.${String(us % 1e6).padStart(6, '0')}Z`, proto: 'sip', transport: 'udp',
  src: { ip: src[0], port: src[1] }, dst: { ip: dst[0], port: dst[1] }, pid: 10, comm: 'sipp', cgroupId: '1', correlationId: 'call-1',
  summary, callId: 'call-1', size: 100, truncated: false, connectionUnknown: false, payload: Buffer.alloc(0), container: null, peerContainer: null, ...over,
});

const UAC: [string, number] = ['10.0.0.1', 5060];
const PROXY: [string, number] = ['10.0.0.2', 5060];
const UAS: [string, number] = ['10.0.0.3', 5061];
const PCRF: [string, number] = ['10.0.0.9', 3868];
const fromProxy = { comm: 'kamailio', container: pbx };
const toProxy = { peerContainer: pbx };

/** A call recorded from tail --json: INVITE through the proxy (TLS to the UAS), AAR/AAA, 180, 200, ACK, BYE, 200. */
const CALL = [
  ev(0, UAC, PROXY, 'INVITE sip:bob@lab', toProxy),
  ev(1_200, PROXY, UAC, '100 Trying', fromProxy),
  ev(2_000, PROXY, PCRF, 'AAR Rx', { ...fromProxy, proto: 'diameter', transport: 'tcp', callId: undefined }),
  ev(14_500, PCRF, PROXY, 'AAA 2001 (12 ms)', { comm: 'pcrf', proto: 'diameter', transport: 'tcp', callId: undefined, peerContainer: pbx }),
  ev(15_000, PROXY, UAS, 'INVITE sip:bob@10.0.0.3', { ...fromProxy, transport: 'tls' }),
  ev(40_000, UAS, PROXY, '180 Ringing', { comm: 'uas', transport: 'tls', ...toProxy }),
  ev(40_300, PROXY, UAC, '180 Ringing', fromProxy),
  ev(1_502_000, UAS, PROXY, '200 OK', { comm: 'uas', transport: 'tls', ...toProxy }),
  ev(1_502_400, PROXY, UAC, '200 OK', fromProxy),
  ev(1_510_000, UAC, PROXY, 'ACK sip:bob@lab', toProxy),
  ev(5_510_000, UAC, PROXY, 'BYE sip:bob@lab', toProxy),
  ev(5_511_000, PROXY, UAC, '200 OK', fromProxy),
];

const LADDER = String.raw`     10.0.0.1:5060           10.0.0.2:5060
          sipp                  lab/pbx
            │                       │
+0.000      │─────── INVITE ───────>│
+0.001      │<───── 100 Trying ─────│
     10.0.0.1:5060           10.0.0.2:5060           10.0.0.9:3868
          sipp                  lab/pbx
            │                       │                       │
+0.002      │                       │─────── AAR Rx ───────>│
     10.0.0.1:5060           10.0.0.2:5060           10.0.0.9:3868
          sipp                  lab/pbx                   pcrf
            │                       │                       │
+0.015      │                       │<────── AAA 2001 ──────│
     10.0.0.1:5060           10.0.0.2:5060           10.0.0.9:3868           10.0.0.3:5061
          sipp                  lab/pbx                   pcrf
            │                       │                       │                       │
+0.015      │                       │─────────────────── INVITE ───────────────────>│ (TLS)
     10.0.0.1:5060           10.0.0.2:5060           10.0.0.9:3868           10.0.0.3:5061
          sipp                  lab/pbx                   pcrf                    uas
            │                       │                       │                       │
+0.040      │                       │<──────────────── 180 Ringing ─────────────────│ (TLS)
+0.040      │<──── 180 Ringing ─────│                       │                       │
+1.502      │                       │<─────────────────── 200 OK ───────────────────│ (TLS)
+1.502      │<─────── 200 OK ───────│                       │                       │
+1.510      │──────── ACK ─────────>│                       │                       │
+5.510      │──────── BYE ─────────>│                       │                       │
+5.511      │<─────── 200 OK ───────│                       │                       │`;

describe('tail --flow', () => {
  it('draws one column per endpoint, an arrow per message with method or status and relative time; the header again when an endpoint or its name appears', () => {
    const ladder = new FlowLadder(false);
    expect(CALL.flatMap((e) => ladder.lines(e)).join('\n')).toBe(LADDER);
  });

  it('--call-id keeps the call and the Diameter correlated to it (its correlation id is the Call-ID), nothing else', () => {
    const keep = tailFilter({ callId: ['call-1'] });
    const other = ev(0, UAC, PROXY, 'OPTIONS sip:lab', { callId: 'call-2', correlationId: 'call-2' });
    const otherRx = ev(0, PROXY, PCRF, 'AAR Rx', { proto: 'diameter', callId: undefined, correlationId: 'pcscf;rx;9' });
    expect([...CALL, other, otherRx].filter(keep)).toEqual(CALL);
  });

  it('colours arrows only when asked (stdout a TTY): requests cyan, 1xx yellow, 2xx green, errors red, Diameter magenta', () => {
    const ladder = new FlowLadder(true);
    const arrows = CALL.map((e) => ladder.lines(e).at(-1)!);
    expect(arrows.map((l) => /\x1b\[(\d+)m/.exec(l)?.[1])).toEqual(['36', '33', '35', '35', '36', '33', '33', '32', '32', '36', '36', '32']);
    const busy = new FlowLadder(true).lines(ev(0, UAS, PROXY, '486 Busy Here')).at(-1)!;
    expect(busy).toMatch(/\x1b\[31m─+ 486 Busy Here ─+>\x1b\[0m│$/);
  });

  it('colour is wanted on a terminal unless NO_COLOR is set to something', () => {
    expect(colourWanted(true, {})).toBe(true);
    expect(colourWanted(true, { NO_COLOR: '' })).toBe(true);
    expect(colourWanted(true, { NO_COLOR: '1' })).toBe(false);
    expect(colourWanted(false, {})).toBe(false);
  });

  it('shows control characters from traffic as \\xNN', () => {
    const lines = new FlowLadder(false).lines(ev(0, UAC, PROXY, 'IN\x1bVITE sip:x', { comm: 'a\x07b' }));
    for (const l of lines) expect(l).not.toMatch(/[\x00-\x1f]/);
    expect(lines.join('\n')).toContain('a\\x07b');
  });
});
