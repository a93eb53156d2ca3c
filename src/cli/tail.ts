import pino from 'pino';
import { Agent, type SipEvent } from '../agent.js';
import { formatTailLine, toTailRecord } from '../output/tail-record.js';
import { preflight } from './preflight.js';

export interface TailOptions {
  json?: boolean;
  full?: boolean;
  callId?: string;
  method?: string;
  port?: number;
  sipPorts?: number[];
}

/** Filters as the operator means them: a method selects its requests and the responses to them (by CSeq method). */
export function tailFilter(opts: TailOptions): (ev: SipEvent) => boolean {
  const method = opts.method?.toUpperCase();
  return (ev) =>
    (opts.callId === undefined || ev.sip.callId === opts.callId) &&
    (method === undefined || ev.sip.cseqMethod === method) &&
    (opts.port === undefined || ev.message.src.port === opts.port || ev.message.dst.port === opts.port);
}

export async function tailCommand(opts: TailOptions): Promise<void> {
  preflight();
  const log = pino({ level: 'warn', base: { name: 'hepbpf' } }, pino.destination({ fd: 2, sync: true }));
  const keep = tailFilter(opts);
  const out = process.stdout;
  const agent = new Agent({
    sipPorts: opts.sipPorts,
    log,
    sink: (ev) => {
      if (!keep(ev)) return;
      const rec = toTailRecord(ev, !!opts.full);
      out.write((opts.json ? JSON.stringify(rec) : formatTailLine(rec)) + '\n');
    },
  });
  await agent.start();
  process.stderr.write('hepbpf tail: ready, capturing SIP on this host (Ctrl-C to stop)\n');
  const stop = async () => {
    await agent.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  // Reading stopped (e.g. `| head`): exit quietly instead of throwing EPIPE.
  out.on('error', () => void stop());
}
