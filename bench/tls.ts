/**
 * `npm run bench -- --only=tls`: what TLS capture costs the application, in one run:
 *   - a 1 KiB SSL_write + SSL_read pair (bench/tls_cost.c, Debian's libssl 3) without the agent,
 *     with it on the emulated probe sites it chooses (src/capture/tls-sites.ts), and with every
 *     function forced onto its single-stepped entry + return probes (HEPBPF_TLS_PROBES=entry):
 *     back to back (as fast as one thread goes: ~90k records/s, which keeps the agent's JS busy on
 *     the other of two cores), and paced at PACED_RATE pairs/s as the application thread's CPU;
 *   - the max calls per second through the Kamailio edge -> TLS -> core hop of the tests
 *     (test/helpers/kamailio-tls.ts), without the agent and with it in each mode.
 * Modes alternate within each round, and medians are reported. The pair is reported in wall-clock
 * time and in the application's own CPU time (what the probes cost it; on a busy shared machine the
 * wall clock also carries everything else that runs).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startKamailioTlsHop, type KamailioTlsHop } from '../test/helpers/kamailio-tls.js';
import { PROBES_ENV } from '../src/capture/tls-sites.js';
import { median } from './median.js';

export interface TlsBenchInput {
  say(line?: string): void;
  table(rows: string[][]): void;
  /** Rows of the run's summary table: figure, no agent, agent, target. */
  summary: string[][];
  /** Starts the agent forwarding to `hep`; stop() ends it. */
  startAgent(hep: string, env: NodeJS.ProcessEnv): Promise<{ stop(): Promise<unknown> }>;
  /** A HEP/UDP collector that reads and counts what it gets (bench/udp_load.c hepcount). */
  startCollector(): Promise<{ port: number; stop(): Promise<number> }>;
  /** bench/tls_cost.c, built, and the certificate and key it serves. */
  tlsCost: string;
  cert: string;
  key: string;
}

type Mode = 'none' | 'auto' | 'entry';
const MODES: Mode[] = ['none', 'auto', 'entry'];
const LABEL: Record<Mode, string> = { none: 'no agent', auto: 'agent, emulated sites', entry: 'agent, entry+return (forced)' };
const PAIR_ROUNDS = 5;
const PAIR_ITERATIONS = '50000';
const PACED_RATE = '5000';
const PACED_ITERATIONS = '10000';
/** Rates tried first for the Kamailio hop, each for STEP_SECS, up to the first that fails; then bisection down to HOP_RESOLUTION. */
const HOP_RATES = [100, 200, 400, 800, 1600, 3200];
const HOP_RESOLUTION = 25;
const HOP_ROUNDS = 3;
const STEP_SECS = 2;
/** A step that runs this much longer than its calls take at the offered rate is overloaded. */
const STEP_SLACK_SECS = 2;

/** bench/tls_cost.c prints the mean wall-clock and CPU ns per pair (paced: the CPU ns only, as wall). */
const runC = (bin: string, ...argv: string[]) =>
  new Promise<{ wall: number; cpu: number }>((res, rej) =>
    execFile(bin, argv, { encoding: 'utf8' }, (err, stdout) => {
      const [wall, cpu] = stdout.trim().split(' ').map(Number);
      return err ? rej(err) : res({ wall, cpu });
    }),
  );

/**
 * Runs `fn` with the agent in `mode` (none: without it), forwarding to a collector that reads: to a
 * port nobody reads, every HEP datagram would cost the agent's kernel an ICMP port unreachable and
 * the agent a sendmmsg() per refusal, which no real collector costs.
 */
async function withAgent<T>(r: TlsBenchInput, mode: Mode, sinkPort: number, fn: () => Promise<T>): Promise<T> {
  if (mode === 'none') return fn();
  const agent = await r.startAgent(`udp://127.0.0.1:${sinkPort}`, { ...process.env, [PROBES_ENV]: mode });
  try {
    await new Promise((r) => setTimeout(r, 1000)); // start-up work (JIT, first GC) is not what is measured
    return await fn();
  } finally {
    await agent.stop();
  }
}

/** Whether every call of a STEP_SECS run at `rate` succeeds without falling behind. */
async function keepsUp(hop: KamailioTlsHop, rate: number): Promise<boolean> {
  const t0 = performance.now();
  const code = await hop.runCalls(rate * STEP_SECS, rate);
  const secs = (performance.now() - t0) / 1000;
  hop.forgetReports();
  return code === 0 && secs <= STEP_SECS + STEP_SLACK_SECS;
}

/** The highest rate, to HOP_RESOLUTION, at which the hop keeps up: HOP_RATES up to the first failure, then bisection. */
async function maxCallsPerSecond(hop: KamailioTlsHop): Promise<number> {
  let ok = 0;
  let fail = 0;
  for (const rate of HOP_RATES) {
    if (!(await keepsUp(hop, rate))) {
      fail = rate;
      break;
    }
    ok = rate;
  }
  if (!fail) return ok;
  while (fail - ok > HOP_RESOLUTION) {
    const mid = Math.round((ok + fail) / 2 / HOP_RESOLUTION) * HOP_RESOLUTION;
    if (mid <= ok || mid >= fail) break;
    if (await keepsUp(hop, mid)) ok = mid;
    else fail = mid;
  }
  return ok;
}

