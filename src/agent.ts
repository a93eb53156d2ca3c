import type { Logger } from 'pino';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SocketCapture } from './capture/socket-capture.js';
import { ReplaySource, syntheticSipBatches } from './capture/replay.js';
import { CaptureRecord, decodeBatch, F_TLS, SRC_EXEC, SRC_TCP_CONNECT, SRC_TLS_CONN, SRC_TLS_HANDSHAKE_FAILED, type RecordSource } from './capture/record.js';
import { TlsAttribution } from './capture/tls-attribution.js';
import { MonotonicClock } from './capture/clock.js';
import { MAX_BUSY_MS, Shedder } from './capture/shed.js';
import { StreamAssembler } from './stream/assembler.js';
import { LocalDedup } from './stream/dedup.js';
import { TRANSPORTS, transportIndex, type Message, type ReceiverCopy, type Transport } from './stream/message.js';
import { parseSip } from './protocols/sip.js';
import { parseDiameter } from './protocols/diameter.js';
import { Correlator, type OperatorKey } from './enrich/correlation.js';
import { ConnectionEvents } from './enrich/connection-events.js';
import { redactDiameter, redactSip } from './enrich/redact.js';
import { Attribution, type AttributionOptions } from './enrich/attribution.js';
import { ContainerResolver, containerSources, type ContainerSourceOptions } from './enrich/containers.js';
import type { CaptureEvent } from './enrich/event.js';
import { CgroupIndex } from './enrich/cgroups.js';
import { KubernetesPods } from './enrich/kubernetes.js';
import { containerFilter, type ContainerFilterOptions } from './enrich/container-filter.js';
import { Selection, type SelectionOptions } from './enrich/selection.js';
import type { HepAgentFields } from './hep/encode.js';
import { createSenders, HepForwarder, type ForwardOptions } from './output/hep-forwarder.js';
import type { HepSender } from './output/hep-sender.js';
import type { SpoolOptions } from './output/spool.js';
import { MAX_UDP_PACKET } from './hep/chunks.js';
import type { HepTarget } from './output/target.js';
import { ControlServer } from './output/control-server.js';
import { releaseMemory } from './bpf/libbpf.js';
import { MetricsServer } from './output/metrics.js';
import { Failures } from './failures.js';

export interface AgentOptions {
  /** Where records come from: SocketCapture on this host's kernel, or a ReplaySource of recorded records. */
  source: RecordSource;
  /** Mask authentication secrets (default true). */
  redact?: boolean;
  /** Send connection events (src/enrich/connection-events.ts; default false). */
  connectionEvents?: boolean;
  /** The operator's own correlation key (--correlation-header, --correlation-regex). */
  correlation?: OperatorKey;
  /** Where contained failures are reported. */
  log: Logger;
  /** Names the containers of both ends; events reach the sink after it (held a bounded time when a name is not known yet). */
  containers: ContainerResolver;
  hold?: AttributionOptions;
  /** Shed data records after this long of batches back to back (src/capture/shed.ts); none without it (recorded records). */
  maxBusyMs?: number;
  /** Which messages go on to the sink (src/enrich/selection.ts); all when absent. */
  selection?: Selection;
  sink: (event: CaptureEvent) => void;
}

/** Counts indexed by transportIndex, by transport name. */
const byTransport = (counts: number[]) => Object.fromEntries(TRANSPORTS.map((t) => [t, counts[transportIndex(t)]])) as Record<Transport, number>;

/** Capture time in ms, for selection's timeouts. */
const nowMs = (m: Message) => Number(m.tsNs / 1_000_000n);

