import { spawn, type ChildProcess } from 'node:child_process';

/** Starts a sipp UAS (Debian's sip-tester) on 127.0.0.1:port; stop() ends it by PID. */
export function sippUas(port: number, transport: 'u1' | 't1', cwd: string): { proc: ChildProcess; stop(): Promise<void> } {
  const proc = spawn('sipp', ['-sn', 'uas', '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-nostdin'], { cwd, stdio: 'ignore' });
  return {
    proc,
    stop: () =>
      new Promise((r) => {
        if (proc.exitCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
}

/** Runs a sipp UAC for `calls` calls to 127.0.0.1:uasPort; resolves with its exit code (0: every call succeeded). */
export function sippUac(uasPort: number, port: number, transport: 'u1' | 't1', calls: number, cwd: string): Promise<number | null> {
  const proc = spawn(
    'sipp',
    ['-sn', 'uac', `127.0.0.1:${uasPort}`, '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-m', String(calls), '-r', '50', '-nostdin', '-timeout', '60', '-timeout_error'],
    { cwd, stdio: 'ignore' },
  );
  return new Promise((r) => proc.once('exit', (code) => r(code)));
}
