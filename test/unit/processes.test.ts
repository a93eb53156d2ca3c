/** descendants() and alive(): what the bench and the e2e tests use to end what they started, by pid. */
import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { alive, descendants } from '../helpers/processes.js';
import { until } from '../helpers/wait.js';

it('finds a process tree below a child, parents first, and sees its processes end', async () => {
  const shell = spawn('sh', ['-c', 'sleep 30 & sleep 31 & wait'], { stdio: 'ignore' });
  try {
    await until('the shell and its two sleeps', () => descendants().filter((p) => p.comm === 'sleep').length === 2);
    const tree = descendants();
    expect(tree.map((p) => p.pid)).toContain(shell.pid);
    expect(tree.findIndex((p) => p.pid === shell.pid)).toBeLessThan(tree.findIndex((p) => p.comm === 'sleep'));
    const sleeps = descendants(shell.pid).map((p) => p.pid);
    expect(sleeps).toHaveLength(2);
    for (const pid of sleeps) process.kill(pid, 'SIGKILL');
    await until('the sleeps reaped', () => sleeps.every((pid) => !alive(pid)));
  } finally {
    shell.kill('SIGKILL');
  }
  await until('the shell gone', () => !alive(shell.pid!));
  expect(descendants().some((p) => p.pid === shell.pid)).toBe(false);
});