/** The pipeline: record source -> records -> streams -> SIP/Diameter messages -> dedup -> correlation, selection, redaction -> containers -> sink. */
export class Agent {
  private readonly capture: RecordSource;
  private readonly clock = new MonotonicClock();
  private readonly dedup = new LocalDedup();
  private readonly assembler: StreamAssembler;
  private readonly tls: TlsAttribution;
  private tlsTimer?: NodeJS.Timeout;
  private readonly correlator: Correlator;
  private readonly selection: Selection;
  private readonly connections: ConnectionEvents;
  private readonly redact: boolean;
  private readonly attribution: Attribution;
  private readonly failures: Failures;
  private readonly shedder?: Shedder;
  private notSip = 0;
  private notDiameter = 0;
  private diameterMalformed = 0;
  private redacted = 0;
  /** Forwarded messages that are a prefix of what was on the wire (longer than a stream holds, or cut by the kernel). */
  private forwardedTruncated = 0;
  private duplicates = 0;
  /** Keep-alives (RFC 5626 CR/LF), each counted once even when both ends are on this host. */
  private keepAlives = 0;
  private forwarded = 0;
  /** Forwarded SIP and Diameter messages by transportIndex (the metrics' hepbpf_messages_total). */
  private readonly sipMessages = [0, 0, 0, 0, 0, 0];
  private readonly diameterMessages = [0, 0, 0, 0, 0, 0];
  /** One record decoded in place for every batch. */
  private readonly record = new CaptureRecord();

  constructor(private readonly opts: AgentOptions) {
    this.redact = opts.redact ?? true;
    this.correlator = new Correlator(opts.correlation);
    this.selection = opts.selection ?? new Selection({});
    this.failures = new Failures(opts.log);
    this.attribution = new Attribution(opts.containers, (ev) => this.deliver(ev), opts.hold);
    this.assembler = new StreamAssembler((m) => this.onMessage(m), (c) => this.onReceiverCopy(c));
    this.tls = new TlsAttribution((r) => this.assemble(r));
    this.connections = new ConnectionEvents(this.clock, (ev) => this.deliver(ev), this.selection);
    this.capture = opts.source;
    if (opts.maxBusyMs !== undefined) this.shedder = new Shedder(opts.log, () => this.capture.counters().ringbufFull ?? 0, opts.maxBusyMs);
  }

  /** Names the containers; `hepbpf containers` lists what it has seen. */
  get containers(): ContainerResolver {
    return this.opts.containers;
  }

