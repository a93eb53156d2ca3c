import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/**
 * One metric read from the stats tree (what the `stats` log line prints) at scrape time. `path` is
 * dot-separated; a `{label}` segment stands for every key at that level, whose name becomes the
 * label's value; `{label:a|b}` for only those keys.
 */
interface StatMetric {
  name: string;
  type: 'counter' | 'gauge';
  path: string;
  help: string;
}

const counter = (name: string, path: string, help: string): StatMetric => ({ name, type: 'counter', path, help });
const gauge = (name: string, path: string, help: string): StatMetric => ({ name, type: 'gauge', path, help });

/** Every number of the stats line, once: a new counter there needs one line here (the unit test finds any left out). */
const STAT_METRICS: StatMetric[] = [
  counter('hepbpf_kernel_records_total', 'capture.kernel.emitted', 'records the kernel wrote to the ring buffer'),
  counter('hepbpf_kernel_lost_total', 'capture.kernel.{cause:ringbufFull|readFault|inflightFull}', 'records the kernel could not deliver, by cause'),
  counter('hepbpf_shed_records_total', 'capture.shed.{cause}', 'records dropped before decoding, the pipeline being overloaded (lag: batches back to back for over 1 s), by cause'),
  counter('hepbpf_kernel_truncated_total', 'capture.kernel.truncated', 'syscalls cut at 64 KiB'),
  counter('hepbpf_kernel_receiver_copies_total', 'capture.kernel.{copy:receiverCopyReduced|receiverCopyWhole}', "receiver's copies of local UDP datagrams, header only (reduced) or whole"),
  counter('hepbpf_kernel_tcp_receiver_reads_total', 'capture.kernel.{copy:tcpReadReduced|tcpReadWhole}', "reads of local TCP connections whose sender's bytes are kept: header only (reduced), or whole (read before they were written, or not all were)"),
  counter('hepbpf_messages_total', 'capture.messages.{proto}.{transport}', 'messages forwarded, by protocol and transport'),
  counter('hepbpf_forwarded_total', 'capture.forwarded', 'messages forwarded, all protocols'),
  counter('hepbpf_forwarded_truncated_total', 'capture.forwardedTruncated', 'messages forwarded cut (over 64 KiB)'),
  counter('hepbpf_connection_events_total', 'capture.connectionEvents.events', 'connection events sent (--connection-events)'),
  counter('hepbpf_connection_events_uncorrelated_total', 'capture.connectionEvents.{cause:waitedOut|waitingFull}', 'connection events sent with the flow id instead of a call\'s, by cause'),
  counter('hepbpf_messages_dropped_total', 'capture.{cause:notSip|notDiameter}', 'framed messages that did not parse, by cause'),
  counter('hepbpf_failures_total', 'capture.failures.{cause}', 'inputs dropped because processing them threw, by pipeline stage'),
  counter('hepbpf_duplicates_total', 'capture.duplicates', "second copies of local messages (the receiver's), not forwarded"),
  counter('hepbpf_keepalives_total', 'capture.keepAlives', 'SIP keep-alives (CRLF) seen, not forwarded'),
  counter('hepbpf_dedup_evicted_early_total', 'capture.dedupEvictedEarly', 'messages the dedup forgot before their 2 s window ended, its table being full (32768)'),
  counter('hepbpf_unpaired_receiver_copies_total', 'capture.unpairedReceiverCopies', "header-only receiver's copies whose sender's copy was gone"),
  counter('hepbpf_diameter_malformed_total', 'capture.diameterMalformed', 'Diameter messages forwarded with AVPs that did not all decode'),
  counter('hepbpf_redacted_total', 'capture.redacted', 'messages with secrets masked'),
  counter('hepbpf_sip_stream_messages_total', 'capture.streams.messages', 'SIP messages framed'),
  counter('hepbpf_sip_stream_discarded_bytes_total', 'capture.streams.discardedBytes', 'bytes of SIP streams skipped as garbage'),
  counter('hepbpf_sip_stream_truncated_total', 'capture.streams.truncatedMessages', 'SIP messages framed cut'),
  counter('hepbpf_diameter_stream_messages_total', 'capture.streams.diameter.messages', 'Diameter messages framed'),
  counter('hepbpf_diameter_stream_discarded_bytes_total', 'capture.streams.diameter.discardedBytes', 'bytes of Diameter streams skipped as garbage'),
  counter('hepbpf_diameter_stream_truncated_total', 'capture.streams.diameter.truncatedMessages', 'Diameter messages framed cut'),
  counter('hepbpf_diameter_stream_malformed_total', 'capture.streams.diameter.malformed', 'Diameter byte runs that cannot be a message'),
  gauge('hepbpf_streams', 'capture.streams.streams', 'TCP streams followed now'),
  counter('hepbpf_websocket_handshakes_total', 'capture.streams.websocket.{result:handshakes|rejectedHandshakes}', 'SIP over WebSocket opening handshakes read, accepted or rejected'),
  counter('hepbpf_websocket_resyncs_total', 'capture.streams.websocket.resyncs', 'SIP over WebSocket frame streams given up on and resumed at a later SIP frame'),
  counter('hepbpf_websocket_control_frames_total', 'capture.streams.websocket.controlFrames', 'WebSocket ping, pong and close frames'),
  counter('hepbpf_websocket_not_sip_total', 'capture.streams.websocket.notSip', 'WebSocket data messages that were not SIP'),
  counter('hepbpf_streams_expired_total', 'capture.streams.expiredStreams', 'TCP streams forgotten: idle, their framing failed, or a new connection took their socket'),
  counter('hepbpf_streams_evicted_for_memory_total', 'capture.streams.evictedForMemory', 'TCP streams forgotten with their partial messages, all partial messages together holding over 32 MiB'),
  gauge('hepbpf_stream_buffer_bytes', 'capture.streams.streamBufferBytes', 'bytes held for partial messages'),
  gauge('hepbpf_local_tcp_flows', 'capture.streams.localTcp.flows', "local TCP flows whose sender's bytes are kept for the receiver"),
  gauge('hepbpf_local_tcp_kept_bytes', 'capture.streams.localTcp.bytes', "bytes of local TCP senders kept until their receiver reads past them"),
  gauge('hepbpf_local_tcp_buffer_bytes', 'capture.streams.localTcp.allocatedBytes', "bytes of the local TCP flows' buffers that hold them (at most 8 MiB)"),
  gauge('hepbpf_local_tcp_listed_messages', 'capture.streams.localTcp.listed', "messages of local TCP senders listed until their receiver reads past them (at most 32768)"),
  counter('hepbpf_local_tcp_reads_paired_total', 'capture.streams.localTcp.pairedReads', "header-only reads of local TCP receivers paired with the sender's messages by sequence number, not framed again"),
  counter('hepbpf_local_tcp_reads_missing_total', 'capture.streams.localTcp.missing', "header-only reads of local TCP receivers whose bytes were not kept (shed, or dropped for memory): the receiver's stream restarts"),
  counter('hepbpf_local_tcp_evicted_for_memory_total', 'capture.streams.localTcp.evictedForMemory', 'local TCP flows dropped with their kept bytes, their buffers all together over 8 MiB'),
  counter('hepbpf_tls_files_checked_total', 'capture.tls.filesChecked', 'files checked for TLS library symbols'),
  counter('hepbpf_tls_files_attached_total', 'capture.tls.attached', 'TLS library files probed'),
  counter('hepbpf_tls_files_not_attached_total', 'capture.tls.{cause:failed|refused}', 'TLS library files not probed, by cause'),
  counter('hepbpf_tls_attributed_late_total', 'capture.tls.attributedLate', 'TLS plaintext records tied to their connection after a wait'),
  counter('hepbpf_tls_unattributed_total', 'capture.tls.unattributed', 'TLS plaintext records whose connection was never learnt'),
  counter('hepbpf_correlation_ids_cut_total', 'capture.correlation.idsCut', 'correlation ids cut to 1024 bytes'),
  counter('hepbpf_correlation_keyed_total', 'capture.correlation.keyed', "SIP messages that carried the operator's correlation key (--correlation-header, --correlation-regex)"),
  counter('hepbpf_correlation_keys_evicted_total', 'capture.correlation.keysEvicted', "Call-IDs whose operator's key was forgotten early, the table being full"),
  gauge('hepbpf_correlation_entries', 'capture.correlation.{table:icids|registering|sessions|pendingRequests|keys}', 'entries of the correlation tables'),
  counter('hepbpf_filtered_total', 'capture.selection.filtered.{by:selection|container}', 'messages (and connection events) left out on purpose, by --method/--user/--call-id/--address/--port filters or by container filters; not lost'),
  gauge('hepbpf_selection_entries', 'capture.selection.entries', 'transactions or dialogs remembered for --selection-mode transaction or dialog'),
  counter('hepbpf_selection_evicted_total', 'capture.selection.evicted', 'remembered transactions or dialogs forgotten early, the table being full (--selection-max-entries)'),
  counter('hepbpf_container_held_total', 'capture.containers.held', 'messages held for container names'),
  gauge('hepbpf_container_hold_messages', 'capture.containers.holding', 'messages in the hold now'),
  counter('hepbpf_container_unnamed_total', 'capture.containers.unnamed', 'messages that left the hold without a container name'),
  counter('hepbpf_container_counterpart_missed_total', 'capture.containers.counterpartMissed', "messages that left the hold without the other end's copy"),
  counter('hepbpf_container_hold_overflow_total', 'capture.containers.overflow', 'messages that left the hold early, the hold being full'),
  counter('hepbpf_container_peer_named_total', 'capture.containers.{from:peerFromTable|peerFromCounterpart}', 'other ends named, by where from'),
  counter('hepbpf_container_lookups_total', 'capture.containers.lookups', 'container lookups'),
  counter('hepbpf_container_metadata_errors_total', 'capture.containers.metadataErrors', 'container runtime API lookups that failed'),
  counter('hepbpf_containers_forgotten_total', 'capture.containers.forgotten', 'containers forgotten once their cgroup was removed'),
  gauge('hepbpf_container_cache_entries', 'capture.containers.{cache:localEndpoints|remoteEndpoints|cgroups|paths|containers}', 'entries of the container caches'),
  counter('hepbpf_hep_cut_to_fit_total', 'hep.cutToFit', 'messages cut to fit a HEP packet'),
  counter('hepbpf_hep_node_names_cut_total', 'hep.nodeNamesCut', 'node names cut to 1024 bytes'),
  counter('hepbpf_hep_sent_total', 'hep.collectors.{collector}.sent', 'HEP packets handed to the kernel, per collector'),
  counter('hepbpf_hep_dropped_total', 'hep.collectors.{collector}.dropped', 'HEP packets given up on (queue full, unsendable), per collector'),
  counter('hepbpf_hep_errors_total', 'hep.collectors.{collector}.errors', 'HEP socket errors (failed datagrams, connection errors), per collector'),
  gauge('hepbpf_hep_queue_packets', 'hep.collectors.{collector}.queued', 'HEP packets waiting to be written, per collector'),
  gauge('hepbpf_hep_queue_bytes', 'hep.collectors.{collector}.queuedBytes', 'bytes of HEP packets waiting to be written, per collector'),
  gauge('hepbpf_collector_up', 'hep.collectors.{collector}.up', '1 when the collector is reachable (TCP/TLS connected; UDP: the last send was not refused)'),
  counter('hepbpf_hep_resent_total', 'hep.collectors.{collector}.resent', 'HEP packets written again because the collector had not acknowledged them when its connection ended'),
  counter('hepbpf_hep_failovers_total', 'hep.collectors.{collector}.failovers', 'switches to another collector of a failover group'),
  gauge('hepbpf_spool_bytes', 'hep.collectors.{collector}.spool.bytes', 'bytes waiting in the on-disk spool'),
  gauge('hepbpf_spool_records', 'hep.collectors.{collector}.spool.records', 'HEP packets waiting in the on-disk spool'),
  counter('hepbpf_spool_records_total', 'hep.collectors.{collector}.spool.{op:spooled|replayed}', 'HEP packets appended to the spool and read back from it'),
  counter('hepbpf_spool_lost_total', 'hep.collectors.{collector}.spool.{cause:droppedOldest|torn|writeFailed|droppedDiskSlow}', 'HEP packets the spool lost, by cause'),
  gauge('hepbpf_tail_clients', 'control.tailClients', 'tail clients attached to the control socket'),
  counter('hepbpf_control_clients_closed_total', 'control.{cause:refusedClients|badRequests|idleClosed|slowTailClients}', 'control socket clients closed, by cause'),
  counter('hepbpf_tail_bytes_dropped_total', 'control.tailBytesDropped', 'tail bytes not sent to clients that stopped reading'),
];

