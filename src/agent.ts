import type { Logger } from 'pino';
import { SocketCapture } from './capture/socket-capture.js';
import { decodeBatch, F_TLS, SRC_EXEC, SRC_TLS_CONN, type CaptureRecord } from './capture/record.js';
import { TlsAttribution } from './capture/tls-attribution.js';
import { MonotonicClock } from './capture/clock.js';
import { StreamAssembler } from './stream/assembler.js';
import { LocalDedup } from './stream/dedup.js';
import type { Message } from './stream/message.js';
import { parseSip, type SipInfo } from './protocols/sip.js';
import { diameterSummary, parseDiameter, type DiameterInfo } from './protocols/diameter.js';
import { Correlator } from './enrich/correlation.js';
import { redactDiameter, redactSip } from './enrich/redact.js';
import { Attribution, type AttributionOptions } from './enrich/attribution.js';
import type { ContainerIdentity, ContainerResolver } from './enrich/containers.js';

/** One SIP or Diameter message, forwarded once: what every sink (HEP, tail) receives. */
export interface CaptureEvent {
  message: Message;
  /** The bytes to forward: the message's own, or a copy with secrets masked. Valid during the sink call. */
  payload: Buffer;
  sip?: SipInfo;
  /** Decoded from `payload`. */
  diameter?: DiameterInfo;
  summary: string;
  wallUs: number;
  correlationId: string;
  /** The process that sent it, where it was seen sending, else the receiver (null: a host process). Set before the sink sees it. */
  container: ContainerIdentity | null;
  /** The other end, when it is on this host too. */
  peerContainer: ContainerIdentity | null;
}

export interface AgentOptions {
  sipPorts?: number[];
  /** Mask authentication secrets (default true). */
  redact?: boolean;
  log: Logger;
  /** Names the containers of both ends; events reach the sink after it (held a bounded time when a name is not known yet). */
  containers: ContainerResolver;
  hold?: AttributionOptions;
  sink: (event: CaptureEvent) => void;
}

/** Wires the pipeline: ring buffer -> records -> streams -> SIP/Diameter messages -> dedup -> correlation, redaction -> containers -> sink. */
export class Agent {
  private readonly capture: SocketCapture;
  private readonly clock = new MonotonicClock();
  private readonly dedup = new LocalDedup();
  private readonly assembler: StreamAssembler;
  private readonly tls: TlsAttribution;
  private tlsTimer?: NodeJS.Timeout;
  private readonly correlator = new Correlator();
  private readonly redact: boolean;
  private readonly attribution: Attribution;
  private notSip = 0;
  private notDiameter = 0;
  private diameterMalformed = 0;
  private redacted = 0;
  private duplicates = 0;
  private forwarded = 0;

  constructor(private readonly opts: AgentOptions) {
    this.redact = opts.redact ?? true;
    this.attribution = new Attribution(opts.containers, opts.sink, opts.hold);
    this.assembler = new StreamAssembler((m) => this.onMessage(m));
    this.tls = new TlsAttribution((r) => this.assembler.push(r));
    this.capture = new SocketCapture({ sipPorts: opts.sipPorts, log: opts.log }, (batch) =>
      decodeBatch(batch, (r) => this.onRecord(r)),
    );
  }

  async start(): Promise<void> {
    this.opts.containers.start();
    this.capture.start();
    // TLS plaintext waiting for its connection must go out even when nothing else arrives.
    this.tlsTimer = setInterval(() => this.tls.expire(process.hrtime.bigint()), 250);
    this.tlsTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.tlsTimer);
    this.capture.stop();
    this.tls.flush(); // TLS plaintext still waiting goes through the pipeline, then out of the hold
    this.attribution.flush();
    this.opts.containers.stop();
  }

  private onRecord(r: CaptureRecord): void {
    if (r.source === SRC_EXEC) this.capture.processChanged(r.pid);
    else if (r.flags & F_TLS || r.source === SRC_TLS_CONN) this.tls.push(r);
    else this.assembler.push(r);
  }

  private onMessage(message: Message): void {
    this.attribution.learn(message);
    if (!this.dedup.accept(message)) {
      if (!this.dedup.matched) return; // a header-only receiver's copy with no sender's copy: counted by dedup
      this.duplicates++;
      this.attribution.counterpart(this.dedup.matched, message);
      return;
    }
    if (message.proto === 'diameter') this.onDiameter(message);
    else this.onSip(message);
  }

  private onSip(message: Message): void {
    const sip = parseSip(message.payload);
    if (!sip) {
      this.notSip++;
      return;
    }
    const correlationId = this.correlator.sip(message, sip);
    const masked = this.redact ? redactSip(message.payload) : undefined;
    if (masked) this.redacted++;
    this.forwarded++;
    const wallUs = this.clock.toWallMicros(message.tsNs);
    this.attribution.submit({ message, payload: masked ?? message.payload, sip, summary: sip.summary, wallUs, correlationId, container: null, peerContainer: null });
  }

  private onDiameter(message: Message): void {
    let diameter = parseDiameter(message.payload);
    if (!diameter) {
      this.notDiameter++;
      return;
    }
    if (diameter.malformed) this.diameterMalformed++;
    const { id, latencyMs } = this.correlator.diameter(message, diameter);
    let payload = message.payload;
    const masked = this.redact ? redactDiameter(payload, diameter.avps) : undefined;
    if (masked) {
      this.redacted++;
      payload = masked;
      diameter = parseDiameter(masked)!;
    }
    this.forwarded++;
    const wallUs = this.clock.toWallMicros(message.tsNs);
    this.attribution.submit({
      message, payload, diameter, summary: diameterSummary(diameter, latencyMs), wallUs, correlationId: id, container: null, peerContainer: null,
    });
  }

  stats() {
    return {
      kernel: this.capture.counters(),
      streams: this.assembler.stats(),
      tls: { ...this.capture.tlsStats(), attributedLate: this.tls.attributedLate, unattributed: this.tls.unattributed },
      duplicates: this.duplicates,
      unpairedReceiverCopies: this.dedup.unpaired,
      notSip: this.notSip,
      notDiameter: this.notDiameter,
      diameterMalformed: this.diameterMalformed,
      redacted: this.redacted,
      correlation: this.correlator.stats(),
      forwarded: this.forwarded,
      containers: { ...this.attribution.stats, ...this.opts.containers.stats, ...this.attribution.sizes(), ...this.opts.containers.sizes() },
    };
  }
}
