/**
 * Selective forwarding on the real kernel: sipp sends a mix of REGISTER, OPTIONS, MESSAGE and INVITE
 * dialogs (some asserting the identity carol on their INVITE only) while one agent per mode and filter
 * runs, each limited to the UAS's port. What each forwards must be exactly the wire's messages (tcpdump
 * on lo) that the mode selects, byte for byte; the rest counted as filtered. `hepbpf tail` attached to
 * one of them applies the same filters. The expected sets are computed here from the wire, by the rules
 * the README states, with no code from src/.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { sippUac, sippUas } from '../helpers/sipp.js';
import { startTail, type RunningTail } from '../helpers/tail.js';
import { callIdOf, LoopbackCapture, type WireMessage } from '../helpers/wire.js';

const why = kernelSuiteSkipReason('end-to-end selection tests');

const SCENARIOS = join(REPO, 'test/fixtures/sipp');
const CALLS = 3;

/** `1 INVITE` -> ['1', 'INVITE'] */
const cseqOf = (m: WireMessage) => /\r\nCSeq[ \t]*:[ \t]*(\d+)[ \t]+(\S+)/i.exec(m.payload.toString('latin1'))!.slice(1, 3);
const assertsCarol = (m: WireMessage) => /\r\nP-Asserted-Identity[ \t]*:[^\r\n]*sip:carol@/i.test(m.payload.toString('latin1'));
/** A transaction: the Call-ID and CSeq number (an ACK has its INVITE's). */
const transactionOf = (m: WireMessage) => `${callIdOf(m.payload)}|${cseqOf(m)[0]}`;

interface Truth {
  carolTransactions: Set<string>;
  carolCalls: Set<string>;
}

interface Case {
  name: string;
  args: string[];
  selects(m: WireMessage, t: Truth): boolean;
}

const CASES: Case[] = [
  { name: 'message mode, --exclude-method OPTIONS', args: ['--exclude-method', 'OPTIONS'], selects: (m) => cseqOf(m)[1] !== 'OPTIONS' },
  { name: 'message mode, --user carol', args: ['--user', 'carol'], selects: (m) => assertsCarol(m) },
  { name: 'transaction mode, --user carol', args: ['--user', 'carol', '--selection-mode', 'transaction'], selects: (m, t) => t.carolTransactions.has(transactionOf(m)) },
  { name: 'dialog mode, --user carol', args: ['--user', 'carol', '--selection-mode', 'dialog'], selects: (m, t) => t.carolCalls.has(callIdOf(m.payload)!) },
  { name: 'transaction mode, --exclude-user carol', args: ['--exclude-user', 'carol', '--selection-mode', 'transaction'], selects: (m, t) => !t.carolTransactions.has(transactionOf(m)) },
  { name: 'dialog mode, --exclude-user carol', args: ['--exclude-user', 'carol', '--selection-mode', 'dialog'], selects: (m, t) => !t.carolCalls.has(callIdOf(m.payload)!) },
];

const wireKey = (m: WireMessage) => `${m.srcIp}|${m.srcPort}|${m.dstIp}|${m.dstPort}|${m.payload.toString('base64')}`;
const sorted = (keys: string[]) => [...keys].sort();

