import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const TRACEFS_PATH = '/sys/kernel/tracing';

/** Where tracefs is mounted (also as debugfs' tracing/), or undefined. */
export function tracefsMount(): string | undefined {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'tracefs') return mountPoint;
  }
  return undefined;
}

/**
 * libbpf attaches classic tracepoints by reading event ids from tracefs, which a fresh host may
 * not have mounted: mount it at /sys/kernel/tracing (needs CAP_SYS_ADMIN).
 */
export function ensureTracefs(): void {
  if (tracefsMount() !== undefined) return;
  const r = spawnSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS_PATH], { encoding: 'utf8' });
  if (r.status !== 0) {
    // mount(8) adds a second line pointing at dmesg: the error stays one line.
    const why = r.error?.message ?? r.stderr.trim().split('\n')[0];
    throw new Error(`mounting tracefs at ${TRACEFS_PATH} failed: ${why}; fix: mount -t tracefs nodev ${TRACEFS_PATH}`);
  }
}