  async start(): Promise<void> {
    this.opts.containers.start();
    const shedder = this.shedder;
    this.capture.start((batch) => decodeBatch(shedder ? shedder.admit(batch) : batch, (r) => this.onRecord(r), this.record));
    // TLS plaintext waiting for its connection must go out even when nothing else arrives.
    this.tlsTimer = setInterval(() => {
      const now = process.hrtime.bigint();
      this.tls.expire(now);
      this.connections.expire(now);
    }, 250);
    this.tlsTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.tlsTimer);
    this.capture.stop();
    this.tls.flush(); // TLS plaintext still waiting goes through the pipeline, then out of the hold
    this.attribution.flush();
    this.connections.flush();
    this.opts.containers.stop();
  }

  private onRecord(r: CaptureRecord): void {
    if (r.source === SRC_EXEC) this.capture.processChanged(r.pid, r.cgroupId);
    else if (r.source >= SRC_TCP_CONNECT && r.source <= SRC_TLS_HANDSHAKE_FAILED) {
      if (this.opts.connectionEvents) this.connections.record(r);
    }
    else if (r.flags & F_TLS || r.source === SRC_TLS_CONN) this.tls.push(r);
    else this.assemble(r);
  }

  // No input may take the agent down: a throw is contained to its stream (assemble), its message
  // (onMessage) or its event (deliver), counted by that stage and logged rate-limited (Failures).

  private assemble(r: CaptureRecord): void {
    try {
      this.assembler.push(r);
    } catch (err) {
      this.assembler.forget(r);
      this.failures.failed('stream', err);
    }
  }

  private onMessage(message: Message): void {
    try {
      this.processMessage(message);
    } catch (err) {
      this.failures.failed('message', err);
    }
  }

  /** The receiver's header-only copy of a local datagram (or TCP message) names the receiver of the sender's copy; nothing else is done with it. */
  private onReceiverCopy(copy: ReceiverCopy): void {
    try {
      this.attribution.learn(copy);
      const first = this.dedup.pairReceiverCopy(copy);
      if (!first || first.keepAlive) return; // counted by dedup; a keep-alive is counted once, as it was accepted
      this.duplicates++;
      this.attribution.counterpart(first, copy);
    } catch (err) {
      this.failures.failed('message', err);
    }
  }

  private deliver(ev: CaptureEvent): void {
    try {
      this.opts.sink(ev);
    } catch (err) {
      this.failures.failed('sink', err);
    }
  }

  private processMessage(message: Message): void {
    this.attribution.learn(message);
    if (!this.dedup.accept(message)) {
      if (message.keepAlive) return; // the other side's copy of a keep-alive: counted once, below
      this.duplicates++;
      this.attribution.counterpart(this.dedup.matched!, message);
      return;
    }
    if (message.keepAlive) {
      this.keepAlives++;
      return;
    }
    if (message.proto === 'diameter') this.onDiameter(message);
    else this.onSip(message);
  }

  private onSip(message: Message): void {
    const sip = parseSip(message.payload, message.headerLines);
    if (!sip) {
      this.notSip++;
      return;
    }
    const correlationId = this.correlator.sip(message, sip);
    const selected = !this.selection.active || this.selection.select({ src: message.src, dst: message.dst, payload: message.payload, sip, correlationId, nowMs: nowMs(message) });
    this.connectionCorrelated(message, correlationId, selected);
    if (!selected) return;
    const masked = this.redact ? redactSip(message.payload) : undefined;
    if (masked) this.redacted++;
    this.countForwarded(message);
    const wallUs = this.clock.toWallMicros(message.tsNs);
    this.attribution.submit({ message, payload: masked ?? message.payload, sip, wallUs, correlationId, container: null, peerContainer: null });
  }

  private onDiameter(message: Message): void {
    let diameter = parseDiameter(message.payload);
    if (!diameter) {
      this.notDiameter++;
      return;
    }
    if (diameter.malformed) this.diameterMalformed++;
    const { id, latencyMs } = this.correlator.diameter(message, diameter);
    const selected = !this.selection.active || this.selection.select({ src: message.src, dst: message.dst, payload: message.payload, correlationId: id, nowMs: nowMs(message) });
    this.connectionCorrelated(message, id, selected);
    if (!selected) return;
    let payload = message.payload;
    const masked = this.redact ? redactDiameter(payload, diameter.avps) : undefined;
    if (masked) {
      this.redacted++;
      payload = masked;
      diameter = parseDiameter(masked)!;
    }
    this.countForwarded(message);
    const wallUs = this.clock.toWallMicros(message.tsNs);
    this.attribution.submit({
      message, payload, diameter, latencyMs, wallUs, correlationId: id, container: null, peerContainer: null,
    });
  }

  /**
   * The id a connection's events carry comes from its messages: remembered only when connection events
   * are sent (a Map entry replaced per TCP or TLS message, as its calls' ids alternate, read by nothing otherwise).
   */
  private connectionCorrelated(message: Message, correlationId: string, selected: boolean): void {
    if (this.opts.connectionEvents) this.connections.correlated(message, correlationId, selected);
  }

  private countForwarded(message: Message): void {
    this.forwarded++;
    (message.proto === 'sip' ? this.sipMessages : this.diameterMessages)[transportIndex(message.transport)]++;
    if (message.truncated) this.forwardedTruncated++;
  }

  stats() {
    return {
      kernel: this.capture.counters(),
      shed: { lag: this.shedder?.shed.lag ?? 0 },
      streams: this.assembler.stats(),
      tls: { ...this.capture.tlsStats(), attributedLate: this.tls.attributedLate, unattributed: this.tls.unattributed },
      duplicates: this.duplicates,
      keepAlives: this.keepAlives,
      unpairedReceiverCopies: this.dedup.unpaired,
      dedupEvictedEarly: this.dedup.evictedEarly,
      notSip: this.notSip,
      notDiameter: this.notDiameter,
      diameterMalformed: this.diameterMalformed,
      redacted: this.redacted,
      connectionEvents: this.connections.stats,
      correlation: this.correlator.stats(),
      selection: this.selection.stats(),
      forwarded: this.forwarded,
      messages: { sip: byTransport(this.sipMessages), diameter: byTransport(this.diameterMessages) },
      forwardedTruncated: this.forwardedTruncated,
      failures: this.failures.counts,
      containers: { ...this.attribution.stats, ...this.opts.containers.stats, ...this.attribution.sizes(), ...this.opts.containers.sizes() },
    };
  }
}

