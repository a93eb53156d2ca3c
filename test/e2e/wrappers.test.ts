/**
 * The README's own service commands, `npm start -- ...` and `npx hepbpf run ...`, stopped the way a
 * supervisor stops them: SIGTERM or SIGINT to the wrapper's PID alone (it runs in its own process
 * group, so no terminal-style group signal reaches the agent). The agent must exit, and every BPF
 * program, link and uprobe it made must be gone (bpftool and tracefs before and after).
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLI, kernelSuiteSkipReason, REPO } from '../helpers/agent.js';
import { bpfState } from '../helpers/bpf-state.js';
import { udpCollector } from '../helpers/collector.js';
import { alive, descendants } from '../helpers/processes.js';
import { sleep } from '../helpers/wait.js';

const why = kernelSuiteSkipReason('wrapper signal tests');

const COMMANDS: Record<string, (hep: string) => string[]> = {
  'npm start': (hep) => ['npm', 'start', '--', '--hep', hep],
  'npx hepbpf run': (hep) => ['npx', 'hepbpf', 'run', '--hep', hep],
};

describe.skipIf(!!why)('service commands stop the agent on the wrapper\'s signal', () => {
  // A second `npx hepbpf` on a machine runs the bin through the link npm cached on the first one,
  // without npm's chmod, so the build itself must leave it executable.
  it('the built bin is executable by itself', () => {
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
  });

  for (const [name, argv] of Object.entries(COMMANDS))
    for (const signal of ['SIGTERM', 'SIGINT'] as const)
      it(`${signal} to \`${name}\`: the agent exits and detaches everything`, async () => {
        const before = bpfState();
        const hep = await udpCollector();
        const [cmd, ...args] = argv(hep.url);
        const wrapper = spawn(cmd, args, { cwd: REPO, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        wrapper.stderr!.on('data', (d: Buffer) => (stderr += d));
        const wrapperExit = new Promise<void>((r) => wrapper.once('exit', () => r()));
        try {
          // npm start builds first (scripts/setup.sh): up to a minute on a fresh clone.
          for (let i = 0; i < 1200 && !/"msg":"ready"/.test(stderr); i++) {
            expect(wrapper.exitCode, stderr).toBe(null);
            await sleep(100);
          }
          expect(stderr).toMatch(/"msg":"ready"/);
          const agents = descendants(wrapper.pid!).map((p) => p.pid).filter((p) => /dist\/src\/cli\/main\.js|\.bin\/hepbpf/.test(readFileSync(`/proc/${p}/cmdline`, 'utf8')));
          expect(agents.length, 'one agent process below the wrapper').toBe(1);
          const during = bpfState();
          expect(during.progs.length).toBeGreaterThan(before.progs.length);

          process.kill(wrapper.pid!, signal);
          for (let i = 0; i < 100 && alive(agents[0]); i++) await sleep(100);
          expect(alive(agents[0]), `agent ${agents[0]} still running 10 s after ${signal} to ${name}`).toBe(false);
          await wrapperExit;
          expect(stderr).toMatch(/"msg":"stopped"/);
          expect(bpfState()).toEqual(before);
        } finally {
          for (const p of descendants(wrapper.pid!)) process.kill(p.pid, 'SIGKILL');
          if (wrapper.exitCode === null) wrapper.kill('SIGKILL');
          await hep.close();
        }
      });
});
