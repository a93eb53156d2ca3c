import type { CaptureEvent } from '../agent.js';
import type { TailEventFields } from './tail-protocol.js';

/** The record of DESIGN.md "Record fields", as `tail --json` prints it. */
export interface TailRecord {
  ts: string;
  proto: 'sip' | 'diameter';
  transport: string;
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  pid: number;
  comm: string;
  cgroupId: string;
  container: null;
  correlationId: string;
  summary: string;
  callId?: string;
  sessionId?: string;
  size: number;
  truncated: boolean;
  payload?: string;
}

/** ISO 8601 with microseconds, UTC. */
export function isoMicros(wallUs: number): string {
  const ms = Math.floor(wallUs / 1000);
  return new Date(ms).toISOString().replace(/Z$/, String(Math.floor(wallUs % 1000)).padStart(3, '0') + 'Z');
}

/** What tail shows of one event, the same whether tail captures itself or reads a running agent. */
export function toTailEvent(ev: CaptureEvent): TailEventFields {
  const m = ev.message;
  return {
    ts: isoMicros(ev.wallUs),
    proto: m.proto,
    transport: m.transport,
    src: m.src,
    dst: m.dst,
    pid: m.pid,
    comm: m.comm,
    cgroupId: m.cgroupId.toString(),
    correlationId: ev.correlationId,
    summary: ev.summary,
    callId: ev.sip?.callId,
    sessionId: ev.diameter?.sessionId,
    cseqMethod: ev.sip?.cseqMethod,
    size: m.size,
    truncated: m.truncated,
    payload: ev.payload,
  };
}

export function toTailRecord(ev: TailEventFields, full: boolean): TailRecord {
  const { cseqMethod: _, payload, ...rest } = ev;
  const rec: TailRecord = {
    ...rest,
    proto: ev.proto as TailRecord['proto'],
    callId: ev.callId || undefined,
    sessionId: ev.sessionId || undefined,
    container: null,
  };
  if (full) rec.payload = Buffer.from(payload).toString(ev.proto === 'sip' ? 'latin1' : 'base64');
  return rec;
}

const hostPort = (a: { ip: string; port: number }) => (a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`);

/** One human line: time, src -> dst, transport, process, summary, Call-ID (Diameter: the correlation id). */
export function formatTailLine(ev: TailEventFields): string {
  return `${ev.ts.slice(11, 26)} ${hostPort(ev.src)} -> ${hostPort(ev.dst)} ${ev.transport.toUpperCase()} ${ev.comm}[${ev.pid}] ${ev.summary}${ev.truncated ? ' [truncated]' : ''} ${ev.callId || (ev.proto === 'diameter' ? ev.correlationId : '') || '-'}`;
}
