/**
 * The control socket of the real agent against hostile clients and paths, and what a real
 * `hepbpf tail` prints of hostile traffic. Sockets live in a temp dir (HEPBPF_SOCKET): /run/hepbpf
 * is never touched.
 */
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, udpCollector, type HepCollector } from '../helpers/collector.js';
import { startTail } from '../helpers/tail.js';
import { encodeControlRequest, encodeTailEvent, REQUEST_TAIL } from '../../src/output/tail-protocol.js';

const why = kernelSuiteSkipReason('control socket end-to-end tests');

const connected = (path: string) =>
  new Promise<Socket>((res, rej) => {
    const s = connect(path);
    s.once('connect', () => res(s)).once('error', rej);
  });
/** Milliseconds until the agent closes `s`; Infinity when it is still open after 10 s. */
const closedAfter = (s: Socket, since = Date.now()) =>
  new Promise<number>((r) => {
    if (s.destroyed) return r(0);
    const timer = setTimeout(() => r(Infinity), 10_000);
    s.once('close', () => {
      clearTimeout(timer);
      r(Date.now() - since);
    });
  });

/** Sends one UDP datagram from this process to 127.0.0.1:port (someone listens there, so it is delivered). */
async function sendUdp(port: number, data: Buffer): Promise<void> {
  const rx = createSocket('udp4');
  await new Promise<void>((r) => rx.bind(port, '127.0.0.1', r));
  const received = new Promise((r) => rx.once('message', r));
  const tx = createSocket('udp4');
  await new Promise<void>((r, j) => tx.send(data, port, '127.0.0.1', (err) => (err ? j(err) : r())));
  tx.close();
  await received;
  rx.close();
}

const sipMessage = (callId: string) =>
  Buffer.from(`MESSAGE sip:edge@127.0.0.1 SIP/2.0\r\nCall-ID: ${callId}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n`, 'latin1');

describe.skipIf(!!why)('control socket of the real agent', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let socket: string;
  let hep: HepCollector;
  let agent: RunningAgent;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-control-'));
    socket = join(dir, 'run', 'hepbpf.sock');
    env = { ...process.env, HEPBPF_SOCKET: socket };
    hep = await udpCollector();
    agent = await startAgent(['run', '--hep', hep.url], env);
  });
  afterAll(async () => {
    if (agent.proc.exitCode === null) await agent.stop();
    await hep.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the two bytes 01 57 close that client; the agent goes on serving tail', async () => {
    const bad = await connected(socket);
    bad.write(Buffer.from([0x01, 0x57]));
    expect(await closedAfter(bad)).toBeLessThan(2000);
    const port = await freePort();
    const tail = await startTail(['--json', '--port', String(port)], env);
    try {
      expect(tail.err()).toMatch(/ready, attached to the running agent/);
      await sendUdp(port, sipMessage('after-bad-request'));
      const out = await tail.waitForOutput((o) => o.includes('after-bad-request'));
      expect(out.trim().split('\n').map((l) => JSON.parse(l).callId)).toEqual(['after-bad-request']);
    } finally {
      await tail.stop();
    }
    expect(agent.proc.exitCode).toBe(null);
    expect(agent.logs.filter((l) => String(l.msg).startsWith('control socket: bad request')).map((l) => [l.msg, l.level])).toEqual([
      ['control socket: bad request (undecodable ControlRequest: invalid wire type 7 at offset 1), client closed', 40],
    ]);
  });

  it('a client announcing a 4 GiB request is closed at once, however much it goes on sending', async () => {
    const s = await connected(socket);
    const t0 = Date.now();
    s.on('error', () => undefined); // writes after the close: EPIPE
    s.write(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x10]));
    for (let i = 0; i < 64 && !s.destroyed; i++) s.write(Buffer.alloc(64 * 1024));
    expect(await closedAfter(s, t0)).toBeLessThan(1000);
  });

  it('a client that sends no complete request is closed after 5 s', async () => {
    const s = await connected(socket);
    const t0 = Date.now();
    s.write(Buffer.from([0x02, 0x08])); // half a request
    const ms = await closedAfter(s, t0);
    expect(ms).toBeGreaterThanOrEqual(4900);
    expect(ms).toBeLessThan(7000);
  });

  it('accepts 16 clients and closes the 17th on arrival', async () => {
    const clients: Socket[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        clients.push(await connected(socket));
        clients[i].write(encodeControlRequest(REQUEST_TAIL));
      }
      const extra = await connected(socket);
      expect(await closedAfter(extra)).toBeLessThan(1000);
      expect(clients.every((c) => !c.destroyed)).toBe(true);
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  it('tail shows ESC, BEL and CR of a request URI, a reason phrase and a Call-ID escaped; --json keeps them exact', async () => {
    const port = await freePort();
    const human = await startTail(['--port', String(port)], env);
    const json = await startTail(['--json', '--port', String(port)], env);
    try {
      const uri = 'sip:\x1b]0;owned\x07\x1b[2J@x';
      const callId = 'esc\x1b]0;title\x07\x1b[2J\rforged';
      const reason = 'OK\x1b]0;t\x07\x1b[2J';
      await sendUdp(port, Buffer.from(`MESSAGE ${uri} SIP/2.0\r\nCall-ID: ${callId}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n`, 'latin1'));
      await sendUdp(port, Buffer.from(`SIP/2.0 200 ${reason}\r\nCall-ID: ${callId}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n`, 'latin1'));
      const text = await human.waitForOutput((o) => o.split('\n').length === 3);
      const records = (await json.waitForOutput((o) => o.split('\n').length === 3)).trim().split('\n').map((l) => JSON.parse(l));
      const shownCallId = 'esc\\x1b]0;title\\x07\\x1b[2J\\x0dforged';
      const lines = text.trim().split('\n');
      expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{6} 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ UDP \S+\[\d+\] MESSAGE sip:\\x1b\]0;owned\\x07\\x1b\[2J@x (.*)$/);
      expect(lines[0].endsWith(` ${shownCallId}`)).toBe(true);
      expect(lines[1]).toMatch(/ 200 OK\\x1b\]0;t\\x07\\x1b\[2J (.*)$/);
      expect(lines[1].endsWith(` ${shownCallId}`)).toBe(true);
      expect(text).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
      expect(records.map((r) => [r.summary, r.callId])).toEqual([
        [`MESSAGE ${uri}`, callId],
        [`200 ${reason}`, callId],
      ]);
    } finally {
      await human.stop();
      await json.stop();
    }
  });

  it('counts every refused client in its stats', async () => {
    const { code, final } = await agent.stop();
    expect(code).toBe(0);
    expect(final?.control).toEqual({ tailClients: 0, refusedClients: 1, badRequests: 2, idleClosed: 1, slowTailClients: 0, tailBytesDropped: 0 });
  });
});

