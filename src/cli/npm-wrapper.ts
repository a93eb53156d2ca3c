import { readFileSync } from 'node:fs';

/** Field 22 of /proc/PID/stat: with the PID, names one process for good (PIDs are reused). */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/**
 * The npm process that started this one (`npx hepbpf run`, `npm start`), or undefined. npm passes a
 * signal only to the `sh -c` it spawned, and that shell neither forwards it nor execs: the agent
 * would outlive a supervisor's stop. npm names itself "npm exec ...", "npm start ..." (comm).
 */
export function npmAncestor(env = process.env): number | undefined {
  if (!env.npm_command) return undefined;
  for (let pid = process.ppid; pid > 1; pid = parentOf(pid)) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('npm ')) return pid;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Calls `onGone` once when process `pid` has exited; checked every `everyMs`. */
export function whenGone(pid: number, onGone: () => void, everyMs = 250): void {
  const started = startTime(pid);
  const timer = setInterval(() => {
    if (startTime(pid) === started) return;
    clearInterval(timer);
    onGone();
  }, everyMs);
  timer.unref();
}
