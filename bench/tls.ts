/**
 * `npm run bench -- --only=tls`: what TLS capture costs the application, in one run:
 *   - a 1 KiB SSL_write + SSL_read pair (bench/tls_cost.c, Debian's libssl 3) without the agent,
 *     with it on the emulated probe sites it chooses (src/capture/tls-sites.ts), and with every
 *     function forced onto its single-stepped entry + return probes (HEPBPF_TLS_PROBES=entry);
 *   - the max calls per second through the Kamailio edge -> TLS -> core hop of the tests
 *     (test/helpers/kamailio-tls.ts), without the agent and with it in each mode.
 * Modes alternate within each round, and medians are reported.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/helpers/collector.js';
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
  /** bench/tls_cost.c, built, and the certificate and key it serves. */
  tlsCost: string;
  cert: string;
  key: string;
}

type Mode = 'none' | 'auto' | 'entry';
const MODES: Mode[] = ['none', 'auto', 'entry'];
const LABEL: Record<Mode, string> = { none: 'no agent', auto: 'agent, emulated sites', entry: 'agent, entry+return (forced)' };
const PAIR_ROUNDS = 3;
const PAIR_ITERATIONS = '50000';
/** Rates tried for the Kamailio hop, each for STEP_SECS; the max is the last one at which every call succeeded in time. */
const HOP_RATES = [100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000];
const STEP_SECS = 2;
/** A step that runs this much longer than its calls take at the offered rate is overloaded. */
const STEP_SLACK_SECS = 2;

const runC = (bin: string, ...argv: string[]) =>
  new Promise<number>((res, rej) => execFile(bin, argv, { encoding: 'utf8' }, (err, stdout) => (err ? rej(err) : res(+stdout.trim()))));

/** Runs `fn` with the agent in `mode` (none: without it); the agent forwards to a port nobody reads. */
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

/** The highest rate of HOP_RATES at which every call of a STEP_SECS run succeeds without falling behind. */
async function maxCallsPerSecond(hop: KamailioTlsHop): Promise<number> {
  let best = 0;
  for (const rate of HOP_RATES) {
    const calls = rate * STEP_SECS;
    const t0 = performance.now();
    const code = await hop.runCalls(calls, rate);
    const secs = (performance.now() - t0) / 1000;
    hop.forgetReports();
    if (code !== 0 || secs > STEP_SECS + STEP_SLACK_SECS) break;
    best = rate;
  }
  return best;
}

export async function tlsBench(r: TlsBenchInput): Promise<Record<string, unknown>> {
  const sinkPort = await freePort();
  const pair: Record<Mode, number[]> = { none: [], auto: [], entry: [] };
  r.say(`\n(tls) TLS capture cost to the application (median of ${PAIR_ROUNDS} rounds, modes alternating)`);
  for (let round = 0; round < PAIR_ROUNDS; round++) {
    const order = round % 2 ? [...MODES].reverse() : MODES;
    for (const mode of order) pair[mode].push(await withAgent(r, mode, sinkPort, () => runC(r.tlsCost, 'ssl', PAIR_ITERATIONS, r.cert, r.key)));
  }
  const base = median(pair.none);
  const rows = [['SSL_write+SSL_read pair, 1 KiB, OpenSSL 3', 'ns', 'added', 'ratio']];
  for (const mode of MODES) {
    const m = median(pair[mode]);
    rows.push([LABEL[mode], m.toFixed(0), mode === 'none' ? '-' : `${(m - base).toFixed(0)} ns`, `${(m / base).toFixed(2)}x`]);
  }
  r.table(rows);
  r.summary.push(['SSL_write+SSL_read pair, 1 KiB (emulated sites)', `${base.toFixed(0)} ns`, `+${(median(pair.auto) - base).toFixed(0)} ns`, '<= +5000 ns']);

  const dir = mkdtempSync(join(tmpdir(), 'hepbpf-bench-tls-'));
  const cps: Record<Mode, number> = { none: 0, auto: 0, entry: 0 };
  try {
    const hop = await startKamailioTlsHop(dir);
    try {
      for (const mode of MODES) cps[mode] = await withAgent(r, mode, sinkPort, () => maxCallsPerSecond(hop));
    } finally {
      await hop.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const hopRows = [['Kamailio edge -> TLS -> core, max calls/s', 'calls/s', 'of untraced']];
  for (const mode of MODES) hopRows.push([LABEL[mode], String(cps[mode]), `${(cps[mode] / cps.none).toFixed(2)}`]);
  r.table(hopRows);
  r.summary.push(['Kamailio TLS hop max cps (emulated sites)', `${cps.none}/s`, `${cps.auto}/s (${(cps.auto / cps.none).toFixed(2)})`, '>= 0.9 of untraced']);
  return { pairNs: pair, pairMedianNs: Object.fromEntries(MODES.map((m) => [m, median(pair[m])])), hopMaxCallsPerSecond: cps };
}
