/**
 * Shared rules for the fuzz targets (test/fuzz/*.fuzz.test.ts), built on fast-check.
 *
 * In the test suite each target runs for FUZZ_SECONDS (default 30) or FUZZ_RUNS inputs, whichever
 * ends first; `scripts/fuzz.sh` runs 1M inputs per target with no time limit. Every target checks:
 * - no input throws out of the code under test (a thrown error is a crash of the agent);
 * - no input costs more than 10 ms per 64 KiB: the slowest inputs seen are timed again in CPU time,
 *   best of 5, so a busy machine or a scheduling hiccup does not count, but real super-linear work does;
 * - memory stays bounded: the heap after the run, once collected, is within a fixed margin of before.
 */
import fc from 'fast-check';
import { expect } from 'vitest';

const seconds = Number(process.env.FUZZ_SECONDS ?? 30);
const runs = Number(process.env.FUZZ_RUNS ?? 1e9);

/** Cost ceiling: 10 ms per 64 KiB of input, and never less than 10 ms for a small input. */
export const MAX_NS_PER_64K = 10e6;
const SLOWEST_KEPT = 5;
const HEAP_MARGIN = 64 * 1024 * 1024;

export interface FuzzReport {
  runs: number;
  worstNsPer64K: number;
}

/** The time budget of one target in the test suite, so vitest's own timeout can be set above it. */
export const fuzzTimeoutMs = () => (seconds > 0 ? seconds * 1000 + 60_000 : 24 * 3600_000);

/**
 * Runs `target` on inputs from `arb`. `size` gives an input's length in bytes (for the cost ceiling).
 * `target` may throw only for inputs it is documented to refuse: return normally otherwise.
 */
export function fuzz<T>(arb: fc.Arbitrary<T>, size: (input: T) => number, target: (input: T) => void): FuzzReport {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const slowest: { input: T; nsPer64K: number }[] = [];
  let count = 0;
  const property = fc.property(arb, (input) => {
    const t0 = process.hrtime.bigint();
    target(input);
    const ns = Number(process.hrtime.bigint() - t0);
    const per64K = ns / Math.max(1, size(input) / 65536);
    count++;
    if (slowest.length < SLOWEST_KEPT || per64K > slowest[slowest.length - 1].nsPer64K) {
      slowest.push({ input, nsPer64K: per64K });
      slowest.sort((a, b) => b.nsPer64K - a.nsPer64K);
      slowest.length = Math.min(slowest.length, SLOWEST_KEPT);
    }
  });
  fc.assert(property, {
    numRuns: runs,
    ...(seconds > 0 ? { interruptAfterTimeLimit: seconds * 1000 } : {}),
    markInterruptAsFailure: false,
  });
  let worst = 0;
  for (const { input } of slowest) {
    // CPU time of this process, not wall time: other processes on a busy machine do not count.
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = process.cpuUsage();
      target(input);
      const used = process.cpuUsage(t0);
      best = Math.min(best, (used.user + used.system) * 1000);
    }
    worst = Math.max(worst, best / Math.max(1, size(input) / 65536));
  }
  expect(worst, 'slowest input, ns per 64 KiB (best of 5)').toBeLessThanOrEqual(MAX_NS_PER_64K);
  if (gc) {
    slowest.length = 0;
    gc();
    expect(process.memoryUsage().heapUsed - heapBefore, 'heap growth over the run').toBeLessThan(HEAP_MARGIN);
  }
  // The figures the issue asks for, in the test output: how many inputs, and the slowest per 64 KiB.
  console.log(`fuzz: ${count} inputs, slowest ${(worst / 1e6).toFixed(2)} ms per 64 KiB (ceiling ${MAX_NS_PER_64K / 1e6} ms)`);
  return { runs: count, worstNsPer64K: worst };
}
