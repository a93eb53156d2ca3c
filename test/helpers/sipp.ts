import { spawn, type ChildProcess } from 'node:child_process';
import { stopByPid, waitForSocket } from './receivers.js';

/** Starts a sipp UAS (Debian's sip-tester) on 127.0.0.1:port, resolving once it listens there; stop() ends it by PID. */
export async function sippUas(port: number, transport: 'u1' | 't1', cwd: string): Promise<{ proc: ChildProcess; stop(): Promise<void> }> {
  const proc = spawn('sipp', ['-sn', 'uas', '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-nostdin'], { cwd, stdio: 'ignore' });
  const stop = () => stopByPid(proc);
  await waitForSocket(proc, port, transport === 'u1' ? 'udp' : 'tcp').catch(async (err) => {
    await stop();
    throw err;
  });
  return { proc, stop };
}

/** Runs a sipp UAC for `calls` calls to 127.0.0.1:uasPort, `rate` new calls per second; resolves with its exit code (0: every call succeeded). */
export function sippUac(uasPort: number, port: number, transport: 'u1' | 't1', calls: number, cwd: string, rate = 50, scenario = ['-sn', 'uac']): Promise<number | null> {
  const proc = spawn(
    'sipp',
    [...scenario, `127.0.0.1:${uasPort}`, '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-m', String(calls), '-r', String(rate), '-nostdin', '-timeout', '60', '-timeout_error'],
    { cwd, stdio: 'ignore' },
  );
  return new Promise((r) => proc.once('exit', (code) => r(code)));
}
