/**
 * What TLS capture costs the application, in two sections:
 *   - `--only=tls`: a 1 KiB SSL_write + SSL_read pair (bench/tls_cost.c, Debian's libssl 3) without the agent,
 *     with it on the emulated probe sites it chooses (src/capture/tls-sites.ts), and with every
 *     function forced onto its single-stepped entry + return probes (HEPBPF_TLS_PROBES=entry):
 *     back to back (as fast as one thread goes: ~90k records/s, which keeps the agent's JS busy on
 *     the other of two cores), and paced at PACED_RATE pairs/s as the application thread's CPU;
 *   - `--only=tlshop`: the max calls per second through the Kamailio edge -> TLS -> core hop of the
 *     tests (test/helpers/kamailio-tls.ts), without the agent and with it in each mode (bench/call-rate.ts).
 * Modes alternate within each round, and medians are reported. The pair is reported in wall-clock
 * time and in the application's own CPU time (what the probes cost it; on a busy shared machine the
 * wall clock also carries everything else that runs).
 */
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startKamailioTlsHop } from '../test/helpers/kamailio-tls.js';
import { PROBES_ENV } from '../src/capture/tls-sites.js';
import { median } from './median.js';
import { callStep, describeSteps, maxCallRate, type CallRateResult, type CallRateSearch } from './call-rate.js';

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
  /** The bench's temporary directory, removed by the bench. */
  dir: string;
  port(): number;
}

type Mode = 'none' | 'auto' | 'entry';
const MODES: Mode[] = ['none', 'auto', 'entry'];
const LABEL: Record<Mode, string> = { none: 'no agent', auto: 'agent, emulated sites', entry: 'agent, entry+return (forced)' };
const PAIR_ROUNDS = 5;
const PAIR_ITERATIONS = '50000';
const PACED_RATE = '5000';
const PACED_ITERATIONS = '10000';
/** The Kamailio hop: steps of STEP_SECS doubling from 200 cps, then bisection to 50 cps; a search stops after 90 s of steps. */
const HOP_SEARCH: CallRateSearch = { first: 200, max: 6400, resolution: 50, budgetSecs: 90 };
const HOP_ROUNDS = 3;
const STEP_SECS = 2;

/** bench/tls_cost.c prints the mean wall-clock and CPU ns per pair (paced: the CPU ns only, as wall); a run ends within 2 minutes. */
const runC = (bin: string, ...argv: string[]) =>
  new Promise<{ wall: number; cpu: number }>((res, rej) =>
    execFile(bin, argv, { encoding: 'utf8', timeout: 120_000 }, (err, stdout) => {
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

/** Runs `measure` with a collector for the agent's HEP. */
async function withCollector<T>(r: TlsBenchInput, measure: (sinkPort: number) => Promise<T>): Promise<T> {
  const collector = await r.startCollector();
  try {
    return await measure(collector.port);
  } finally {
    await collector.stop();
  }
}

/** `--only=tls`: the SSL pair in each mode. */
export const tlsPairBench = (r: TlsBenchInput) => withCollector(r, (sinkPort) => measurePair(r, sinkPort));
/** `--only=tlshop`: the Kamailio TLS hop's max calls per second in each mode. */
export const tlsHopBench = (r: TlsBenchInput) => withCollector(r, (sinkPort) => measureHop(r, sinkPort));

async function measurePair(r: TlsBenchInput, sinkPort: number): Promise<Record<string, unknown>> {
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

  return {
    pairNs: pair,
    pairMedianNs: Object.fromEntries(MODES.map((m) => [m, { wall: wall(m), cpu: cpu(m), pacedCpu: pacedCpu(m) }])),
    pairPacedCpuNs: paced,
  };
}

async function measureHop(r: TlsBenchInput, sinkPort: number): Promise<Record<string, unknown>> {
  r.say(`\n(tlshop) Kamailio edge -> TLS -> core hop, max calls/s with 0 failed calls (steps of ${STEP_SECS} s, doubling from ${HOP_SEARCH.first} cps, then bisection to ${HOP_SEARCH.resolution} cps; ${HOP_ROUNDS} rounds, modes alternating; median)`);
  const dir = join(r.dir, 'tls-hop');
  mkdirSync(dir);
  const searches: Record<Mode, CallRateResult[]> = { none: [], auto: [], entry: [] };
  const hop = await startKamailioTlsHop(dir, { siptrace: false });
  try {
    const step = (cps: number) => callStep({ target: hop.edgePort, port: r.port(), dir }, cps, STEP_SECS);
    for (let round = 0; round < HOP_ROUNDS; round++) {
      const order = round % 2 ? [...MODES].reverse() : MODES;
      for (const mode of order) {
        const search = await withAgent(r, mode, sinkPort, () => maxCallRate(HOP_SEARCH, step));
        searches[mode].push(search);
        r.say(`  round ${round + 1}  ${LABEL[mode].padEnd(28)} ${search.maxCps} cps   steps: ${describeSteps(search)}`);
      }
    }
  } finally {
    await hop.stop();
  }
  const rounds = Object.fromEntries(MODES.map((m) => [m, searches[m].map((s) => s.maxCps)])) as Record<Mode, number[]>;
  const cps = Object.fromEntries(MODES.map((m) => [m, median(rounds[m])])) as Record<Mode, number>;
  const hopRows = [['Kamailio edge -> TLS -> core, max calls/s', 'calls/s', 'rounds', 'of untraced']];
  for (const mode of MODES) hopRows.push([LABEL[mode], String(cps[mode]), rounds[mode].join(' '), `${(cps[mode] / cps.none).toFixed(2)}`]);
  r.table(hopRows);
  r.summary.push(['Kamailio TLS hop max cps (emulated sites)', `${cps.none}/s`, `${cps.auto}/s (${(cps.auto / cps.none).toFixed(2)})`, '>= 0.9 of untraced']);
  return { hopMaxCallsPerSecond: cps, hopRounds: rounds, hopSearches: searches };
}
