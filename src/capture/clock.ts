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
  private checkedNs = 0n;

  constructor(private readonly wallMs: () => number = Date.now) {
    const monoUs = Number(process.hrtime.bigint() / 1000n);
    this.offsetUs = Math.round((performance.timeOrigin + performance.now()) * 1000) - monoUs;
  }

  /** Re-reads the wall clock; adopts it if it moved away from the current offset. */
  refresh(): void {
    const monoNs = process.hrtime.bigint();
    this.checkedNs = monoNs;
    const monoUs = Number(monoNs / 1000n);
    const wallUs = this.wallMs() * 1000 + 500; // middle of the millisecond Date.now() rounds down to
    if (Math.abs(monoUs + this.offsetUs - wallUs) > STEP_US) this.offsetUs = wallUs - monoUs;
  }

  toWallMicros(monoNs: bigint): number {
    if (monoNs - this.checkedNs > REFRESH_NS) this.refresh();
    return Number(monoNs / 1000n) + this.offsetUs;
  }
}