describe.skipIf(!!why)('control socket directory not trusted', () => {
  let dir: string;
  let forger: Server;
  let forgerConnections = 0;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-control-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a directory owned by another user: the agent leaves it alone and captures; tail and containers refuse, no forged event is printed', async () => {
    const other = join(dir, 'other');
    mkdirSync(other, { mode: 0o755 });
    chownSync(other, 65534, 65534);
    const socket = join(other, 'hepbpf.sock');
    // What that user would serve: a forged event to whoever connects.
    const forged = encodeTailEvent({
      ts: '2026-01-01T00:00:00.000000Z', proto: 'sip', transport: 'udp', src: { ip: '10.0.0.1', port: 5060 }, dst: { ip: '10.0.0.2', port: 5060 },
      pid: 1, comm: 'forged', cgroupId: '1', correlationId: 'FORGED', summary: 'INVITE sip:FORGED', callId: 'FORGED', size: 0, truncated: false,
      connectionUnknown: false, payload: Buffer.alloc(0), container: null, peerContainer: null,
    });
    forger = createServer((s) => {
      forgerConnections++;
      s.end(forged);
    });
    await new Promise<void>((r) => forger.listen(socket, r));
    chownSync(socket, 65534, 65534);
    const inode = statSync(socket).ino;
    const env = { ...process.env, HEPBPF_SOCKET: socket };
    const hep = await udpCollector();
    const agent = await startAgent(['run', '--hep', hep.url], env);
    try {
      const refusal = `${other} is owned by uid 65534, not root: refused for the control socket`;
      expect(agent.logs.filter((l) => l.level === 50).map((l) => [l.msg, l.err, l.socket])).toEqual([['control socket disabled', refusal, socket]]);
      expect(statSync(socket).ino).toBe(inode);
      expect(statSync(other).mode & 0o7777).toBe(0o755);
      // Capture goes on.
      const port = await freePort();
      await sendUdp(port, sipMessage('captured-without-control-socket'));
      const packets = await hep.waitFor(1, 20_000, 0);
      expect(packets.some((p) => p.includes('captured-without-control-socket'))).toBe(true);

      for (const cmd of [['tail'], ['tail', '--json'], ['containers']]) {
        const r = spawnSync(process.execPath, [CLI, ...cmd], { env, encoding: 'utf8', timeout: 20_000 });
        expect([r.status, r.stdout, r.stderr]).toEqual([1, '', `hepbpf: ${refusal}\n`]);
      }
      expect(forgerConnections).toBe(0);
    } finally {
      expect((await agent.stop()).code).toBe(0);
      await hep.close();
      await new Promise((r) => forger.close(r));
    }
  });

  it('a symlink in place of the directory: the agent refuses it and creates nothing behind it', async () => {
    const real = join(dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, join(dir, 'link'));
    const socket = join(dir, 'link', 'hepbpf.sock');
    const hep = await udpCollector();
    const agent = await startAgent(['run', '--hep', hep.url], { ...process.env, HEPBPF_SOCKET: socket });
    try {
      expect(agent.logs.filter((l) => l.level === 50).map((l) => l.err)).toEqual([`${join(dir, 'link')} is a symlink: refused for the control socket`]);
      expect(readdirSync(real)).toEqual([]);
    } finally {
      expect((await agent.stop()).code).toBe(0);
      await hep.close();
    }
  });
});