type Labels = Record<string, string>;

/** Each number at `path` in `tree`, with the labels its wildcard segments bound. */
function* readPath(tree: unknown, segments: string[], labels: Labels = {}, at: string[] = []): Generator<{ value: number; labels: Labels; at: string }> {
  if (segments.length === 0) {
    if (typeof tree === 'number' && Number.isFinite(tree)) yield { value: tree, labels, at: at.join('.') };
    return;
  }
  if (typeof tree !== 'object' || tree === null) return;
  const [head, ...rest] = segments;
  const wildcard = /^\{(\w+)(?::([\w|]+))?\}$/.exec(head);
  if (!wildcard) {
    yield* readPath((tree as Record<string, unknown>)[head], rest, labels, [...at, head]);
    return;
  }
  const keys = wildcard[2]?.split('|') ?? Object.keys(tree);
  for (const key of keys) yield* readPath((tree as Record<string, unknown>)[key], rest, { ...labels, [wildcard[1]]: key }, [...at, key]);
}

/** Numbers in the stats tree that no metric reads: a new counter someone forgot to expose. */
export function uncoveredStats(tree: object): string[] {
  const covered = new Set(STAT_METRICS.flatMap((m) => [...readPath(tree, m.path.split('.'))].map((r) => r.at)));
  const leaves: string[] = [];
  const walk = (node: unknown, at: string[]) => {
    if (typeof node === 'number') leaves.push(at.join('.'));
    else if (typeof node === 'object' && node !== null) for (const [k, v] of Object.entries(node)) walk(v, [...at, k]);
  };
  walk(tree, []);
  return leaves.filter((l) => !covered.has(l));
}

