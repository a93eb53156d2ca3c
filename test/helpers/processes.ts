/** Processes below a given one, from /proc: what the bench and the tests started, each ended by its pid. */
import { readdirSync, readFileSync } from 'node:fs';

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

/** The process exists and is not a zombie. */
export function alive(pid: number): boolean {
  const state = readProcStat(pid)?.state;
  return state !== undefined && state !== 'Z';
}
