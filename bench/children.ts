/**
 * Ending what the bench started. The sections spawn agents, collectors, C helpers, sipp and Kamailio
 * (some through the tests' helpers, which keep no list), and Kamailio forks its own workers: so the
 * bench ends every descendant of its own process, found through /proc, each by its pid.
 */
import { readdirSync, readFileSync } from 'node:fs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pid and command of every live (not zombie) process below `pid`, parents before their children. */
export function descendants(pid = process.pid): { pid: number; comm: string }[] {
  const found: { pid: number; comm: string }[] = [];
  const visit = (parent: number) => {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${parent}/task`);
    } catch {
      return; // exited while we looked
    }
    for (const task of tasks) {
      let kids: number[];
      try {
        kids = readFileSync(`/proc/${parent}/task/${task}/children`, 'utf8').split(/\s+/).filter(Boolean).map(Number);
      } catch {
        continue;
      }
      for (const kid of kids) {
        const stat = readProcStat(kid);
        if (!stat || stat.state === 'Z') continue;
        found.push({ pid: kid, comm: stat.comm });
        visit(kid);
      }
    }
  };
  visit(pid);
  return found;
}

function readProcStat(pid: number): { comm: string; state: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), state: stat[stat.lastIndexOf(')') + 2] };
  } catch {
    return undefined;
  }
}

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