export interface ContainerCount {
  name: string;
  messages: number;
}

/** Per-container series kept at most: the busiest, the rest summed as "other". */
export const TOP_CONTAINERS = 20;

export interface MetricsSource {
  stats(): object;
  /** Messages per container seen (sent or received), for the per-container series. */
  containers(): ContainerCount[];
  /** Why the agent is not ready (probes not attached, no collector reachable), or undefined when it is. */
  notReady(): string | undefined;
}

/** Prometheus registry over the agent's stats: every value is read when scraped, nothing is counted per message. */
export function metricsRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // One stats tree per scrape, shared by every metric of that scrape.
  let scrape: { tree: object; atMs: number } | undefined;
  const tree = () => {
    const now = Date.now();
    if (!scrape || now - scrape.atMs > 100) scrape = { tree: source.stats(), atMs: now };
    return scrape.tree;
  };
  for (const m of STAT_METRICS) {
    const segments = m.path.split('.');
    const labelNames = segments.flatMap((s) => /^\{(\w+)/.exec(s)?.[1] ?? []);
    if (m.type === 'counter')
      new Counter({
        name: m.name, help: m.help, labelNames, registers: [registry],
        collect() {
          this.reset();
          for (const r of readPath(tree(), segments)) this.inc(r.labels, r.value);
        },
      });
    else
      new Gauge({
        name: m.name, help: m.help, labelNames, registers: [registry],
        collect() {
          this.reset();
          for (const r of readPath(tree(), segments)) this.set(r.labels, r.value);
        },
      });
  }
  new Gauge({
    name: 'hepbpf_container_messages',
    help: `messages sent or received by the ${TOP_CONTAINERS} busiest containers seen, the rest as container="other" (a container leaves once forgotten)`,
    labelNames: ['container'],
    registers: [registry],
    collect() {
      this.reset();
      const all = source.containers().sort((a, b) => b.messages - a.messages);
      for (const c of all.slice(0, TOP_CONTAINERS)) this.inc({ container: c.name }, c.messages);
      for (const c of all.slice(TOP_CONTAINERS)) this.inc({ container: 'other' }, c.messages);
    },
  });
  return registry;
}

