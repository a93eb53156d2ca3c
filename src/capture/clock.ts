/**
 * BPF timestamps are CLOCK_MONOTONIC ns (bpf_ktime_get_ns); HEP wants wall-clock µs.
 * process.hrtime is CLOCK_MONOTONIC on Linux, so one offset converts. The offset starts from
 * performance.timeOrigin (µs precise); Date.now() (ms precise) is only used to notice the wall clock
 * being stepped (NTP, an operator), checked at most every REFRESH_NS of capture time.
 */
const REFRESH_NS = 10_000_000_000n;
/** A disagreement beyond this is a step of the wall clock, not Date.now()'s millisecond rounding. */
const STEP_US = 2000;

export class MonotonicClock {
  private offsetUs: number;
  /** Capture time after which the wall clock is read again (compared, not subtracted: no BigInt per message). */
  private refreshAfterNs = REFRESH_NS;

  constructor(private readonly wallMs: () => number = Date.now) {
    const monoUs = Number(process.hrtime.bigint() / 1000n);
    this.offsetUs = Math.round((performance.timeOrigin + performance.now()) * 1000) - monoUs;
  }

  /** Re-reads the wall clock; adopts it if it moved away from the current offset. */
  refresh(): void {
    const monoNs = process.hrtime.bigint();
    this.refreshAfterNs = monoNs + REFRESH_NS;
    const monoUs = Number(monoNs / 1000n);
    const wallUs = this.wallMs() * 1000 + 500; // middle of the millisecond Date.now() rounds down to
    if (Math.abs(monoUs + this.offsetUs - wallUs) > STEP_US) this.offsetUs = wallUs - monoUs;
  }

  toWallMicros(monoNs: bigint): number {
    if (monoNs > this.refreshAfterNs) this.refresh();
    // As a double the division allocates nothing; it is exact below 2^53 ns (104 days of uptime).
    const ns = Number(monoNs);
    return (ns <= Number.MAX_SAFE_INTEGER ? Math.floor(ns / 1000) : Number(monoNs / 1000n)) + this.offsetUs;
  }
}
