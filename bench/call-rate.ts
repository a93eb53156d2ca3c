/**
 * The highest call rate a SIP path through Kamailio sustains, as sipp's default UAC sees it: the
 * Kamailio proxy section (bench/kamailio.ts) and the Kamailio TLS hop (bench/tls.ts) share it.
 *
 * A step offers `cps` new calls per second for `secs` seconds from a fresh sipp on a fresh port. It
 * fails when a call fails or the calls end more than STEP_SLACK_SECS after the last was offered (the
 * path fell behind). A call that waits RECV_TIMEOUT_MS for a message fails at once: left to its
 * retransmissions sipp gives a call 32 s, and a run of failing steps took many minutes. sipp's own
 * -timeout bounds the step, and a search has a total budget, cut short with what it reached.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stopByPid } from '../test/helpers/receivers.js';

const RECV_TIMEOUT_MS = 4000;
const STEP_SLACK_SECS = 2;

export interface CallStep {
  cps: number;
  ok: boolean;
  /** Seconds from sipp's start to its exit. */
  secs: number;
  /** Why the step failed. */
  why?: string;
}

export interface CallStepTarget {
  /** UDP port of the path's first hop on 127.0.0.1. */
  target: number;
  /** A free port for the UAC. */
  port: number;
  /** Working directory for sipp's screen file. */
  dir: string;
}

/** sipp's final statistics screen: cumulative successful and failed calls. */
function callCounts(screen: string): { succeeded: number; failed: number } | undefined {
  const last = (label: string) => [...screen.matchAll(new RegExp(`^\\s*${label}\\s*\\|\\s*\\d+\\s*\\|\\s*(\\d+)`, 'gm'))].pop()?.[1];
  const succeeded = last('Successful call');
  const failed = last('Failed call');
  return succeeded === undefined || failed === undefined ? undefined : { succeeded: +succeeded, failed: +failed };
}

export async function callStep(t: CallStepTarget, cps: number, secs: number): Promise<CallStep> {
  const calls = cps * secs;
  // sipp gives up at this bound (exit 255); past it and a few seconds more, the bench ends sipp itself.
  const boundSecs = secs + STEP_SLACK_SECS + RECV_TIMEOUT_MS / 1000 + 2;
  const screen = join(t.dir, `sipp-uac-${t.port}.screen`);
  const proc = spawn(
    'sipp',
    ['-sn', 'uac', `127.0.0.1:${t.target}`, '-i', '127.0.0.1', '-p', String(t.port), '-t', 'u1', '-r', String(cps), '-m', String(calls),
      '-nostdin', '-recv_timeout', String(RECV_TIMEOUT_MS), '-timeout', String(boundSecs), '-timeout_error', '-trace_screen', '-screen_file', screen],
    { cwd: t.dir, stdio: 'ignore' },
  );
  const t0 = performance.now();
  const backstop = setTimeout(() => void stopByPid(proc), (boundSecs + 5) * 1000);
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  clearTimeout(backstop);
  const took = (performance.now() - t0) / 1000;
  let counts: ReturnType<typeof callCounts>;
  try {
    counts = callCounts(readFileSync(screen, 'utf8'));
  } catch {
    counts = undefined; // sipp ended before writing it
  }
  const step = { cps, secs: took };
  if (code === 0 && took <= secs + STEP_SLACK_SECS) return { ...step, ok: true };
  const why =
    code === 0 ? `calls ended ${took.toFixed(1)} s after the first`
    : code === 1 && counts ? `${counts.failed} of ${calls} calls failed`
    : code === 255 ? `sipp's step bound of ${boundSecs} s reached${counts ? ` (${counts.succeeded} of ${calls} calls succeeded)` : ''}`
    : `sipp exited ${code ?? 'on a signal'}`;
  return { ...step, ok: false, why };
}

export interface CallRateSearch {
  /** The first rate tried; rates double from it until a step fails or `max` passes. */
  first: number;
  max: number;
  /** Then bisection between the last success and the first failure, until they are this close. */
  resolution: number;
  /** The whole search's bound. */
  budgetSecs: number;
}

export interface CallRateResult {
  maxCps: number;
  steps: CallStep[];
  /** Set when the budget ended the search before the resolution was reached: what was reached then. */
  cutShort?: string;
}

/** The highest rate, to `resolution`, at which `step` succeeds (0: not even `first`). */
export async function maxCallRate(s: CallRateSearch, step: (cps: number) => Promise<CallStep>): Promise<CallRateResult> {
  const t0 = performance.now();
  const steps: CallStep[] = [];
  let ok = 0;
  let fail = 0;
  const next = () => {
    if (!fail) return ok ? (ok * 2 <= s.max ? ok * 2 : undefined) : s.first;
    const mid = Math.round((ok + fail) / 2 / s.resolution) * s.resolution;
    return fail - ok > s.resolution && mid > ok && mid < fail ? mid : undefined;
  };
  for (let cps = next(); cps !== undefined; cps = next()) {
    const elapsed = (performance.now() - t0) / 1000;
    if (elapsed >= s.budgetSecs) {
      const reached = `${ok} cps sustained${fail ? `, ${fail} cps failed` : ''}`;
      return { maxCps: ok, steps, cutShort: `cut short by its ${s.budgetSecs} s bound after ${steps.length} steps (${elapsed.toFixed(0)} s), next ${cps} cps: ${reached}` };
    }
    const result = await step(cps);
    steps.push(result);
    if (result.ok) ok = cps;
    else fail = cps;
  }
  return { maxCps: ok, steps };
}

/** One line per search: each step's rate, failing ones marked with why, and the time it took. */
export function describeSteps(r: CallRateResult): string {
  const steps = r.steps.map((s) => (s.ok ? String(s.cps) : `${s.cps} FAILED (${s.why})`)).join(', ');
  const secs = r.steps.reduce((sum, s) => sum + s.secs, 0);
  return `${steps}; ${secs.toFixed(0)} s of steps` + (r.cutShort ? `; ${r.cutShort}` : '');
}
