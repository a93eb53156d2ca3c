import { readdirSync, readFileSync } from 'node:fs';

/** CPU ns of the threads of `pid` (/proc schedstat), the main thread's apart. */
export function threadsCpuNs(pid: number): { main: number; others: number } {
  const cpu = { main: 0, others: 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      if (tid === String(pid)) cpu.main += ns;
      else cpu.others += ns;
    } catch {
      // the thread ended
    }
  }
  return cpu;
}
