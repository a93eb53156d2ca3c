import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Selection, sipIdentities, type Selectable, type SelectionOptions } from '../../src/enrich/selection.js';
import { parseSip, sipSummary } from '../../src/protocols/sip.js';
import { addSelectionOptions } from '../../src/cli/selection-options.js';
import { applyConfig } from '../../src/cli/config.js';
import { Agent } from '../../src/agent.js';
import { ReplaySource } from '../../src/capture/replay.js';
import { eventSummary, type CaptureEvent } from '../../src/enrich/event.js';
import { memoryContainers, PCSCF, Recorder, SCSCF } from '../../bench/traffic.js';
import { diameterMessage } from '../helpers/diameter.js';

const A = { ip: '10.0.0.1', port: 5060 };
const B = { ip: '10.0.0.2', port: 5080 };

interface Sip {
  start: string;
  callId: string;
  cseq: string;
  from?: string;
  to?: string;
  pai?: string;
}

/** One SIP message as selection sees it, `at` ms into the test. */
function sip(m: Sip, at = 0, src = A, dst = B): Selectable {
  const headers = [
    m.start,
    `From: ${m.from ?? '"Alice" <sip:alice@ims.test>;tag=1'}`,
    `To: ${m.to ?? '<sip:bob@ims.test>'}`,
    `Call-ID: ${m.callId}`,
    `CSeq: ${m.cseq}`,
    ...(m.pai ? [`P-Asserted-Identity: ${m.pai}`] : []),
    'Content-Length: 0',
  ];
  const payload = Buffer.from(headers.join('\r\n') + '\r\n\r\n');
  return { src, dst, payload, sip: parseSip(payload)!, correlationId: m.callId, nowMs: at };
}

const diameter = (correlationId: string, at = 0): Selectable => ({ src: { ip: '10.0.0.3', port: 3868 }, dst: { ip: '10.0.0.4', port: 40000 }, payload: Buffer.alloc(20), correlationId, nowMs: at });

/** A call: INVITE (with a P-Asserted-Identity), 100, 180, 200, ACK, BYE, 200. */
function call(callId: string, pai = '<sip:carol@ims.test>', t0 = 0): Selectable[] {
  return [
    sip({ start: 'INVITE sip:bob@ims.test SIP/2.0', callId, cseq: '1 INVITE', pai }, t0),
    sip({ start: 'SIP/2.0 100 Trying', callId, cseq: '1 INVITE' }, t0 + 1, B, A),
    sip({ start: 'SIP/2.0 180 Ringing', callId, cseq: '1 INVITE' }, t0 + 2, B, A),
    sip({ start: 'SIP/2.0 200 OK', callId, cseq: '1 INVITE' }, t0 + 3, B, A),
    sip({ start: 'ACK sip:bob@ims.test SIP/2.0', callId, cseq: '1 ACK' }, t0 + 4),
    sip({ start: 'BYE sip:bob@ims.test SIP/2.0', callId, cseq: '2 BYE' }, t0 + 5),
    sip({ start: 'SIP/2.0 200 OK', callId, cseq: '2 BYE' }, t0 + 6, B, A),
  ];
}

const options = (method: string, callId: string, t = 0) => [
  sip({ start: `${method} sip:bob@ims.test SIP/2.0`, callId, cseq: `1 ${method}` }, t),
  sip({ start: 'SIP/2.0 200 OK', callId, cseq: `1 ${method}` }, t + 1, B, A),
];

/** Which of `msgs` are selected, as "index:summary". */
function selected(o: SelectionOptions, msgs: Selectable[]): string[] {
  const s = new Selection(o);
  return msgs.flatMap((m, i) => (s.select(m) ? [`${i}:${m.sip ? sipSummary(m.sip).split(' ')[0] : 'diameter'}`] : []));
}