/** What `run` and `tail` capture on this host: the kernel's records, and container names from the host's runtimes. */
export interface HostCaptureOptions extends ContainerSourceOptions {
  sipPorts?: number[];
  redact?: boolean;
  connectionEvents?: boolean;
  holdMs?: number;
  correlationHeader?: string;
  /** From correlationRegex() (src/enrich/correlation.ts). */
  correlationRegex?: RegExp;
  selection?: Selection;
}

const operatorKey = (o: HostCaptureOptions): OperatorKey => ({ header: o.correlationHeader, regex: o.correlationRegex });

/** The pipeline over this host's kernel, naming containers from its cgroups and runtimes. */
export function hostAgent(o: HostCaptureOptions, log: Logger, sink: (event: CaptureEvent) => void): Agent {
  return new Agent({
    source: new SocketCapture({ sipPorts: o.sipPorts, log }),
    log,
    redact: o.redact,
    connectionEvents: o.connectionEvents,
    correlation: operatorKey(o),
    containers: new ContainerResolver(CgroupIndex.forThisHost(), containerSources({ ...o, kubernetes: KubernetesPods.inCluster() })),
    hold: { holdMs: o.holdMs },
    maxBusyMs: MAX_BUSY_MS,
    selection: o.selection,
    sink,
  });
}

/** Messages run through a throwaway pipeline before the probes attach (see warmUp). */
const WARM_UP_MESSAGES = 8000;
const WARM_UP_ROUNDS = 8;

/**
 * V8 compiles the hot path only once it has run a while: in a fresh process the first ~6,000
 * messages cost 2 to 10 times what later ones do (the first 2,048 SIP/UDP messages 120-186 µs each,
 * later ones 7-18 µs), and at 20k msg/s that backlog lands in the ring buffer in the first second
 * after `ready`. So the same stages, with a HEP forwarder encoding into a sender that discards,
 * first run on synthetic SIP between two local processes; nothing of that pipeline outlives this
 * call. Measured (2026-12-02, busy machine, 3 runs each): the first 16k messages of a fresh
 * pipeline took 449-858 ms cold and 276-440 ms after this; it adds 0.7-1.2 s before `ready`.
 */
async function warmUp(o: ForwardingOptions, log: Logger): Promise<void> {
  const discard: HepSender = {
    target: o.targets[0][0],
    name: 'warm-up',
    maxPacket: MAX_UDP_PACKET,
    send() {},
    flush: async () => {},
    close: async () => {},
    stats: () => ({ sent: 0, dropped: 0, errors: 0, queued: 0, queuedBytes: 0, up: 0 }),
  };
  const forwarder = new HepForwarder([discard], o.hep, o);
  const source = new ReplaySource();
  // A small hold: names are known at once, only the first messages wait for the (empty) lookup.
  const agent = new Agent({
    source, log, redact: o.redact, correlation: operatorKey(o), containers: new ContainerResolver(undefined, {}), hold: { heldBytes: 1 << 20 }, selection: new Selection(o), sink: (ev) => forwarder.forward(ev),
  });
  await agent.start();
  // Building records costs about what running them does: the same 1,000 messages go round again
  // (each pair of copies is matched at once, so a round leaves nothing for the next to trip on).
  const batches = syntheticSipBatches(WARM_UP_MESSAGES / WARM_UP_ROUNDS);
  for (let round = 0; round < WARM_UP_ROUNDS; round++) {
    for (const batch of batches) {
      source.replay(batch);
      await nextTurn(); // as batches arrive: container lookups answer in between
    }
  }
  await agent.stop();
}