/** `HOST:PORT` or `[IPv6]:PORT` -> where to listen; a clear error naming the option otherwise. */
export function parseListenAddress(addr: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(addr);
  const host = m?.[1].replace(/^\[|\]$/g, '');
  const port = Number(m?.[2]);
  if (!m || !isIP(host!) || port > 65535) throw new Error(`--metrics-listen "${addr}": expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464`);
  return { host: host!, port };
}

/** `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (ready to capture and forward) over HTTP. */
export class MetricsServer {
  private readonly registry: Registry;
  private readonly server: Server;

  constructor(private readonly source: MetricsSource) {
    this.registry = metricsRegistry(source);
    // A scrape that fails (a stats source throwing) answers 500; it never takes the agent down.
    this.server = createServer((req, res) => this.handle(req, res).catch((err: Error) => this.reply(res, 500, `metrics failed: ${err.message}\n`)));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url?.split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.reply(res, 405, 'method not allowed\n');
    if (path === '/metrics') return this.reply(res, 200, await this.registry.metrics(), this.registry.contentType);
    if (path === '/healthz') return this.reply(res, 200, 'ok\n');
    if (path === '/readyz') {
      const why = this.source.notReady();
      return why === undefined ? this.reply(res, 200, 'ready\n') : this.reply(res, 503, `not ready: ${why}\n`);
    }
    this.reply(res, 404, 'not found: /metrics, /healthz, /readyz\n');
  }

  private reply(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Resolves with the address bound (port 0 picks one), or rejects with the reason (address in use...). */
  listen(addr: string): Promise<string> {
    const { host, port } = parseListenAddress(addr);
    return new Promise((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`--metrics-listen ${addr}: ${err.code ?? err.message}`)));
      this.server.listen(port, host, () => {
        const a = this.server.address() as { address: string; port: number };
        resolve(`${isIP(a.address) === 6 ? `[${a.address}]` : a.address}:${a.port}`);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
