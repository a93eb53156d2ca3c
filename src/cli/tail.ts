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
import { PcapngWriter } from '../output/pcapng.js';
import { colourWanted, FlowLadder } from '../output/flow-ladder.js';

export interface TailOptions extends Partial<ContainerOptions> {
  json?: boolean;
  full?: boolean;
  callId?: string;
  sessionId?: string;
  method?: string;
  port?: number;
  sipPorts?: number[];
  redact?: boolean;
  /** Also write the messages as pcapng to this file; '-': to stdout instead of the lines. */
  pcap?: string;
  /** Draw the messages as a ladder (one column per endpoint) instead of one line each. */
  flow?: boolean;
}

/**
 * Filters as the operator means them: a method selects its requests and the responses to them (by
 * CSeq method); a Call-ID its SIP messages and the Diameter correlated to that call.
 */
export function tailFilter(opts: TailOptions): (ev: TailEventFields) => boolean {
  const method = opts.method?.toUpperCase();
  const containers = containerFilter(opts);
  return (ev) =>
    (containers === undefined || containers(ev.container, ev.peerContainer)) &&
    (opts.callId === undefined || ev.callId === opts.callId || (ev.proto === 'diameter' && ev.correlationId === opts.callId)) &&
    (opts.sessionId === undefined || ev.sessionId === opts.sessionId) &&
    (method === undefined || ev.cseqMethod === method) &&
    (opts.port === undefined || ev.src.port === opts.port || ev.dst.port === opts.port);
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
