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

export interface TailOptions extends Partial<ContainerOptions>, SelectionOptions {
  json?: boolean;
  full?: boolean;
  sessionId?: string;
  sipPorts?: number[];
  redact?: boolean;
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

export async function tailCommand(opts: TailOptions): Promise<void> {
  const keep = tailFilter(opts);
  const out = process.stdout;
  const print = (ev: TailEventFields) => {
    if (keep(ev)) out.write((opts.json ? JSON.stringify(toTailRecord(ev, !!opts.full)) : formatTailLine(ev)) + '\n');
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
