import { openSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import pino from 'pino';
import { hostAgent } from '../agent.js';
import { CONTROL_SOCKET_PATH, encodeControlRequest, REQUEST_TAIL, TailEventReader, type TailEventFields } from '../output/tail-protocol.js';
import { trustedControlSocket } from '../output/control-path.js';
import { containerFilter } from '../enrich/container-filter.js';
import type { ContainerOptions } from './container-options.js';
import { formatTailLine, toTailEvent, toTailRecord } from '../output/tail-record.js';
import { preflight } from './preflight.js';
import { Selection, type SelectionOptions } from '../enrich/selection.js';
import { parseSip } from '../protocols/sip.js';
import { PcapngWriter } from '../output/pcapng.js';
import { colourWanted, FlowLadder } from '../output/flow-ladder.js';

export interface TailOptions extends Partial<ContainerOptions>, SelectionOptions {
  json?: boolean;
  full?: boolean;
  sessionId?: string;
  sipPorts?: number[];
  redact?: boolean;
  /** Also write the messages as pcapng to this file; '-': to stdout instead of the lines. */
  pcap?: string;
  /** Draw the messages as a ladder (one column per endpoint) instead of one line each. */
  flow?: boolean;
}

/**
 * The filters of `run` (src/enrich/selection.ts, containers), applied to the events tail receives,
 * in the order it receives them; and `--session-id` for Diameter.
 */
export function tailFilter(opts: TailOptions): (ev: TailEventFields) => boolean {
  const containers = containerFilter(opts);
  const selection = new Selection(opts);
  return (ev) => {
    if (containers !== undefined && !containers(ev.container, ev.peerContainer)) return false;
    if (opts.sessionId !== undefined && ev.sessionId !== opts.sessionId) return false;
    if (!selection.active) return true;
    const payload = Buffer.from(ev.payload.buffer, ev.payload.byteOffset, ev.payload.byteLength);
    const sip = ev.proto === 'sip' ? parseSip(payload) ?? undefined : undefined;
    return selection.select({ src: ev.src, dst: ev.dst, payload, sip, correlationId: ev.correlationId, nowMs: Date.now() });
  };
}

/**
 * Resolves with a connected socket to a running agent, or undefined when none is running; throws
 * when something not owned by root sits where the agent's socket should be.
 */
function attachToAgent(): Promise<import('node:net').Socket | undefined> {
  if (!trustedControlSocket(CONTROL_SOCKET_PATH)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const sock = connect(CONTROL_SOCKET_PATH);
    sock.once('connect', () => resolve(sock));
    sock.once('error', () => resolve(undefined));
  });
}

/**
 * Writes each event as pcapng to `path` ('-': stdout). Writes are synchronous (files, and pipes on
 * Linux), so what was shown is in the file when tail stops.
 */
function pcapOutput(path: string): (ev: TailEventFields) => void {
  const writer = new PcapngWriter();
  const fd = path === '-' ? undefined : openSync(path, 'w');
  const write = (b: Buffer) => (fd === undefined ? process.stdout.write(b) : writeSync(fd, b));
  write(writer.header());
  return (ev) => write(writer.packets(ev));
}

export async function tailCommand(opts: TailOptions): Promise<void> {
  const keep = tailFilter(opts);
  const out = process.stdout;
  const pcap = opts.pcap === undefined ? undefined : pcapOutput(opts.pcap);
  const ladder = opts.flow ? new FlowLadder(colourWanted(!!out.isTTY)) : undefined;
  const print = (ev: TailEventFields) => {
    if (!keep(ev)) return;
    if (pcap) pcap(ev);
    if (opts.pcap === '-') return;
    if (ladder) out.write(ladder.lines(ev).join('\n') + '\n');
    else out.write((opts.json ? JSON.stringify(toTailRecord(ev, !!opts.full)) : formatTailLine(ev)) + '\n');
  };
  // Reading stopped (e.g. `| head`): exit quietly instead of throwing EPIPE.
  out.on('error', () => process.exit(0));

  const sock = await attachToAgent();
  if (sock) {
    sock.write(encodeControlRequest(REQUEST_TAIL));
    const reader = new TailEventReader();
    sock.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk, print);
      } catch (err) {
        process.stderr.write(`hepbpf tail: ${CONTROL_SOCKET_PATH}: ${(err as Error).message}\n`);
        process.exit(1);
      }
    });
    sock.on('close', () => {
      process.stderr.write('hepbpf tail: the agent stopped\n');
      process.exit(0);
    });
    process.stderr.write(`hepbpf tail: ready, attached to the running agent (${CONTROL_SOCKET_PATH})\n`);
    return;
  }

  preflight();
  const log = pino({ level: 'warn', base: { name: 'hepbpf' } }, pino.destination({ fd: 2, sync: true }));
  const agent = hostAgent(opts, log, (ev) => print(toTailEvent(ev)));
  await agent.start();
  process.stderr.write('hepbpf tail: ready, capturing SIP and Diameter on this host (Ctrl-C to stop)\n');
  const stop = async () => {
    await agent.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}
