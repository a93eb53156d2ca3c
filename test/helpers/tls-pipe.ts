/** Two Node tls peers (test/fixtures/tls_pipe.mjs) over 127.0.0.1: what one is given on stdin, the other decrypts to stdout. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { REPO } from './agent.js';
import { until } from './wait.js';
import { freePort } from './collector.js';

export interface TlsPeer {
  proc: ChildProcess;
  /** What it decrypted so far. */
  out(): Buffer;
  err(): string;
}

export interface TlsPeers {
  server: TlsPeer;
  client: TlsPeer;
  /** The server's port. */
  port: number;
  /** Writes `data` into `from`'s side and resolves once the other side decrypted all of it. */
  send(from: TlsPeer, data: Buffer): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a server with a fresh self-signed certificate in `dir` and a client connected to it. */
export async function startTlsPeers(dir: string): Promise<TlsPeers> {
  const cert = join(dir, 'tls-peer-cert.pem');
  const key = join(dir, 'tls-peer-key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
  const port = await freePort();
  const procs: ChildProcess[] = [];
  const start = (args: string[]): TlsPeer => {
    const proc = spawn(process.execPath, [resolve(REPO, 'test/fixtures/tls_pipe.mjs'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    proc.stdout!.on('data', (d: Buffer) => out.push(d));
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    procs.push(proc);
    return { proc, out: () => Buffer.concat(out), err: () => err };
  };
  const stop = async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once('exit', r)) : undefined)));
  };
  try {
    const server = start(['server', String(port), cert, key]);
    await until('TLS server listening', () => server.err().includes('listening'));
    const client = start(['client', String(port)]);
    await until('TLS client connected', () => client.err().includes('connected'));
    const send = async (from: TlsPeer, data: Buffer) => {
      const to = from === client ? server : client;
      const want = to.out().length + data.length;
      from.proc.stdin!.write(data);
      await until('TLS peer decrypted the write', () => to.out().length >= want);
    };
    return { server, client, port, send, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
