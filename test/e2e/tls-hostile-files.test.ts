/**
 * TLS discovery against processes that control what is at their libraries' paths. An unprivileged
 * user (nobody) maps a private copy of libssl, then takes its own user namespace and chroots into a
 * directory where that path is a FIFO, a symlink to a root-only copy of libssl on the host, or a
 * file that is not a library. The real agent must not block on the FIFO, must not read outside the
 * jail, must not probe the root-only file, and must still probe that same libssl for a host process
 * and capture its TLS.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { mapsKey } from '../helpers/maps.js';

const why = kernelSuiteSkipReason('end-to-end test of TLS discovery on hostile files');

const NOBODY = '65534';
const LIB_DIR = '/usr/lib/x86_64-linux-gnu';
/** Run as nobody in its own user namespace: maps libssl (Python's ssl), then changes its root. */
const JAILED = "import ssl, os, sys\nos.chroot(sys.argv[1])\nos.chdir('/')\nprint('jailed', flush=True)\nsys.stdin.read()\n";
const SIP = Buffer.from(
  'OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-hostile\r\nFrom: <sip:alice@127.0.0.1>;tag=1\r\n' +
    'To: <sip:bob@127.0.0.1>\r\nCall-ID: hostile-files@tls.test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n',
);

describe.skipIf(!!why)('TLS discovery on files a traced process controls', () => {
  let dir: string;
  let libssl: string; // the private copy every process here maps
  let secret: string; // a root-only copy of libssl, outside every jail
  let agent: RunningAgent;
  let hep: HepCollector;
  const jailed: Record<'fifo' | 'symlink' | 'notElf', ChildProcess> = {} as never;
  const peers: ChildProcess[] = [];

  /** Starts a process as nobody that maps libssl and chroots into a jail where libssl's path is made by `plant`. */
  async function startJailed(name: keyof typeof jailed, plant: (path: string) => void): Promise<void> {
    const jail = join(dir, `jail-${name}`);
    mkdirSync(join(jail, dirname(libssl)), { recursive: true, mode: 0o755 });
    plant(join(jail, libssl));
    const child = spawn('setpriv', ['--reuid', NOBODY, '--regid', NOBODY, '--clear-groups', '--', 'unshare', '-r', 'python3', '-c', JAILED, jail], {
      env: { PATH: process.env.PATH, LD_LIBRARY_PATH: dirname(libssl) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    jailed[name] = child;
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    await until(`${name} process jailed`, () => out.includes('jailed') || child.exitCode !== null);
    // It maps the private libssl, and its root is the jail.
    const maps = readFileSync(`/proc/${child.pid}/maps`, 'latin1');
    const [major, minor, inode] = mapsKey(libssl).split(':');
    expect(maps).toContain(` ${major}:${minor} ${inode} `);
    expect(maps).toMatch(new RegExp(` r-xp [0-9a-f]+ ${major}:${minor} ${inode} +${libssl}\n`));
    expect(statSync(`/proc/${child.pid}/root`).ino).toBe(statSync(jail).ino);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-hostile-'));
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, 'lib'), { mode: 0o755 });
    for (const so of ['libssl.so.3', 'libcrypto.so.3']) copyFileSync(join(LIB_DIR, so), join(dir, 'lib', so));
    libssl = join(dir, 'lib', 'libssl.so.3');
    mkdirSync(join(dir, 'secret'), { mode: 0o700 });
    secret = join(dir, 'secret', 'libssl.so.3');
    copyFileSync(libssl, secret);
    chmodSync(secret, 0o600);
    await startJailed('fifo', (p) => execFileSync('mkfifo', [p]));
    await startJailed('symlink', (p) => symlinkSync(secret, p));
    await startJailed('notElf', (p) => writeFileSync(p, 'not a library\n'));
    // Any read of the secret moves its atime (relatime: atime older than mtime).
    utimesSync(secret, new Date(1000), new Date());
    hep = await udpCollector();
    // Ready means it scanned every process at start, the jailed ones included: the FIFO did not block it.
    agent = await startAgent(['run', '--hep', hep.url]);
  }, 60_000);

  afterAll(async () => {
    let stopped: Awaited<ReturnType<RunningAgent['stop']>> | undefined;
    try {
      for (const p of [...peers, ...Object.values(jailed)]) {
        if (p.exitCode === null && p.signalCode === null) {
          p.kill('SIGKILL');
          await once(p, 'exit');
        }
      }
      stopped = await agent?.stop();
      await hep?.close();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
    if (agent) expect(stopped?.code).toBe(0);
  });

  it('refuses what each jail holds, never reads outside it, and still probes that libssl for a host process and captures its TLS', async () => {
    const about = (pid: number | undefined) => agent.logs.filter((l) => l.pid === pid);
    const refusal = (name: keyof typeof jailed) =>
      about(jailed[name].pid).map((l) => ({ msg: l.msg, path: l.path, file: l.file, reason: l.reason }));
    expect(refusal('fifo')).toEqual([
      { msg: 'TLS discovery: file refused', path: libssl, file: mapsKey(libssl), reason: expect.stringMatching(/^opening .* inside \/proc\/\d+\/root \(not a regular file: type 010000\) failed: EINVAL/) },
    ]);
    expect(refusal('notElf')).toEqual([
      { msg: 'TLS discovery: file refused', path: libssl, file: mapsKey(libssl), reason: 'not the file the process mapped: another device or inode at that path in its root' },
    ]);
    // Resolved inside the jail, the symlink leads nowhere: nothing opened, nothing to say.
    expect(about(jailed.symlink.pid)).toEqual([]);
    expect(JSON.stringify(agent.logs)).not.toContain(secret);

    // A host process using the same libssl: probed, and its TLS captured.
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
    const port = await freePort();
    const env = { ...process.env, LD_LIBRARY_PATH: dirname(libssl) };
    const server = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', key, '-quiet', '-naccept', '1'], { env, stdio: ['pipe', 'pipe', 'ignore'] });
    peers.push(server);
    let received = Buffer.alloc(0);
    server.stdout!.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
    await until('server listening', () => execFileSync('ss', ['-Hltn', `sport = :${port}`]).toString().trim() !== '');
    const probed = () => agent.logs.find((l) => l.msg === 'TLS library probed' && l.path === libssl);
    await until('the private libssl probed', () => probed() !== undefined, 5000);
    expect(probed()).toMatchObject({ pid: server.pid, file: mapsKey(libssl), kind: 'openssl' });
    const client = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-quiet'], { env, stdio: ['pipe', 'ignore', 'ignore'] });
    peers.push(client);
    client.stdin!.write(SIP);
    await until('the server decrypted the request', () => received.length >= SIP.length);
    expect(received.equals(SIP)).toBe(true);
    await until('the request forwarded', () => hep.packets.map((p) => decodeHep(p)).some((p) => p.payload?.equals(SIP)), 5000);
    const forwarded = hep.packets.map((p) => decodeHep(p)).filter((p) => p.payload?.equals(SIP));
    expect(forwarded.map((p) => ({ ipProto: p.ipProto, dstPort: p.dstPort }))).toEqual([{ ipProto: 22, dstPort: port }]);

    // Nothing ever read the root-only file; the check itself can fail: a read moves the atime.
    expect(statSync(secret).atimeMs).toBe(1000);
    const control = join(dir, 'control');
    writeFileSync(control, 'x');
    utimesSync(control, new Date(1000), new Date());
    readFileSync(control);
    expect(statSync(control).atimeMs).not.toBe(1000);
  });
});
