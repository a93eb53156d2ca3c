/**
 * One hostile message must not take the real agent down: Diameter requests whose Session-Id would
 * make a correlation id larger than a HEP packet, sent over TCP from this process to a python3
 * server, then a normal request. Each is forwarded once, the hostile ones with a cut id, and counted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeHep } from '../../src/hep/decode.js';
import { kernelSuiteSkipReason, startAgent, type RunningAgent } from '../helpers/agent.js';
import { freePort, tcpCollector, type HepCollector } from '../helpers/collector.js';
import { cer } from '../helpers/diameter-peer.js';
import { diameterMessage } from '../helpers/diameter.js';
import { sleep, until } from '../helpers/wait.js';

const why = kernelSuiteSkipReason('end-to-end hostile-message tests');

/** A Diameter server in another process that reads and discards everything. */
function sinkServer(port: number): Promise<ChildProcess> {
  const py = [
    'import socket, threading',
    's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
    `s.bind(("127.0.0.1", ${port})); s.listen(8)`,
    'print("listening", flush=True)',
    'def drain(c):',
    '    while c.recv(65536): pass',
    'while True:',
    '    c, _ = s.accept()',
    '    threading.Thread(target=drain, args=(c,), daemon=True).start()',
  ].join('\n');
  const proc = spawn('python3', ['-c', py], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    proc.stdout!.once('data', () => resolve(proc));
    proc.once('exit', (code) => reject(new Error(`python3 server exited with ${code}`)));
  });
}

const ccr = (sessionId: Buffer | string, hbh: number) =>
  diameterMessage({
    request: true,
    proxiable: true,
    command: 272,
    app: 4,
    hopByHop: hbh,
    endToEnd: hbh,
    avps: [{ code: 263, value: sessionId }, { code: 264, value: 'client.test' }, { code: 296, value: 'test' }, { code: 416, value: 1 }],
  });

describe.skipIf(!!why)('hostile messages on the real agent', () => {
  let agent: RunningAgent;
  let hep: HepCollector;

  beforeAll(async () => {
    hep = await tcpCollector();
    agent = await startAgent(['run', '--hep', hep.url, '--diameter-payload', 'raw']);
  });

  afterAll(async () => {
    if (agent?.proc.exitCode === null) await agent.stop();
    await hep?.close();
  });

  it('a Session-Id of 22,000 bytes 0xff and one of 65,480 ASCII bytes: forwarded with a correlation id cut to 1024 bytes, counted, the next message goes through', async () => {
    const port = await freePort();
    const server = await sinkServer(port);
    const sent = [
      cer('client.test', 0x100),
      ccr(Buffer.alloc(22_000, 0xff), 0x101),
      ccr('a'.repeat(65_480), 0x102),
      ccr('client.test;1;after', 0x103),
    ];
    try {
      const sock = connect(port, '127.0.0.1');
      await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
      const fromClient = () => hep.packets.map((p) => decodeHep(p)).filter((p) => p.dstPort === port);
      // One at a time: the next is written once the agent forwarded this one.
      for (const [i, m] of sent.entries()) {
        await new Promise<void>((r) => sock.write(m, () => r()));
        await until(`message ${i + 1} of ${sent.length} forwarded`, () => fromClient().length > i);
      }
      sock.destroy();
      await sleep(500); // a settle: a duplicate would show up by now
      const forwarded = fromClient();
      expect(agent.proc.exitCode).toBeNull();
      expect(forwarded.map((p) => p.payload!.readUInt32BE(12))).toEqual([0x100, 0x101, 0x102, 0x103]);
      expect(forwarded[1].correlationId).toBe('\ufffd'.repeat(341)); // 1023 bytes: U+FFFD is 3
      expect(forwarded[2].correlationId).toBe('a'.repeat(1024));
      expect(forwarded[3].correlationId).toBe('client.test;1;after');
      // Whole where it fits: the 22 KB one exactly, the 65.5 KB one cut to fit the 16-bit HEP length.
      expect(forwarded[1].payload!.equals(sent[1])).toBe(true);
      expect(forwarded[3].payload!.equals(sent[3])).toBe(true);
      expect(sent[2].subarray(0, forwarded[2].payload!.length).equals(forwarded[2].payload!)).toBe(true);
    } finally {
      server.kill();
    }
    const { code, final } = await agent.stop();
    expect(code).toBe(0);
    const capture = final!.capture as { correlation: { idsCut: number }; failures: Record<string, number> };
    expect(capture.correlation.idsCut).toBe(2);
    expect(capture.failures).toEqual({});
    expect((final!.hep as { cutToFit: number }).cutToFit).toBe(1);
  }, 60_000);
});
