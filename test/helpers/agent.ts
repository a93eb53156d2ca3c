import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
export const CLI = resolve(REPO, 'dist/src/cli/main.js');

/** Why the BPF and end-to-end tests cannot run on this host, or undefined when they can. Printed loudly by the caller. */
export function cannotRunKernelTests(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root: BPF and end-to-end tests need root (sudo npm test)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF (/sys/kernel/btf/vmlinux)';
  if (!existsSync(CLI)) return `agent not built (${CLI}): run npm run build`;
  return undefined;
}

/**
 * The reason a kernel test suite must skip on this host, after saying so loudly; undefined when it
 * can run. In CI (CI=true) a host that cannot run them is an error, never a skip.
 */
export function kernelSuiteSkipReason(suite: string): string | undefined {
  const why = cannotRunKernelTests();
  if (why && process.env.CI) throw new Error(`${suite} cannot run in CI: ${why}`);
  if (why) console.warn(`\n!!! SKIPPING ${suite}: ${why}\n`);
  return why;
}

export interface RunningAgent {
  proc: ChildProcess;
  /** Every JSON log line the agent wrote to stderr so far. */
  logs: Array<Record<string, unknown>>;
  stop(): Promise<{ code: number | null; final?: Record<string, unknown> }>;
}

/**
 * Starts `hepbpf ARGS` as a user would and resolves once it reports ready (log `msg: ready` or tail's
 * notice). `launcher` goes before node, e.g. setpriv with a capability set.
 */
export function startAgent(args: string[], env: NodeJS.ProcessEnv = process.env, readyTimeoutMs = 30_000, launcher: string[] = []): Promise<RunningAgent> {
  const [cmd, ...argv] = [...launcher, process.execPath, CLI, ...args];
  const proc = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`agent not ready after ${readyTimeoutMs} ms; stderr:\n${stderr}`));
    }, readyTimeoutMs);
    const agent: RunningAgent = {
      proc,
      logs,
      async stop() {
        if (proc.exitCode === null) proc.kill('SIGTERM');
        const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
        const code = await exited;
        clearTimeout(kill);
        return { code, final: logs.findLast((l) => l.msg === 'stopped') };
      },
    };
    let partial = '';
    proc.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk;
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('{')) {
          try {
            logs.push(JSON.parse(line));
          } catch {
            /* not JSON: kept in stderr for the error message */
          }
        }
        if (/"msg":"ready"|\bready\b/.test(line)) {
          clearTimeout(timer);
          resolveStart(agent);
        }
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before ready; stderr:\n${stderr}`));
    });
  });
}

