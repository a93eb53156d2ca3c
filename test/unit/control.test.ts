/**
 * The control socket against hostile clients and paths, on a real unix socket in a temp dir (no
 * kernel needed): refused requests, size cap with linear buffering, client limit, slow tail
 * clients, untrusted directories; and the escaping of what human output prints.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaptureEvent } from '../../src/enrich/event.js';
import { formatContainers } from '../../src/cli/containers.js';
import { prepareControlDir, trustedControlSocket, UntrustedControlPath } from '../../src/output/control-path.js';
import { ControlServer, MAX_CONTROL_CLIENTS } from '../../src/output/control-server.js';
import {
  ContainerListReader,
  ControlProtocolError,
  ControlRequestReader,
  encodeContainerList,
  encodeControlRequest,
  MAX_REQUEST_BYTES,
  REQUEST_CONTAINERS,
  REQUEST_TAIL,
} from '../../src/output/tail-protocol.js';
import { escapeControl, formatTailLine } from '../../src/output/tail-record.js';
import type { Message } from '../../src/stream/message.js';

const HOSTILE = '\x1b]0;owned\x07\x1b[2J\rforged\nline\x7f\x9b31m';
const SHOWN = '\\x1b]0;owned\\x07\\x1b[2J\\x0dforged\\x0aline\\x7f\\x9b31m';

describe('escapeControl', () => {
  it('shows C0, DEL and C1 as \\xNN and leaves everything else alone', () => {
    expect(escapeControl(HOSTILE)).toBe(SHOWN);
    expect(escapeControl('\x00\x1f\x20~\x80\x9f\xa0é€ sip:alice@x;tag=1')).toBe('\\x00\\x1f ~\\x80\\x9f\xa0é€ sip:alice@x;tag=1');
  });

  it('every field of a tail line and of the containers table is escaped', () => {
    const c = { id: 'abc', name: `n${HOSTILE}`, runtime: 'docker', service: `s${HOSTILE}`, project: `p${HOSTILE}` };
    const line = formatTailLine({
      ts: '2026-11-24T08:00:00.123456Z', proto: 'sip', transport: 'udp', src: { ip: '127.0.0.1', port: 1 }, dst: { ip: '127.0.0.1', port: 2 },
      pid: 7, comm: `x${HOSTILE}`, cgroupId: '1', correlationId: 'c', summary: `INVITE sip:${HOSTILE}`, callId: `id${HOSTILE}`,
      size: 1, truncated: false, connectionUnknown: false, payload: Buffer.alloc(0), container: c, peerContainer: null,
    });
    expect(line).toBe(`08:00:00.123456 127.0.0.1:1 -> 127.0.0.1:2 UDP x${SHOWN}[7] (p${SHOWN}/s${SHOWN}) INVITE sip:${SHOWN} id${SHOWN}`);
    const table = formatContainers([{ container: c, cgroupIds: ['1'], messages: 1, peerMessages: 0 }]);
    expect(table.split('\n')[1]).toBe(`docker   n${SHOWN}  p${SHOWN}/s${SHOWN}  abc  1         0`);
    expect(table).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
  });
});

describe('control protocol reader', () => {
  const read = (bytes: number[]) => new ControlRequestReader().push(Buffer.from(bytes), () => undefined);

  it('refuses an invalid wire type, an oversized length and an endless length prefix with ControlProtocolError', () => {
    expect(() => read([0x01, 0x57])).toThrow(ControlProtocolError);
    expect(() => read([0x80, 0x80, 0x80, 0x80, 0x10])).toThrow(/4294967296 bytes announced, at most 4096/); // 4 GiB
    expect(() => read([0x81, 0x20])).toThrow(/4097 bytes announced/);
    expect(() => read([0x80, 0x80, 0x80, 0x80, 0x80, 0x80])).toThrow(/length prefix longer than 5 bytes/);
    const got: number[] = [];
    new ControlRequestReader().push(Buffer.from(encodeControlRequest(REQUEST_CONTAINERS)), (m) => got.push(m.kind));
    expect(got).toEqual([REQUEST_CONTAINERS]);
    expect(MAX_REQUEST_BYTES).toBe(4096);
  });

  it('buffers a large message sent in small chunks in linear time', () => {
    const reader = new ContainerListReader();
    const id = 'a'.repeat(32 * 1024 * 1024);
    const stream = Buffer.from(encodeContainerList([{ container: { id, name: 'n', runtime: 'docker' }, cgroupIds: [], messages: 0, peerMessages: 0 }]));
    const got: string[] = [];
    const t0 = Date.now();
    let at = 0;
    for (; at + 1024 < stream.length; at += 1024) reader.push(stream.subarray(at, at + 1024), (m) => got.push(m.containers[0].container.id));
    // Buffering 32 MiB in 1 KiB chunks; repeated concatenation took 17 s here. Decoding the whole (last push) is not timed.
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(got.length).toBe(0);
    reader.push(stream.subarray(at), (m) => got.push(m.containers[0].container.id));
    expect(got.length).toBe(1);
    expect(got[0].length).toBe(id.length);
  });
});

interface LogLine {
  level: string;
  obj: Record<string, unknown>;
  msg: string;
}
const recordingLog = (lines: LogLine[]) =>
  ({
    warn: (obj: Record<string, unknown>, msg: string) => lines.push({ level: 'warn', obj, msg }),
    error: (obj: Record<string, unknown>, msg: string) => lines.push({ level: 'error', obj, msg }),
  }) as unknown as Logger;

const closed = (s: Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
const connected = (path: string) =>
  new Promise<Socket>((res, rej) => {
    const s = connect(path);
    s.once('connect', () => res(s)).once('error', rej);
  });
/** Asks for the container list and resolves with its length: the server still serves. */
async function containersCount(path: string): Promise<number> {
  const s = await connected(path);
  s.write(encodeControlRequest(REQUEST_CONTAINERS));
  return new Promise((res) => {
    const reader = new ContainerListReader();
    s.on('data', (c: Buffer) => reader.push(c, (m) => res(m.containers.length)));
  });
}
const captureEvent = (payload: Buffer): CaptureEvent => {
  const message = {
    tsNs: 1n, proto: 'sip', transport: 'udp', family: 4, src: { ip: '127.0.0.1', port: 1 }, dst: { ip: '127.0.0.1', port: 2 }, pid: 1, tid: 1,
    comm: 'x', cgroupId: 1n, netns: 0, sockId: 1n, direction: 'egress', payload, size: payload.length, truncated: false, peerUnknown: false,
    connectionUnknown: false,
  } as Message;
  return { message, payload, summary: 'MESSAGE', wallUs: 1, correlationId: 'c', container: null, peerContainer: null };
};

