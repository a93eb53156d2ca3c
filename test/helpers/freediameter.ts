/** Real freeDiameter peers (Debian's freediameterd) on 127.0.0.1 over TCP or TLS, started and stopped by PID. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DiameterPeerConf {
  identity: string;
  port: number;
  /** TLS from the first byte (RFC 6733 "separate port") on this port; peers connect to it over TLS. */
  tlsPort?: number;
}

/** A test CA whose certificates freeDiameter peers trust each other by (freeDiameter verifies its peers). */
export interface TestCa {
  cert: string;
  key: string;
}

export function makeTestCa(dir: string): TestCa {
  const ca = { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca.key, '-out', ca.cert, '-days', '2', '-subj', '/CN=hepbpf-test-ca'], { stdio: 'ignore' });
  return ca;
}

export interface TlsOptions {
  ca: TestCa;
  /** GnuTLS writes the session secrets here (SSLKEYLOGFILE), so that tshark can decrypt the capture. */
  keyLog: string;
}

export interface FreeDiameter {
  proc: ChildProcess;
  log(): string;
  stop(): Promise<void>;
}

/**
 * Starts freeDiameterd as `self`, connecting to each of `peers` over plain TCP (TLS_Cred is
 * mandatory even then: a self-signed certificate is made for it), or with `tls` over TLS to their
 * tlsPort, with a certificate from the test CA. Tw is 6 s, the smallest freeDiameter accepts, so
 * a DWR/DWA exchange happens within a test.
 */
export function startFreeDiameter(dir: string, self: DiameterPeerConf, peers: DiameterPeerConf[], tls?: TlsOptions): Promise<FreeDiameter> {
  const cert = join(dir, `${self.identity}.pem`);
  const key = join(dir, `${self.identity}.key`);
  if (tls) {
    const csr = join(dir, `${self.identity}.csr`);
    execFileSync('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${self.identity}`], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', tls.ca.cert, '-CAkey', tls.ca.key, '-CAcreateserial', '-out', cert, '-days', '2'], { stdio: 'ignore' });
  } else {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${self.identity}`], { stdio: 'ignore' });
  }
  const conf = join(dir, `${self.identity}.conf`);
  writeFileSync(
    conf,
    [
      `Identity = "${self.identity}";`,
      'Realm = "test";',
      `Port = ${self.port};`,
      `SecPort = ${self.tlsPort ?? 0};`,
      'No_SCTP;',
      'No_IPv6;',
      'TcTimer = 6;',
      'TwTimer = 6;',
      `TLS_Cred = "${cert}", "${key}";`,
      `TLS_CA = "${tls?.ca.cert ?? cert}";`,
      ...peers.map((p) =>
        tls
          ? `ConnectPeer = "${p.identity}" { ConnectTo = "127.0.0.1"; Port = ${p.tlsPort}; };`
          : `ConnectPeer = "${p.identity}" { ConnectTo = "127.0.0.1"; Port = ${p.port}; No_TLS; };`,
      ),
      '',
    ].join('\n'),
  );
  const env = tls ? { ...process.env, SSLKEYLOGFILE: tls.keyLog } : process.env;
  const proc = spawn('freeDiameterd', ['-c', conf], { env, stdio: ['ignore', 'pipe', 'pipe'] });
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