describe.skipIf(!!why)('selective forwarding: sipp mix, one agent per mode, checked against the wire', () => {
  let dir: string;
  const agents: RunningAgent[] = [];
  const collectors: HepCollector[] = [];
  let tail: RunningTail | undefined;
  /** The same, as an operator reads it (its lines go in the README). */
  let tailLines: RunningTail | undefined;
  let wire: WireMessage[] = [];
  let truth: Truth;
  const uacCodes: Array<number | null> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-selection-'));
    const uasPort = await freePort();
    for (const c of CASES) collectors.push(await udpCollector());
    const env = (i: number) => ({ ...process.env, HEPBPF_SOCKET: join(dir, `${i}.sock`) });
    // Every agent running over the same traffic. Each captures only the UAS's port (--sip-ports), and
    // keeps only it (--port, with the case's filters): TLS plaintext (e.g. a soak run's) is captured
    // on any port. Started one per core at a time: most of a start is the kernel verifying the BPF
    // programs (about 15 s of CPU each, 2026-12-02), so six at once on 2 cores took each start
    // towards 100 s; this way each waits only for its own.
    const only = ['--sip-ports', String(uasPort), '--port', String(uasPort)];
    const atOnce = availableParallelism();
    for (let first = 0; first < CASES.length; first += atOnce) {
      const cases = CASES.slice(first, first + atOnce);
      const started = await Promise.allSettled(cases.map((c, j) => startAgent(['run', '--hep', collectors[first + j].url, ...only, ...c.args], env(first + j), 60_000)));
      // Those that started are stopped by afterAll even when another did not.
      for (const s of started) if (s.status === 'fulfilled') agents.push(s.value);
      for (const s of started) if (s.status === 'rejected') throw s.reason;
    }
    // tail attached to the first agent (all but OPTIONS), with the filters of the dialog case
    tail = await startTail(['--json', '--full', '--port', String(uasPort), '--user', 'carol', '--selection-mode', 'dialog'], env(0));
    tailLines = await startTail(['--port', String(uasPort), '--user', 'carol', '--selection-mode', 'dialog'], env(0));

    const capture = await LoopbackCapture.start(join(dir, 'wire.pcap'), [uasPort]);
    const uas = await sippUas(uasPort, 'u1', dir, ['-sf', join(SCENARIOS, 'mix-uas.xml')]);
    try {
      const uac = async (scenario: string[]) => uacCodes.push(await sippUac(uasPort, await freePort(), 'u1', CALLS, dir, 50, scenario));
      for (const method of ['REGISTER', 'OPTIONS', 'MESSAGE']) {
        const file = join(dir, `${method}.xml`);
        writeFileSync(file, readFileSync(join(SCENARIOS, 'request-uac.xml'), 'utf8').replaceAll('__METHOD__', method));
        await uac(['-sf', file, '-s', method === 'MESSAGE' ? 'bob' : 'alice']);
      }
      for (const pai of ['carol', 'dave']) await uac(['-sf', join(SCENARIOS, 'invite-uac.xml'), '-s', 'bob', '-key', 'pai', pai]);
    } finally {
      await uas.stop();
      wire = await capture.stop();
    }
    const carol = wire.filter(assertsCarol);
    truth = { carolTransactions: new Set(carol.map(transactionOf)), carolCalls: new Set(carol.map((m) => callIdOf(m.payload)!)) };
  }, 240_000);

  afterAll(async () => {
    await tail?.stop();
    await tailLines?.stop();
    await Promise.all(agents.map((a) => a.stop()));
    await Promise.all(collectors.map((c) => c.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('sipp ran the whole mix', () => {
    expect(uacCodes).toEqual([0, 0, 0, 0, 0]);
    const requests = wire.filter((m) => !m.payload.toString('latin1').startsWith('SIP/2.0'));
    const methods = new Set(requests.map((m) => cseqOf(m)[1]));
    expect(methods).toEqual(new Set(['REGISTER', 'OPTIONS', 'MESSAGE', 'INVITE', 'ACK', 'BYE']));
    expect(truth.carolCalls.size).toBe(CALLS);
  });

  CASES.forEach((c, i) => {
    it(`${c.name}: forwards exactly the messages the mode selects, byte for byte`, async () => {
      const want = wire.filter((m) => c.selects(m, truth));
      expect(want.length).toBeGreaterThan(0);
      expect(want.length).toBeLessThan(wire.length);
      const packets = (await collectors[i].waitFor(want.length)).map((p) => decodeHep(p));
      const got = packets.map((p) => `${p.srcIp}|${p.srcPort}|${p.dstIp}|${p.dstPort}|${p.payload!.toString('base64')}`);
      expect(sorted(got)).toEqual(sorted(want.map(wireKey)));
      for (const p of packets) expect(p.correlationId).toBe(callIdOf(p.payload!));
    });
  });

  it('hepbpf tail attached to an agent applies the same filters', async () => {
    const want = wire.filter((m) => truth.carolCalls.has(callIdOf(m.payload)!));
    const out = await tail!.waitForOutput((o) => o.split('\n').length - 1 >= want.length, 20_000).catch(() => tail!.out());
    await new Promise((r) => setTimeout(r, 500)); // one more would show now
    const records = tail!.out().trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { src: { ip: string; port: number }; dst: { ip: string; port: number }; payload: string });
    expect(out.length).toBeGreaterThan(0);
    console.log(`hepbpf tail --user carol --selection-mode dialog:\n${tailLines!.out()}`);
    expect(sorted(records.map((r) => `${r.src.ip}|${r.src.port}|${r.dst.ip}|${r.dst.port}|${Buffer.from(r.payload, 'latin1').toString('base64')}`))).toEqual(sorted(want.map(wireKey)));
  });

  it('counts what each agent left out as filtered, not as loss', async () => {
    await tail?.stop();
    await tailLines?.stop();
    const rows: string[] = [];
    // one at a time: six agents detaching their probes at once on a busy machine can pass stop()'s 10 s
    for (const [i, agent] of agents.entries()) {
      const { code, final } = await agent.stop();
      const capture = (final as { capture?: { forwarded: number; selection: { filtered: { selection: number }; evicted: number } } } | undefined)?.capture;
      const want = wire.filter((m) => CASES[i].selects(m, truth)).length;
      rows.push(`${CASES[i].args.join(' ').padEnd(48)} forwarded ${capture?.forwarded} of ${wire.length}`);
      // other ports' TLS plaintext, if any, is filtered too
      const filtered = Math.min(capture?.selection.filtered.selection ?? 0, wire.length - want);
      expect({ case: CASES[i].name, code, forwarded: capture?.forwarded, filtered, evicted: capture?.selection.evicted }).toEqual({
        case: CASES[i].name, code: 0, forwarded: want, filtered: wire.length - want, evicted: 0,
      });
    }
    console.log(rows.join('\n'));
  }, 120_000);
});