describe.skipIf(process.getuid?.() !== 0)('control server (root: the socket and its directory must be root-owned)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-control-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a bad request closes that client only, counted and logged once per interval', async () => {
    const logs: LogLine[] = [];
    const server = new ControlServer(recordingLog(logs), () => [], join(dir, 'a', 'hepbpf.sock'));
    await server.start();
    try {
      expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
      const tail = await connected(server.path);
      tail.write(encodeControlRequest(REQUEST_TAIL));
      for (const bytes of [[0x01, 0x57], [0x80, 0x80, 0x80, 0x80, 0x10], [0x02, 0x08, 0x07]]) {
        const s = await connected(server.path);
        s.write(Buffer.from(bytes));
        await closed(s);
      }
      expect(server.stats()).toMatchObject({ badRequests: 3, tailClients: 1 });
      expect(logs.map((l) => l.msg)).toEqual(['control socket: bad request (undecodable ControlRequest: invalid wire type 7 at offset 1), client closed']);
      expect(await containersCount(server.path)).toBe(0);
      expect(tail.destroyed).toBe(false);
      tail.destroy();
    } finally {
      await server.close();
    }
  });

  it(`closes connections past ${MAX_CONTROL_CLIENTS} on arrival and counts them`, async () => {
    const server = new ControlServer(recordingLog([]), () => [], join(dir, 'b', 'hepbpf.sock'));
    await server.start();
    const clients: Socket[] = [];
    try {
      for (let i = 0; i < MAX_CONTROL_CLIENTS; i++) {
        clients.push(await connected(server.path));
        clients[i].write(encodeControlRequest(REQUEST_TAIL));
      }
      const extra = await connected(server.path);
      await closed(extra);
      expect(server.stats().refusedClients).toBe(1);
      clients.pop()!.destroy();
      await new Promise((r) => setTimeout(r, 50)); // the server sees the close on its next turn
      expect(await containersCount(server.path)).toBe(0);
    } finally {
      for (const c of clients) c.destroy();
      await server.close();
    }
  });

  it('disconnects a tail client that stops reading once 4 MiB are queued for it, and counts it', async () => {
    const server = new ControlServer(recordingLog([]), () => [], join(dir, 'c', 'hepbpf.sock'));
    await server.start();
    try {
      const tail = await connected(server.path);
      tail.write(encodeControlRequest(REQUEST_TAIL));
      tail.pause();
      while (server.stats().tailClients === 0) await new Promise((r) => setTimeout(r, 5));
      const ev = captureEvent(Buffer.alloc(60_000, 'a'));
      let published = 0;
      while (server.stats().tailClients === 1 && published < 10_000) {
        server.publish(ev);
        published++;
      }
      // Socket buffers hold some, the agent's queue at most 4 MiB: never the 600 MB published here.
      expect(published).toBeLessThan(1000);
      const stats = server.stats();
      expect(stats).toMatchObject({ tailClients: 0, slowTailClients: 1 });
      expect(stats.tailBytesDropped).toBeGreaterThan(4 * 1024 * 1024);
      expect(stats.tailBytesDropped).toBeLessThan(4 * 1024 * 1024 + 70_000);
      tail.destroy();
    } finally {
      await server.close();
    }
  });

  it('refuses a directory owned by another user, a symlink, or a world-writable one, and changes none', async () => {
    const other = join(dir, 'other');
    mkdirSync(other, { mode: 0o700 });
    chownSync(other, 65534, 65534);
    const sticky = join(dir, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const target = join(dir, 'target');
    mkdirSync(target, { mode: 0o700 });
    symlinkSync(target, join(dir, 'link'));
    for (const [d, why] of [
      [other, /owned by uid 65534, not root/],
      [join(dir, 'link'), /is a symlink/],
      [sticky, /writable by group or others \(mode 1777\)/],
    ] as const) {
      expect(() => prepareControlDir(join(d, 'hepbpf.sock'))).toThrow(why);
      expect(() => trustedControlSocket(join(d, 'hepbpf.sock'))).toThrow(UntrustedControlPath);
      const logs: LogLine[] = [];
      const server = new ControlServer(recordingLog(logs), () => [], join(d, 'hepbpf.sock'));
      await server.start();
      expect(logs).toEqual([{ level: 'error', obj: { socket: join(d, 'hepbpf.sock'), err: expect.stringMatching(why) }, msg: 'control socket disabled' }]);
      await server.close();
    }
    expect(statSync(sticky).mode & 0o7777).toBe(0o1777);
    expect(statSync(other).uid).toBe(65534);
  });

  it('the client trusts only a root-owned socket in a root-owned directory', async () => {
    const ok = join(dir, 'ok');
    prepareControlDir(join(ok, 's.sock'));
    expect(trustedControlSocket(join(ok, 's.sock'))).toBe(false);
    expect(trustedControlSocket(join(dir, 'absent', 's.sock'))).toBe(false);
    const forged = createServer().listen(join(ok, 's.sock'));
    await new Promise((r) => forged.once('listening', r));
    try {
      expect(trustedControlSocket(join(ok, 's.sock'))).toBe(true);
      chownSync(join(ok, 's.sock'), 65534, 65534);
      expect(() => trustedControlSocket(join(ok, 's.sock'))).toThrow(/s\.sock is owned by uid 65534, not root: refused/);
    } finally {
      forged.close();
    }
  });
});
