/**
 * `npm run bench -- --only=kamailio`: what tracing costs a real SIP server. Kamailio 5.6 runs as a
 * stateless UDP proxy with one worker (children=1) between a sipp UAC and a sipp UAS, all from
 * Debian, in three setups: no tracing, with hepbpf running, and with Kamailio's own siptrace
 * sending HEPv3 (trace_mode 1: from Kamailio's core events on receive and send). For each, the highest call
 * rate at which every call succeeds (bench/call-rate.ts). Rounds alternate the setups, so that a busy machine weighs on
 * all three alike; the median over rounds is reported with the ratios to no tracing.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { median } from './median.js';
import { stopByPid } from '../test/helpers/receivers.js';
import { callStep, describeSteps, maxCallRate, type CallRateResult, type CallRateSearch } from './call-rate.js';

export interface KamailioBenchContext {
  say(line?: string): void;
  table(rows: string[][]): void;
  dir: string;
  port(): number;
  /** hepbpf forwarding to `hep`; null when the bench runs without the agent. */
  startAgent: ((hep: string) => Promise<{ stop(): Promise<unknown> }>) | null;
  /** A HEP/UDP collector that only counts. */
  startCounter(port: number): Promise<{ stop(): Promise<number> }>;
}

/** Where Debian's kamailio packages put the modules. */
export const KAMAILIO_MODULES = '/usr/lib/x86_64-linux-gnu/kamailio/modules/';

/**
 * Kamailio siptrace sending HEPv3 over UDP to 127.0.0.1:`hepPort`, on the core's receive and send
 * events only (trace_mode 1): each message as received or sent, before anything can rewrite it.
 */
export function siptraceHep(hepPort: number, captureId?: number): string {
  return `loadmodule "siptrace.so"
modparam("siptrace","trace_on",1)
modparam("siptrace","trace_init_mode",1)
modparam("siptrace","trace_mode",1)
modparam("siptrace","trace_to_database",0)
modparam("siptrace","hep_mode_on",1)
modparam("siptrace","hep_version",3)
${captureId === undefined ? '' : `modparam("siptrace","hep_capture_id",${captureId})\n`}modparam("siptrace","duplicate_uri","sip:127.0.0.1:${hepPort}")
`;
}
const ROUNDS = 2;
/** Seconds of calls per step. */
const STEP_SECS = 3;
/** Doubling from 500 cps until a step fails, then bisection to 125 cps; a search stops after 120 s of steps. */
const SEARCH: CallRateSearch = { first: 500, max: 8000, resolution: 125, budgetSecs: 120 };

type Setup = 'none' | 'hepbpf' | 'siptrace';
const LABELS: Record<Setup, string> = {
  none: 'no tracing',
  hepbpf: 'with hepbpf running',
  siptrace: "with Kamailio's siptrace (HEPv3, trace_mode 1)",
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function proxyConfig(listen: number, uas: number, hepPort?: number): string {
  const trace = hepPort === undefined ? '' : siptraceHep(hepPort);
  // Replies go back by their Via, statelessly, with no route of their own.
  return `#!KAMAILIO
children=1
log_stderror=yes
debug=1
listen=udp:127.0.0.1:${listen}
mpath="${KAMAILIO_MODULES}"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
${trace}request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  $du = "sip:127.0.0.1:${uas}";
  forward();
}
`;
}

async function startProxy(ctx: KamailioBenchContext, name: string, cfgText: string, listen: number): Promise<ChildProcess> {
  const cfg = join(ctx.dir, `${name}.cfg`);
  writeFileSync(cfg, cfgText);
  const run = join(ctx.dir, `${name}-run`);
  mkdirSync(run, { recursive: true });
  const pidFile = join(run, 'kamailio.pid');
  const proc = spawn('kamailio', ['-f', cfg, '-DD', '-E', '-Y', run, '-P', pidFile, '-m', '64', '-M', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  // Kamailio lists its sockets once bound, then forks its worker.
  for (let waited = 0; !(log.includes(`127.0.0.1:${listen}`) && existsSync(pidFile)); waited += 50) {
    if (proc.exitCode !== null || waited > 15_000) {
      await stopByPid(proc);
      throw new Error(`kamailio did not start: ${log.slice(-500)}`);
    }
    await sleep(50);
  }
  await sleep(300);
  return proc;
}

/** The sipp UAS, listening once it answers nothing but is bound (sipp has no ready line). */
async function startUas(ctx: KamailioBenchContext, port: number): Promise<ChildProcess> {
  const proc = spawn('sipp', ['-sn', 'uas', '-i', '127.0.0.1', '-p', String(port), '-t', 'u1', '-nostdin'], { cwd: ctx.dir, stdio: 'ignore' });
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (let waited = 0; !readFileSync('/proc/net/udp', 'utf8').includes(hex); waited += 50) {
    if (proc.exitCode !== null || waited > 10_000) throw new Error('sipp UAS did not bind');
    await sleep(50);
  }
  return proc;
}

async function round(ctx: KamailioBenchContext, setup: Setup): Promise<CallRateResult> {
  const uasPort = ctx.port();
  const proxyPort = ctx.port();
  const hepPort = ctx.port();
  const counter = setup === 'none' ? undefined : await ctx.startCounter(hepPort);
  const agent = setup === 'hepbpf' ? await ctx.startAgent!(`udp://127.0.0.1:${hepPort}`) : undefined;
  const uas = await startUas(ctx, uasPort);
  const proxy = await startProxy(ctx, `proxy-${setup}`, proxyConfig(proxyPort, uasPort, setup === 'siptrace' ? hepPort : undefined), proxyPort);
  try {
    return await maxCallRate(SEARCH, (cps) => callStep({ target: proxyPort, port: ctx.port(), dir: ctx.dir }, cps, STEP_SECS));
  } finally {
    await stopByPid(proxy);
    await stopByPid(uas);
    await agent?.stop();
    await counter?.stop();
  }
}

export async function kamailioBench(ctx: KamailioBenchContext): Promise<Record<string, unknown>> {
  const setups: Setup[] = ctx.startAgent ? ['none', 'hepbpf', 'siptrace'] : ['none', 'siptrace'];
  ctx.say(`\n(kamailio) Kamailio 5.6 stateless UDP proxy, children=1, sipp UAC -> proxy -> sipp UAS: highest calls/s with 0 failed calls`);
  ctx.say(`    (steps of ${STEP_SECS} s, doubling from ${SEARCH.first} cps, then bisection to ${SEARCH.resolution} cps; ${ROUNDS} rounds, setups in alternating order; median)`);
  const found: Record<Setup, number[]> = { none: [], hepbpf: [], siptrace: [] };
  const searches: Record<Setup, CallRateResult[]> = { none: [], hepbpf: [], siptrace: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const setup of r % 2 ? [...setups].reverse() : setups) {
      const search = await round(ctx, setup);
      found[setup].push(search.maxCps);
      searches[setup].push(search);
      ctx.say(`  round ${r + 1}  ${LABELS[setup].padEnd(48)} ${search.maxCps} cps   steps: ${describeSteps(search)}`);
    }
  }
  const base = median(found.none);
  const rows = [['setup', ...found.none.map((_, i) => `round ${i + 1}`), 'median', 'ratio']];
  const figures: Record<string, object> = {};
  for (const setup of setups) {
    const m = median(found[setup]);
    figures[setup] = { maxCps: m, rounds: found[setup], ratio: m / base, searches: searches[setup] };
    rows.push([LABELS[setup], ...found[setup].map(String), m.toFixed(0), setup === 'none' ? '' : (m / base).toFixed(2)]);
  }
  ctx.table(rows);
  return figures;
}