/**
 * Start-up's garbage (the warm-up's pipeline, the BPF object's BTF, the TLS probe planning) and
 * the code that ran only then would otherwise stay resident: V8 collects its old generation only
 * as it grows, malloc keeps freed pages, and node's code pages stay mapped once read. A full GC,
 * then the native side's release (malloc_trim, node's and capstone's read-only pages). V8 exposes
 * its GC only under --expose-gc, which may be set from inside before a new context asks for it.
 */
function releaseStartUpMemory(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  releaseMemory();
}

export interface ForwardingOptions extends Omit<HostCaptureOptions, 'selection'>, ContainerFilterOptions, SelectionOptions, ForwardOptions {
  /** One entry per --hep: a collector, or a failover group (primary first). */
  targets: HepTarget[][];
  spool?: SpoolOptions;
  hep: HepAgentFields;
  /** IP:PORT for /metrics, /healthz and /readyz over HTTP; none without it. */
  metricsListen?: string;
}

/** `hepbpf run`: every message the filters keep goes to each collector and to the control socket's tail clients. */
export class Forwarding {
  private readonly forwarder: HepForwarder;
  private readonly control: ControlServer;
  private readonly agent: Agent;
  private readonly metrics?: MetricsServer;
  /** Every probe attached, until stop. */
  private capturing = false;
  private statsTimer?: NodeJS.Timeout;

  constructor(
    private readonly o: ForwardingOptions,
    private readonly log: Logger,
  ) {
    const keep = containerFilter(o);
    const selection = new Selection(o);
    this.forwarder = new HepForwarder(createSenders(o.targets, log, o.spool), o.hep, o);
    this.agent = hostAgent({ ...o, selection }, log, (event) => {
      if (keep && !keep(event.container, event.peerContainer)) return selection.containerFiltered();
      this.forwarder.forward(event);
      this.control.publish(event);
    });
    this.control = new ControlServer(log, () => this.agent.containers.list());
    if (o.metricsListen)
      this.metrics = new MetricsServer({
        stats: () => this.stats(),
        containers: () => this.agent.containers.list().map((c) => ({ name: c.container.name, messages: c.messages })),
        notReady: () => this.notReady(),
      });
  }

  async start(): Promise<void> {
    // Listening first: /healthz answers and /readyz says why not while the probes attach.
    if (this.metrics) this.log.info({ address: await this.metrics.listen(this.o.metricsListen!) }, 'metrics listening');
    await this.control.start();
    await warmUp(this.o, this.log);
    await this.agent.start();
    releaseStartUpMemory();
    this.capturing = true;
    this.statsTimer = setInterval(() => this.log.info(this.stats(), 'stats'), 60_000);
    this.statsTimer.unref();
  }

  stats() {
    return { capture: this.agent.stats(), hep: this.forwarder.stats(), control: this.control.stats() };
  }

  private notReady(): string | undefined {
    if (!this.capturing) return 'probes not attached';
    const collectors = Object.values(this.forwarder.stats().collectors);
    if (!collectors.some((c) => c.up)) return 'no collector reachable';
    return undefined;
  }

  /** Detaches every probe, sends what is held, flushes the HEP queues; logs the final stats. */
  async stop(): Promise<void> {
    clearInterval(this.statsTimer);
    this.capturing = false;
    await this.agent.stop();
    await this.forwarder.close();
    await this.control.close();
    await this.metrics?.close();
    this.log.info(this.stats(), 'stopped');
  }
}
