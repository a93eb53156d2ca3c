/**
 * BPF timestamps are CLOCK_MONOTONIC ns (bpf_ktime_get_ns); HEP wants wall-clock µs.
 * process.hrtime is CLOCK_MONOTONIC on Linux, so one offset converts; refresh() follows wall-clock steps.
 */
export class MonotonicClock {
  private offsetUs = 0;

  constructor() {
    this.refresh();
  }

  refresh(): void {
    const monoUs = Number(process.hrtime.bigint() / 1000n);
    const wallUs = Math.round((performance.timeOrigin + performance.now()) * 1000);
    this.offsetUs = wallUs - monoUs;
  }

  toWallMicros(monoNs: bigint): number {
    return Number(monoNs / 1000n) + this.offsetUs;
  }
}
