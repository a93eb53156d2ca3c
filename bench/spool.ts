/**
 * `npm run bench -- --only=spool`: what the spool costs the hot path. A TCP sender whose collector
 * is down keeps 40,000 HEP packets of 900 bytes, given 1000 per event-loop turn (as the agent
 * hands over one ring-buffer batch): in memory (no spool), or on disk (--spool-dir). Reported:
 * ns per send() and the event loop's delay while the disk writer works, as a ratio to the memory
 * queue of the same run. No kernel, no root.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { TcpHepSender } from '../src/output/hep-sender-tcp.js';
import { Spool } from '../src/output/spool.js';
import { parseHepTarget } from '../src/output/target.js';
import type { Report } from './pipeline.js';
import { median } from './median.js';

/** Within the sender's 16 MiB memory queue (900 B each), so that the memory pass keeps them all as the spool does. */
const PACKETS = 16_000;
const PER_TURN = 1000;
const PASSES = 3;

/** A port nothing listens on: the collector is down. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function pass(spooled: boolean, under: string): Promise<{ nsPerSend: number; delayMaxMs: number; delayP99Ms: number }> {
  const dir = mkdtempSync(join(under, 'spool-'));
  const spool = spooled ? new Spool(dir, 1 << 30) : undefined;
  const sender = new TcpHepSender(parseHepTarget(`tcp://127.0.0.1:${await closedPort()}`), pino({ level: 'silent' }), { spool });
  while (sender.stats().errors === 0) await new Promise((r) => setTimeout(r, 5)); // refused: down
  const packet = Buffer.alloc(900, 0x78);
  packet.write('HEP3', 0, 'latin1');
  packet.writeUInt16BE(900, 4);
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let ns = 0n;
  for (let sent = 0; sent < PACKETS; sent += PER_TURN) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < PER_TURN; i++) sender.send(packet);
    ns += process.hrtime.bigint() - t0;
    await new Promise((r) => setImmediate(r));
  }
  // Until the disk writer is done: its work is part of what the event loop pays.
  while (spool && spool.stats().records < PACKETS) await new Promise((r) => setImmediate(r));
  await spool?.close();
  delay.disable();
  const s = sender.stats();
  if ((spool ? s.spool!.records : s.queued) !== PACKETS) throw new Error(`bench spool: ${JSON.stringify(s)}`);
  await sender.close();
  rmSync(dir, { recursive: true, force: true });
  return { nsPerSend: Number(ns) / PACKETS, delayMaxMs: delay.max / 1e6, delayP99Ms: delay.percentile(99) / 1e6 };
}

/** `under`: the bench's own temporary directory, removed by the bench however it ends. */
export async function spoolBench(out: Report, under: string): Promise<Record<string, unknown>> {
  out.say(`\n(spool) collector down: ${PACKETS} HEP packets of 900 B, ${PER_TURN} per event-loop turn, kept in memory or spooled to disk (median of ${PASSES} passes)`);
  const figures: Record<string, { nsPerSend: number; delayMaxMs: number; delayP99Ms: number }> = {};
  for (const mode of ['memory', 'spool'] as const) {
    const runs = [];
    for (let i = 0; i < PASSES; i++) runs.push(await pass(mode === 'spool', under));
    figures[mode] = { nsPerSend: median(runs.map((r) => r.nsPerSend)), delayMaxMs: median(runs.map((r) => r.delayMaxMs)), delayP99Ms: median(runs.map((r) => r.delayP99Ms)) };
  }
  const { memory, spool } = figures;
  out.table([
    ['queue', 'ns per send()', 'event-loop delay p99', 'max'],
    ...(['memory', 'spool'] as const).map((m) => [m, figures[m].nsPerSend.toFixed(0), `${figures[m].delayP99Ms.toFixed(1)} ms`, `${figures[m].delayMaxMs.toFixed(1)} ms`]),
    ['spool / memory', `${(spool.nsPerSend / memory.nsPerSend).toFixed(2)}x`, `${(spool.delayP99Ms / memory.delayP99Ms).toFixed(2)}x`, `${(spool.delayMaxMs / memory.delayMaxMs).toFixed(2)}x`],
  ]);
  return figures;
}
