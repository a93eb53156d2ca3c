import { eventSummary, type CaptureEvent } from '../enrich/event.js';
import type { ContainerIdentity } from '../enrich/containers.js';
import type { ContainerFieldsWire, TailEventFields } from './tail-protocol.js';

/** A record's `container`: {id, name, runtime, pod?, namespace?, service?} (plus image and compose project when known). */
export type ContainerRecord = Pick<ContainerIdentity, 'id' | 'name' | 'runtime' | 'image' | 'service' | 'project' | 'pod' | 'namespace'>;

/** One message's record, as `tail --json` prints it (README "Containers" names the container fields). */
export interface TailRecord {
  ts: string;
  proto: 'sip' | 'diameter';
  transport: string;
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  pid: number;
  comm: string;
  cgroupId: string;
  container: ContainerRecord | null;
  peerContainer: ContainerRecord | null;
  correlationId: string;
  summary: string;
  callId?: string;
  sessionId?: string;
  size: number;
  truncated: boolean;
  /** Present (true) when the message's TLS connection was never found: src and dst are 0.0.0.0:0, not guessed. */
  connectionUnknown?: true;
  payload?: string;
}

/** ISO 8601 with microseconds, UTC. */
export function isoMicros(wallUs: number): string {
  const ms = Math.floor(wallUs / 1000);
  return new Date(ms).toISOString().replace(/Z$/, String(Math.floor(wallUs % 1000)).padStart(3, '0') + 'Z');
}

/** The inverse of isoMicros (any number of fraction digits): nanoseconds since the epoch; 0 for what is not such a time. */
export function epochNs(ts: string): bigint {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(ts);
  const ms = m ? Date.parse(m[1] + 'Z') : NaN;
  if (Number.isNaN(ms)) return 0n;
  return BigInt(ms / 1000) * 1_000_000_000n + BigInt((m![2] ?? '').padEnd(9, '0'));
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
    summary: eventSummary(ev),
    callId: ev.sip?.callId ?? (ev.connection ? ev.correlationId : undefined),
    sessionId: ev.diameter?.sessionId,
    cseqMethod: ev.sip?.cseqMethod,
    size: m.size,
    truncated: m.truncated,
    connectionUnknown: m.connectionUnknown,
    payload: ev.payload,
    container: ev.container,
    peerContainer: ev.peerContainer,
  };
}

/** The wire form (absent fields are '') back to the record form (absent fields left out). */
function containerRecord(c: ContainerFieldsWire | null): ContainerRecord | null {
  if (!c || !c.id) return null;
  const rec: ContainerRecord = { id: c.id, name: c.name, runtime: c.runtime as ContainerRecord['runtime'] };
  for (const k of ['image', 'service', 'project', 'pod', 'namespace'] as const) if (c[k]) rec[k] = c[k];
  return rec;
}

export function toTailRecord(ev: TailEventFields, full: boolean): TailRecord {
  const { cseqMethod: _, payload, connectionUnknown, ...rest } = ev;
  const rec: TailRecord = {
    ...rest,
    proto: ev.proto as TailRecord['proto'],
    callId: ev.callId || undefined,
    sessionId: ev.sessionId || undefined,
    ...(connectionUnknown ? { connectionUnknown: true } : {}),
    container: containerRecord(ev.container),
    peerContainer: containerRecord(ev.peerContainer),
  };
  if (full) rec.payload = Buffer.from(payload).toString(ev.proto === 'sip' ? 'latin1' : 'base64');
  return rec;
}

/**
 * What a terminal must never receive raw from captured traffic or container labels: C0 controls
 * (ESC, BEL, CR, LF...), DEL and C1 (0x80-0x9f, which some terminals take as CSI and the like).
 * Each is shown as `\xNN`, so a forged line, a window title or a cleared screen shows as text.
 * Every human formatter passes what it prints through here; `--json` needs nothing (JSON escapes them).
 */
export const escapeControl = (s: string): string =>
  s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));

export const hostPort = (a: { ip: string; port: number }) => (a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`);

/** How a line names a container: compose service or pod (namespace/pod) when there is one, else its name. */
export function containerLabel(c: ContainerFieldsWire | null): string | undefined {
  if (!c || !c.id) return undefined;
  if (c.pod) return `${c.namespace ? c.namespace + '/' : ''}${c.pod}${c.name && c.name !== c.pod ? '/' + c.name : ''}`;
  if (c.service) return `${c.project ? c.project + '/' : ''}${c.service}`;
  return c.name;
}

/**
 * One human line: time, src -> dst, transport, process (with its container, and the other end's
 * after `->` when it is on this host), summary, Call-ID (Diameter: the correlation id).
 */
export function formatTailLine(ev: TailEventFields): string {
  const own = containerLabel(ev.container);
  const peer = containerLabel(ev.peerContainer);
  const where = own || peer ? ` (${own ?? 'host'}${peer ? ' -> ' + peer : ''})` : '';
  return escapeControl(`${ev.ts.slice(11, 26)} ${hostPort(ev.src)} -> ${hostPort(ev.dst)} ${ev.transport.toUpperCase()} ${ev.comm}[${ev.pid}]${where} ${ev.summary}${ev.truncated ? ` [truncated: ${ev.payload.length} of ${ev.size} bytes]` : ''}${ev.connectionUnknown ? ' [connection unknown]' : ''} ${ev.callId || (ev.proto === 'diameter' ? ev.correlationId : '') || '-'}`);
}
