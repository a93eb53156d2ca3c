/**
 * Ending what the bench started. The sections spawn agents, collectors, C helpers, sipp and Kamailio
 * (some through the tests' helpers, which keep no list), and Kamailio forks its own workers: so the
 * bench ends every descendant of its own process, found through /proc, each by its pid.
 */
import { descendants } from '../test/helpers/processes.js';
import { sleep } from '../test/helpers/wait.js';

const signal = (pid: number, sig: NodeJS.Signals) => {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
};

/**
 * Ends every process below this one: SIGTERM (agents detach their programs, Kamailio ends its
 * workers), SIGKILL for what is left after `graceMs`. The sections may still be running and start a
 * next step meanwhile, so the tree is read again until it is empty. Returns what it ended.
 */
export async function endDescendants(graceMs = 5000): Promise<{ pid: number; comm: string }[]> {
  const ended = new Map<number, string>();
  const deadline = Date.now() + graceMs;
  for (let left = descendants(); left.length && Date.now() < deadline; left = descendants()) {
    for (const p of left) {
      if (!ended.has(p.pid)) signal(p.pid, 'SIGTERM');
      ended.set(p.pid, p.comm);
    }
    await sleep(50);
  }
  for (const p of killDescendants()) ended.set(p.pid, p.comm);
  return [...ended].map(([pid, comm]) => ({ pid, comm }));
}

/** SIGKILL to every process below this one, at once: what a caller runs just before it exits. */
export function killDescendants(): { pid: number; comm: string }[] {
  const left = descendants();
  for (const p of left) signal(p.pid, 'SIGKILL');
  return left;
}
