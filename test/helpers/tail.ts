/** `hepbpf tail` as an operator runs it, for the end-to-end tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { CLI } from './agent.js';
import { sleep, until as waitUntil } from './wait.js';

export interface RunningTail {
  proc: ChildProcess;
  /** stderr so far: the ready notice, errors. */
  err(): string;
  /** stdout so far ('' when it goes to another process). */
  out(): string;
  /** Resolves with stdout once `done(stdout)` holds; rejects after `timeoutMs`. */
  waitForOutput(done: (out: string) => boolean, timeoutMs?: number): Promise<string>;
  /** SIGINT, as Ctrl-C; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `hepbpf tail ARGS` (stdout to us, or straight into `stdout`: another process's stdin) and resolves once it printed its ready notice. */
export async function startTail(args: string[], env: NodeJS.ProcessEnv, stdout: 'pipe' | Writable = 'pipe'): Promise<RunningTail> {
  const proc = spawn(process.execPath, [CLI, 'tail', ...args], { env, stdio: ['ignore', stdout, 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  // Waits on tail's output, failing at once if tail exited (or was killed) meanwhile.
  const until = (what: string, ok: () => boolean, timeoutMs: number) =>
    waitUntil(() => `${what} from tail after ${timeoutMs} ms; stderr:\n${err}\nstdout:\n${out}`, () => {
      if (ok()) return true;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`tail exited (${proc.exitCode ?? proc.signalCode}) before ${what}; stderr:\n${err}`);
      return false;
    }, timeoutMs);
  await until('ready notice', () => err.includes('ready'), 30_000).catch((e) => {
    proc.kill('SIGKILL'); // not left capturing after the test
    throw e;
  });
  return {
    proc,
    err: () => err,
    out: () => out,
    async waitForOutput(done, timeoutMs = 10_000) {
      await until('expected output', () => done(out), timeoutMs);
      return out;
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGINT');
      return exited;
    },
  };
}

/**
 * Starts `hepbpf tail --json ARGS`, runs `traffic`, and returns the NDJSON records it printed once it
 * printed `count` of them (and a settle more, so an extra one would be seen too).
 */
export async function tailDuring(args: string[], env: NodeJS.ProcessEnv, traffic: () => void, count: number): Promise<{ notice: string; records: any[] }> {
  const tail = await startTail(['--json', ...args], env);
  traffic();
  const lines = (out: string) => out.split('\n').length - 1; // complete lines only
  await tail.waitForOutput((out) => lines(out) >= count, 15_000).catch(() => undefined); // fewer: the assertions say what is missing
  await sleep(500);
  await tail.stop();
  return { notice: tail.err(), records: tail.out().trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}