export async function tlsBench(r: TlsBenchInput): Promise<Record<string, unknown>> {
  const collector = await r.startCollector();
  try {
    return await measure(r, collector.port);
  } finally {
    await collector.stop();
  }
}

async function measure(r: TlsBenchInput, sinkPort: number): Promise<Record<string, unknown>> {
  const pair: Record<Mode, { wall: number; cpu: number }[]> = { none: [], auto: [], entry: [] };
  const paced: Record<Mode, number[]> = { none: [], auto: [], entry: [] };
  r.say(`\n(tls) TLS capture cost to the application (median of ${PAIR_ROUNDS} rounds, modes alternating)`);
  for (let round = 0; round < PAIR_ROUNDS; round++) {
    const order = round % 2 ? [...MODES].reverse() : MODES;
    for (const mode of order)
      await withAgent(r, mode, sinkPort, async () => {
        pair[mode].push(await runC(r.tlsCost, 'ssl', PAIR_ITERATIONS, r.cert, r.key));
        paced[mode].push((await runC(r.tlsCost, 'ssl', PACED_ITERATIONS, r.cert, r.key, PACED_RATE)).wall);
      });
  }
  const wall = (mode: Mode) => median(pair[mode].map((p) => p.wall));
  const cpu = (mode: Mode) => median(pair[mode].map((p) => p.cpu));
  const pacedCpu = (mode: Mode) => median(paced[mode]);
  const rows = [['SSL_write+SSL_read pair, 1 KiB, OpenSSL 3', 'wall ns', 'added', 'CPU ns', 'added', `paced ${PACED_RATE}/s, CPU ns`, 'added']];
  for (const mode of MODES) {
    const added = (f: (m: Mode) => number) => (mode === 'none' ? '-' : `${(f(mode) - f('none')).toFixed(0)} ns`);
    rows.push([LABEL[mode], wall(mode).toFixed(0), added(wall), cpu(mode).toFixed(0), added(cpu), pacedCpu(mode).toFixed(0), added(pacedCpu)]);
  }
  r.table(rows);
  r.summary.push([
    'SSL_write+SSL_read pair, 1 KiB (emulated sites), wall / CPU',
    `${wall('none').toFixed(0)} / ${cpu('none').toFixed(0)} ns`,
    `+${(wall('auto') - wall('none')).toFixed(0)} / +${(cpu('auto') - cpu('none')).toFixed(0)} ns`,
    '<= +5000 ns',
  ]);
  r.summary.push([
    `the same pair paced at ${PACED_RATE}/s (emulated sites), application CPU`,
    `${pacedCpu('none').toFixed(0)} ns`,
    `+${(pacedCpu('auto') - pacedCpu('none')).toFixed(0)} ns`,
    '-',
  ]);

  const dir = mkdtempSync(join(tmpdir(), 'hepbpf-bench-tls-'));
  const rounds: Record<Mode, number[]> = { none: [], auto: [], entry: [] };
  try {
    const hop = await startKamailioTlsHop(dir);
    try {
      for (let round = 0; round < HOP_ROUNDS; round++) {
        const order = round % 2 ? [...MODES].reverse() : MODES;
        for (const mode of order) rounds[mode].push(await withAgent(r, mode, sinkPort, () => maxCallsPerSecond(hop)));
      }
    } finally {
      await hop.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const cps = Object.fromEntries(MODES.map((m) => [m, median(rounds[m])])) as Record<Mode, number>;
  r.say(`(tls) Kamailio hop: median of ${HOP_ROUNDS} alternating rounds, ${STEP_SECS} s steps, resolution ${HOP_RESOLUTION} calls/s`);
  const hopRows = [['Kamailio edge -> TLS -> core, max calls/s', 'calls/s', 'rounds', 'of untraced']];
  for (const mode of MODES) hopRows.push([LABEL[mode], String(cps[mode]), rounds[mode].join(' '), `${(cps[mode] / cps.none).toFixed(2)}`]);
  r.table(hopRows);
  r.summary.push(['Kamailio TLS hop max cps (emulated sites)', `${cps.none}/s`, `${cps.auto}/s (${(cps.auto / cps.none).toFixed(2)})`, '>= 0.9 of untraced']);
  return {
    pairNs: pair,
    pairMedianNs: Object.fromEntries(MODES.map((m) => [m, { wall: wall(m), cpu: cpu(m), pacedCpu: pacedCpu(m) }])),
    pairPacedCpuNs: paced,
    hopMaxCallsPerSecond: cps,
    hopRounds: rounds,
  };
}
