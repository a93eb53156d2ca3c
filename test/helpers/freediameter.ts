/** Real freeDiameter peers (Debian's freediameterd) on 127.0.0.1 over TCP, started and stopped by PID. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DiameterPeerConf {
  identity: string;
  port: number;
}

export interface FreeDiameter {
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts freeDiameterd as `self`, connecting to each of `peers` over plain TCP (TLS_Cred is
 * mandatory even then: a self-signed certificate is made for it). Tw is 6 s, the smallest
 * freeDiameter accepts, so a DWR/DWA exchange happens within a test.
 */
export function startFreeDiameter(dir: string, self: DiameterPeerConf, peers: DiameterPeerConf[]): Promise<FreeDiameter> {
  const cert = join(dir, `${self.identity}.pem`);
  const key = join(dir, `${self.identity}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${self.identity}`], { stdio: 'ignore' });
  const conf = join(dir, `${self.identity}.conf`);
  writeFileSync(
    conf,
    [
      `Identity = "${self.identity}";`,
      'Realm = "test";',
      `Port = ${self.port};`,
      'SecPort = 0;',
      'No_SCTP;',
      'No_IPv6;',
      'TcTimer = 6;',
      'TwTimer = 6;',
      `TLS_Cred = "${cert}", "${key}";`,
      `TLS_CA = "${cert}";`,
      ...peers.map((p) => `ConnectPeer = "${p.identity}" { ConnectTo = "127.0.0.1"; Port = ${p.port}; No_TLS; };`),
      '',
    ].join('\n'),
  );
  const proc = spawn('freeDiameterd', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d: Buffer) => (log += d));
  proc.stderr!.on('data', (d: Buffer) => (log += d));
  const fd: FreeDiameter = {
    proc,
    log: () => log,
    stop: () =>
      new Promise((r) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return r();
        proc.once('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`freeDiameterd ${self.identity} not ready:\n${log}`)), 15_000);
    const check = () => {
      if (log.includes('daemon initialized')) {
        clearTimeout(timer);
        resolve(fd);
      }
    };
    proc.stdout!.on('data', check);
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`freeDiameterd ${self.identity} exited ${code}:\n${log}`));
    });
  });
}
