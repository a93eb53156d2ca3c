import type { Logger } from 'pino';
import { SocketCapture } from './capture/socket-capture.js';
import { decodeBatch } from './capture/record.js';
import { MonotonicClock } from './capture/clock.js';
import { StreamAssembler } from './stream/assembler.js';
import { LocalDedup } from './stream/dedup.js';
import type { Message } from './stream/message.js';
import { parseSip, type SipInfo } from './protocols/sip.js';

/** One SIP message, forwarded once: what every sink (HEP, tail) receives. */
export interface SipEvent {
  message: Message;
  sip: SipInfo;
  wallUs: number;
  correlationId: string;
}

export interface AgentOptions {
  sipPorts?: number[];
  log: Logger;
  sink: (event: SipEvent) => void;
}

/** Collectors drop packets without a correlation id: a SIP message with no Call-ID is tied to its flow. */
function flowId(m: Message): string {
  return `${m.transport}:${m.src.ip}:${m.src.port}-${m.dst.ip}:${m.dst.port}`;
}

/** Wires the pipeline: ring buffer -> records -> streams -> SIP messages -> dedup -> sink. */
export class Agent {
  private readonly capture: SocketCapture;
  private readonly clock = new MonotonicClock();
  private readonly dedup = new LocalDedup();
  private readonly assembler: StreamAssembler;
  private notSip = 0;
  private duplicates = 0;
  private forwarded = 0;

  constructor(private readonly opts: AgentOptions) {
    this.assembler = new StreamAssembler((m) => this.onMessage(m));
    this.capture = new SocketCapture({ sipPorts: opts.sipPorts, log: opts.log }, (batch) =>
      decodeBatch(batch, (r) => this.assembler.push(r)),
    );
  }

  async start(): Promise<void> {
    this.capture.start();
  }

  async stop(): Promise<void> {
    this.capture.stop();
  }

  private onMessage(message: Message): void {
    if (!this.dedup.accept(message)) {
      this.duplicates++;
      return;
    }
    const sip = parseSip(message.payload);
    if (!sip) {
      this.notSip++;
      return;
    }
    this.forwarded++;
    this.opts.sink({ message, sip, wallUs: this.clock.toWallMicros(message.tsNs), correlationId: sip.callId || flowId(message) });
  }

  stats() {
    return {
      kernel: this.capture.counters(),
      streams: this.assembler.stats(),
      duplicates: this.duplicates,
      notSip: this.notSip,
      forwarded: this.forwarded,
    };
  }
}