describe('selection (src/enrich/selection.ts)', () => {
  it('reads the identities of the Request-URI, From, To and each P-Asserted-Identity, in any header case and compact form', () => {
    const payload = Buffer.from('INVITE sip:Bob@IMS.test;user=phone SIP/2.0\r\nf: "A" <sip:alice@ims.test>;tag=1\r\nTO: <tel:+4930123>\r\np-asserted-identity: <sip:carol@ims.test>, <tel:+4930999>\r\nCall-ID: x\r\n\r\nFrom: <sip:body@x>\r\n');
    expect(sipIdentities(payload, parseSip(payload)!)).toEqual(['bob@ims.test', 'alice@ims.test', '+4930123', 'carol@ims.test', '+4930999']);
  });

  it('with no filter selects everything and is inactive', () => {
    const s = new Selection({});
    expect(s.active).toBe(false);
    expect(call('c').every((m) => s.select(m))).toBe(true);
  });

  it('--exclude-method leaves out the requests of those methods and their responses, also inside a dialog, in every mode', () => {
    const msgs = [...options('OPTIONS', 'o1'), ...call('c1'), ...options('NOTIFY', 'n1')];
    // an in-dialog OPTIONS between the call's ACK and BYE
    msgs.splice(7, 0, ...options('OPTIONS', 'c1'));
    for (const selectionMode of ['message', 'transaction', 'dialog'] as const) {
      expect(selected({ excludeMethod: ['OPTIONS', 'NOTIFY'], selectionMode }, msgs)).toEqual(['2:INVITE', '3:100', '4:180', '5:200', '6:ACK', '9:BYE', '10:200']);
    }
  });

  it('a user match reaches the message, its transaction or its dialog, as the mode says', () => {
    const msgs = [...call('c1', '<sip:carol@ims.test>'), ...call('c2', '<sip:dave@ims.test>')];
    expect(selected({ user: ['carol'] }, msgs)).toEqual(['0:INVITE']);
    expect(selected({ user: ['carol@ims.*'], selectionMode: 'transaction' }, msgs)).toEqual(['0:INVITE', '1:100', '2:180', '3:200', '4:ACK']);
    expect(selected({ user: ['CAROL'], selectionMode: 'dialog' }, msgs)).toEqual(['0:INVITE', '1:100', '2:180', '3:200', '4:ACK', '5:BYE', '6:200']);
    // From and To are in every message of both calls
    expect(selected({ user: ['alice'] }, msgs)).toHaveLength(14);
  });

  it('an exclusion wins and, in dialog mode, leaves out the rest of the dialog', () => {
    const msgs = [...call('c1', '<sip:carol@ims.test>'), ...call('c2', '<sip:dave@ims.test>')];
    expect(selected({ excludeUser: ['carol'], selectionMode: 'dialog' }, msgs)).toEqual(['7:INVITE', '8:100', '9:180', '10:200', '11:ACK', '12:BYE', '13:200']);
    expect(selected({ excludeUser: ['carol'] }, msgs)).toHaveLength(13);
    expect(selected({ user: ['alice'], excludeCallId: ['c2'], selectionMode: 'dialog' }, msgs)).toHaveLength(7);
  });

  it('kinds of include filter must all match; values of one kind are alternatives', () => {
    const msgs = [...call('c1'), ...options('MESSAGE', 'm1'), ...options('REGISTER', 'r1')];
    expect(selected({ method: ['MESSAGE', 'REGISTER'] }, msgs)).toEqual(['7:MESSAGE', '8:200', '9:REGISTER', '10:200']);
    expect(selected({ method: ['MESSAGE', 'REGISTER'], callId: ['r*'] }, msgs)).toEqual(['9:REGISTER', '10:200']);
    expect(selected({ method: ['INVITE'], port: [5060], address: ['10.0.0.0/24'] }, msgs)).toEqual(['0:INVITE', '1:100', '2:180', '3:200']);
    expect(selected({ address: ['10.0.0.9', 'fd00::/8'] }, msgs)).toEqual([]);
    expect(selected({ excludeAddress: ['10.0.0.2'] }, msgs)).toEqual([]);
    const v6 = { ...sip({ start: 'OPTIONS sip:x SIP/2.0', callId: 'v6', cseq: '1 OPTIONS' }), src: { ip: 'fd00::1', port: 5060 } };
    expect(selected({ address: ['fd00::/8'] }, [v6])).toHaveLength(1);
  });

  it('in dialog mode the Diameter correlated to a selected call follows it, and the dialog ends with its BYE', () => {
    const c1 = call('c1', '<sip:carol@ims.test>');
    const msgs = [c1[0], diameter('c1', 1), diameter('c2', 1), diameter('pcscf;rx;9', 1), ...c1.slice(1), diameter('c1', 10), diameter('c1', 40_000)];
    expect(selected({ user: ['carol'], selectionMode: 'dialog' }, msgs)).toEqual(['0:INVITE', '1:diameter', '4:100', '5:180', '6:200', '7:ACK', '8:BYE', '9:200', '10:diameter']);
    // the same Diameter, left out with its call
    expect(selected({ excludeUser: ['carol'], selectionMode: 'dialog' }, msgs)).toEqual(['2:diameter', '3:diameter', '11:diameter']);
  });

  it("an operator's key that appears mid-dialog (--correlation-header) does not split it: SIP by Call-ID, the call's Diameter by the key", () => {
    // The key arrives with the 200 OK: from there on the call's messages and its Diameter carry it as correlation id.
    const keyed = (m: Selectable): Selectable => ({ ...m, correlationId: 'op-key-7' });
    const c1 = call('c1', '<sip:carol@ims.test>');
    const msgs = [...c1.slice(0, 3), ...c1.slice(3).map(keyed), diameter('op-key-7', 7), diameter('other-key', 7)];
    expect(selected({ user: ['carol'], selectionMode: 'dialog' }, msgs)).toEqual(['0:INVITE', '1:100', '2:180', '3:200', '4:ACK', '5:BYE', '6:200', '7:diameter']);
    expect(selected({ excludeUser: ['carol'], selectionMode: 'dialog' }, msgs)).toEqual(['8:diameter']);
    expect(selected({ user: ['carol'], selectionMode: 'transaction' }, msgs)).toEqual(['0:INVITE', '1:100', '2:180', '3:200', '4:ACK']);
  });

  it("an operator's key that moves between dialogs within one ms leads the Diameter to the dialog that carried it last", () => {
    const keyed = (m: Selectable): Selectable => ({ ...m, correlationId: 'op-key-7', nowMs: 5 });
    const [c1, c2] = [call('c1', '<sip:carol@ims.test>').map(keyed), call('c2', '<sip:dave@ims.test>').map(keyed)];
    const msgs = [c1[0], c1[1], c2[0], c1[2], diameter('op-key-7', 5), c2[1], diameter('op-key-7', 5)];
    expect(selected({ user: ['carol'], excludeUser: ['dave'], selectionMode: 'dialog' }, msgs)).toEqual(['0:INVITE', '1:100', '3:180', '4:diameter']);
  });

  it('a connection event is judged by its ends when its connection carried no message', () => {
    const ends = (o: SelectionOptions) => new Selection(o).selectsEnds(A, B);
    expect([ends({}), ends({ excludeMethod: ['OPTIONS'] }), ends({ address: ['10.0.0.0/24'] }), ends({ port: [5080], excludeUser: ['x'] })]).toEqual([true, true, true, true]);
    expect([ends({ address: ['10.0.1.0/24'] }), ends({ excludePort: [5060] }), ends({ callId: ['c1'] }), ends({ user: ['carol'], address: ['10.0.0.1'] })]).toEqual([false, false, false, false]);
  });

  it('forgets a dialog idle past the timeout, a finished transaction after a linger, and counts what it left out', () => {
    const s = new Selection({ user: ['carol'], selectionMode: 'dialog', selectionTimeout: 10 });
    const [invite, ...rest] = call('c1');
    expect(s.select(invite)).toBe(true);
    expect(s.select({ ...rest[0], nowMs: 9_000 })).toBe(true);
    expect(s.select({ ...rest[1], nowMs: 19_001 })).toBe(false);
    expect(s.stats()).toEqual({ filtered: { selection: 1, container: 0 }, entries: 0, evicted: 0 });
    // A REGISTER's dialog ends with its final response: forgotten after the linger, not the timeout
    const r = new Selection({ user: ['alice'], selectionMode: 'dialog', selectionTimeout: 3600 });
    const [register, ok] = options('REGISTER', 'r1');
    expect(r.select(register) && r.select(ok)).toBe(true);
    expect(r.select({ ...sip({ start: 'SIP/2.0 200 OK', callId: 'r1', cseq: '1 REGISTER', from: '<sip:x@y>', to: '<sip:x@y>' }), nowMs: 33_000 })).toBe(false);
  });

  it('keeps at most --selection-max-entries transactions or dialogs, counting those forgotten early', () => {
    const s = new Selection({ excludeUser: ['alice'], selectionMode: 'dialog', selectionMaxEntries: 100 });
    for (let i = 0; i < 10_000; i++) s.select(sip({ start: 'INVITE sip:bob@ims.test SIP/2.0', callId: `hostile-${i}`, cseq: '1 INVITE' }, i));
    expect(s.stats()).toEqual({ filtered: { selection: 10_000, container: 0 }, entries: 100, evicted: 9_900 });
  });

  it('options: comma lists, globs, validated with errors naming the option, also from HEPBPF_* variables', () => {
    const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      let got: Record<string, unknown> = {};
      const cmd = addSelectionOptions(new Command('run').exitOverride().configureOutput({ writeErr: () => {} }))
        .hook('preAction', (c) => applyConfig(c, env))
        .action((o) => {
          got = o;
        });
      cmd.parse(argv, { from: 'user' });
      return got;
    };
    expect(parse(['--exclude-method', 'options,NOTIFY', '--port', '5060', '--port', '5061,5062', '--user', 'alice*', '--selection-mode', 'dialog'])).toMatchObject({
      excludeMethod: ['OPTIONS', 'NOTIFY'], port: [5060, 5061, 5062], user: ['alice*'], selectionMode: 'dialog', selectionTimeout: 3600, selectionMaxEntries: 100_000,
    });
    expect(parse([], { HEPBPF_EXCLUDE_METHOD: 'OPTIONS,NOTIFY', HEPBPF_ADDRESS: '10.0.0.0/8', HEPBPF_SELECTION_MODE: 'transaction' })).toMatchObject({
      excludeMethod: ['OPTIONS', 'NOTIFY'], address: ['10.0.0.0/8'], selectionMode: 'transaction',
    });
    expect(() => parse(['--address', '10.0.0.0/33'])).toThrow('--address must be an IP address or a CIDR prefix (10.0.0.0/8, fd00::/8), got "10.0.0.0/33"');
    expect(() => parse(['--exclude-address', 'pbx.example'])).toThrow('--exclude-address must be an IP address or a CIDR prefix');
    expect(() => parse(['--method', 'IN VITE'])).toThrow('--method takes SIP method names (INVITE, OPTIONS), got "IN VITE"');
    expect(() => parse(['--exclude-port', '70000'])).toThrow('--exclude-port must be an integer from 1 to 65535, got "70000"');
    expect(() => parse(['--selection-mode', 'call'])).toThrow("Allowed choices are message, transaction, dialog");
    expect(() => parse([], { HEPBPF_SELECTION_TIMEOUT: '0' })).toThrow('HEPBPF_SELECTION_TIMEOUT=0: --selection-timeout must be an integer from 1 to 86400, got "0"');
  });

  it('in the pipeline: selected messages reach the sink, Diameter correlated to a selected call with them, the rest counted as filtered', async () => {
    const rec = new Recorder(process.hrtime.bigint());
    const invite = Buffer.from('INVITE sip:bob@ims.test SIP/2.0\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\nP-Charging-Vector: icid-value=icid-1\r\nContent-Length: 0\r\n\r\n');
    const other = Buffer.from('INVITE sip:dave@ims.test SIP/2.0\r\nCall-ID: call-2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n');
    const aar = diameterMessage({ request: true, proxiable: true, command: 265, app: 16777236, hopByHop: 1, endToEnd: 1, avps: [{ code: 263, value: 'pcscf;rx;1' }, { code: 505, vendor: 10415, value: 'icid-1' }] });
    rec.exchange({ from: PCSCF, to: SCSCF, fromPort: 5060, toPort: 5070, ipProto: 17, l7: 1, writes: [invite], messages: 1 });
    rec.exchange({ from: PCSCF, to: SCSCF, fromPort: 5060, toPort: 5070, ipProto: 17, l7: 1, writes: [other], messages: 1 });
    rec.exchange({ from: PCSCF, to: SCSCF, fromPort: 40001, toPort: 3868, ipProto: 6, l7: 2, writes: [aar], messages: 1 });
    const source = new ReplaySource();
    const got: CaptureEvent[] = [];
    const selection = new Selection({ user: ['bob'], selectionMode: 'dialog' });
    const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: memoryContainers(), selection, hold: { holdMs: 0 }, sink: (ev) => got.push(ev) });
    await agent.start();
    for (const batch of rec.batches()) source.replay(batch);
    await agent.stop();
    expect(got.map((e) => `${eventSummary(e).split(' ')[0]} ${e.correlationId}`)).toEqual(['INVITE call-1', 'AAR call-1']);
    expect(agent.stats()).toMatchObject({ forwarded: 2, selection: { filtered: { selection: 1, container: 0 }, entries: 1 } });
  });
});
