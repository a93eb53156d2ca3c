/**
 * Covered from the first call: processes that start after the agent is ready, load a TLS library
 * no process had mapped (the host's libssl through Python's ssl, the host's GnuTLS through
 * gnutls-cli, the libssl of a container that started after the agent), send 50 SIP messages right
 * after the handshake and exit, within about 100 ms. The agent probed those files at start (or when
 * the container started) from the loaders' paths, so every message must be forwarded once, byte for
 * byte. The servers' libssl is a private copy deleted before the agent started, which the agent
 * cannot probe: what is forwarded can only come from the short-lived client. Ground truth: the
 * messages the test wrote, and what the server decrypted.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, REPO, startAgent, type RunningAgent } from '../helpers/agent.js';
import { until } from '../helpers/wait.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { cannotRunDocker, cgroupParentsBefore, DOCKER, Dockerd, sippRootfsTar } from '../helpers/containers.js';
import { mapsKey } from '../helpers/maps.js';

const why = kernelSuiteSkipReason('end-to-end TLS first-call tests');
const noDocker = why ? undefined : cannotRunDocker();
if (noDocker && process.env.CI) throw new Error(`TLS first-call container test cannot run in CI: ${noDocker}`);
if (noDocker) console.warn(`\n!!! SKIPPING the container case of the TLS first-call tests: ${noDocker}\n`);

const MESSAGES = 50;
const TLS_BURST = resolve(REPO, 'test/fixtures/tls_burst.py');
const HOST_LIBDIR = '/usr/lib/x86_64-linux-gnu';

/** 50 distinct SIP MESSAGEs, bodies of varying length. */
function sipMessages(name: string): Buffer[] {
  return Array.from({ length: MESSAGES }, (_, i) => {
    const body = `first call ${name} ${i} ${'x'.repeat((i * 37) % 400)}`;
    return Buffer.from(
      `MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK-${name}-${i}\r\nFrom: <sip:alice@127.0.0.1>;tag=${i}\r\n` +
        `To: <sip:bob@127.0.0.1>\r\nCall-ID: ${name}-${i}@first-call.test\r\nCSeq: ${i + 1} MESSAGE\r\nContent-Type: text/plain\r\n` +
        `Content-Length: ${body.length}\r\n\r\n${body}`,
    );
  });
}

interface Server {
  port: number;
  proc: ChildProcess;
  output(): Buffer;
}

/**
 * openssl s_server on a private copy of libssl and libcrypto, deleted once it is listening: a
 * library the agent can never probe (a deleted file), so the server's side of each message is not
 * captured. Its stdin stays open (s_server closes the connection on EOF there).
 */
async function unprobedServer(dir: string, name: string, cert: string, key: string): Promise<Server> {
  const lib = join(dir, `lib-${name}`);
  mkdirSync(lib);
  for (const so of ['libssl.so.3', 'libcrypto.so.3']) copyFileSync(join(HOST_LIBDIR, so), join(lib, so));
  const port = await freePort();
  const proc = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert, '-key', key, '-quiet', '-naccept', '1'], {
    env: { ...process.env, LD_LIBRARY_PATH: lib },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  proc.stdout!.on('data', (d: Buffer) => out.push(d));
  proc.stderr!.resume();
  await until(`${name} server listening`, () => execFileSync('ss', ['-Hltn', `sport = :${port}`]).toString().trim() !== '');
  for (const so of ['libssl.so.3', 'libcrypto.so.3']) unlinkSync(join(lib, so));
  return { port, proc, output: () => Buffer.concat(out) };
}

/** Starts a client with `input` on its stdin (then EOF) and resolves with its exit code. */
function runClient(cmd: string, args: string[], input: Buffer): { exited: Promise<number | null>; stderr: () => string } {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d));
  proc.stdin!.end(input);
  return { exited: new Promise((r) => proc.once('exit', (code) => r(code))), stderr: () => stderr };
}

const lengthPrefixed = (messages: Buffer[]) =>
  Buffer.concat(messages.flatMap((m) => [Buffer.from([m.length >>> 24, (m.length >>> 16) & 0xff, (m.length >>> 8) & 0xff, m.length & 0xff]), m]));

