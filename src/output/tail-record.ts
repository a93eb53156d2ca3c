import type { SipEvent } from '../agent.js';

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
  size: number;
  truncated: boolean;
  payload?: string;
}

/** ISO 8601 with microseconds, UTC. */
export function isoMicros(wallUs: number): string {
  const ms = Math.floor(wallUs / 1000);
  return new Date(ms).toISOString().replace(/Z$/, String(Math.floor(wallUs % 1000)).padStart(3, '0') + 'Z');
}

export function toTailRecord(ev: SipEvent, full: boolean): TailRecord {
  const m = ev.message;
  const rec: TailRecord = {
    ts: isoMicros(ev.wallUs),
    proto: 'sip',
    transport: m.transport,
    src: m.src,
    dst: m.dst,
    pid: m.pid,
    comm: m.comm,
    cgroupId: m.cgroupId.toString(),
    container: null,
    correlationId: ev.correlationId,
    summary: ev.sip.summary,
    callId: ev.sip.callId,
    size: m.size,
    truncated: m.truncated,
  };
  if (full) rec.payload = m.payload.toString('latin1');
  return rec;
}

const hostPort = (a: { ip: string; port: number }) => (a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`);

/** One human line: time, src -> dst, transport, summary, Call-ID. */
export function formatTailLine(rec: TailRecord): string {
  return `${rec.ts.slice(11, 26)} ${hostPort(rec.src)} -> ${hostPort(rec.dst)} ${rec.transport.toUpperCase()} ${rec.comm}[${rec.pid}] ${rec.summary}${rec.truncated ? ' [truncated]' : ''} ${rec.callId ?? '-'}`;
}