describe.skipIf(!!why)('TLS covered from the first call', () => {
  let dir: string;
  let cert: string;
  let certKey: string;
  let agent: RunningAgent;
  let hep: HepCollector;
  let dockerd: Dockerd | undefined;
  const servers: Record<string, Server> = {};
  const cgroupParents = cgroupParentsBefore(['docker']);
  const container = `hepbpf-first-call-${process.pid}`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-first-call-'));
    cert = join(dir, 'cert.pem');
    certKey = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', certKey, '-out', cert, '-days', '2', '-subj', '/CN=hepbpf-test'], { stdio: 'ignore' });
    for (const name of ['openssl', 'gnutls', 'container']) servers[name] = await unprobedServer(dir, name, cert, certKey);
    if (!noDocker) {
      dockerd = await Dockerd.start(join(dir, 'docker'));
      dockerd.docker('import', sippRootfsTar(dir), 'local/sipp:1');
    }
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url, '--hep-id', '2001']);
  });

  afterAll(async () => {
    const stopped = await agent?.stop();
    expect(stopped?.code).toBe(0);
    await hep?.close();
    for (const s of Object.values(servers)) if (s.proc.exitCode === null) s.proc.kill('SIGTERM');
    try {
      dockerd?.docker('rm', '-f', container);
    } catch {
      /* not created */
    }
    await dockerd?.stop();
    for (const mnt of readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(dir)).reverse())
      execFileSync('umount', ['-l', mnt]);
    rmSync(dir, { recursive: true, force: true });
    cgroupParents.removeNew();
  });

  /** The agent logged probing this file (device and inode as in /proc/PID/maps) from a loader path, not from a process's maps. */
  const probedFromLoader = (key: string) => agent.logs.some((l) => l.msg === 'TLS library probed' && l.file === key && l.found === 'loader');

  /**
   * The client's messages reach the server (its decrypted output is exactly what the test wrote),
   * and each reaches the collector once, byte for byte, as TLS (HEP IP protocol 22), on one
   * connection to the server; nothing comes from the server's side.
   */
  async function expectEachForwardedOnce(server: Server, messages: Buffer[], hepBefore: number): Promise<void> {
    const sent = Buffer.concat(messages);
    await until('the server decrypted every message', () => server.output().length >= sent.length);
    expect(server.output().equals(sent)).toBe(true);
    // The agent captures the whole host: only this server's connection counts.
    const ours = () => hep.packets.slice(hepBefore).map((p) => decodeHep(p)).filter((p) => p.dstPort === server.port || p.srcPort === server.port);
    await until(`${MESSAGES} messages forwarded`, () => ours().length >= MESSAGES, 20_000);
    await new Promise((r) => setTimeout(r, 1500)); // a settle: one more would show now
    const forwarded = ours();
    expect(forwarded.map((p) => p.payload!.toString('latin1')).sort()).toEqual(messages.map((m) => m.toString('latin1')).sort());
    expect(new Set(forwarded.map((p) => `${p.srcIp}:${p.srcPort}>${p.dstIp}:${p.dstPort} ${p.ipProto}`))).toEqual(
      new Set([`127.0.0.1:${forwarded[0].srcPort}>127.0.0.1:${server.port} 22`]),
    );
  }

  it(`a process started after ready loads the host's libssl (Python ssl), sends ${MESSAGES} messages at once and exits: each forwarded once`, async () => {
    expect(probedFromLoader(mapsKey(realpathSync(join(HOST_LIBDIR, 'libssl.so.3'))))).toBe(true);
    const messages = sipMessages('openssl');
    const hepBefore = hep.packets.length;
    const client = runClient('/usr/bin/python3', [TLS_BURST, String(servers.openssl.port)], lengthPrefixed(messages));
    expect(await client.exited, client.stderr()).toBe(0);
    await expectEachForwardedOnce(servers.openssl, messages, hepBefore);
  });

  it(`a process started after ready loads the host's GnuTLS (gnutls-cli), sends ${MESSAGES} messages at once and exits: each forwarded once`, async () => {
    expect(probedFromLoader(mapsKey(realpathSync(join(HOST_LIBDIR, 'libgnutls.so.30'))))).toBe(true);
    const messages = sipMessages('gnutls');
    const hepBefore = hep.packets.length;
    const client = runClient('gnutls-cli', ['--insecure', '-p', String(servers.gnutls.port), '127.0.0.1'], Buffer.concat(messages));
    expect(await client.exited, client.stderr()).toBe(0);
    await expectEachForwardedOnce(servers.gnutls, messages, hepBefore);
  });

  it.skipIf(!!noDocker)(`a container started after the agent: its image's libssl is probed when it starts, and a client exec'd in it sends ${MESSAGES} messages at once: each forwarded once`, async () => {
    // The image has no ld.so.cache: its libssl is found in the loader's default directories.
    dockerd!.docker('run', '-d', '--network', 'host', '--name', container, 'local/sipp:1', '/usr/bin/sleep', '1000000');
    const layers = join(dir, 'docker', 'data', 'overlay2');
    const imageLibssl = execFileSync('find', [layers, '-path', '*/diff/*', '-name', 'libssl.so.3', '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')[0];
    const inode = statSync(imageLibssl).ino;
    const probedInContainer = () =>
      agent.logs.some((l) => l.msg === 'TLS library probed' && l.found === 'loader' && String(l.file).endsWith(`:${inode}`) && l.path === '/lib/x86_64-linux-gnu/libssl.so.3');
    await until(`the container's libssl (inode ${inode}) probed from its loader paths`, probedInContainer).catch((err: Error) => {
      throw new Error(`${err.message}; TLS discovery said: ${JSON.stringify(agent.logs.filter((l) => /TLS/.test(String(l.msg))))}`);
    });
    const messages = sipMessages('container');
    const hepBefore = hep.packets.length;
    const client = runClient(
      DOCKER,
      ['-H', `unix://${dockerd!.socket}`, 'exec', '-i', container, '/usr/bin/openssl', 's_client', '-connect', `127.0.0.1:${servers.container.port}`, '-quiet', '-no_ign_eof'],
      Buffer.concat(messages),
    );
    expect(await client.exited, client.stderr()).toBe(0);
    await expectEachForwardedOnce(servers.container, messages, hepBefore);
  });
});
