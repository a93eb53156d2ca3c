import type { CaptureEvent } from '../enrich/event.js';
import { HepEncoder, type HepAgentFields, type HepMessage } from '../hep/encode.js';
import { HEP_PROTO_DIAMETER, HEP_PROTO_LOG, HEP_PROTO_SIP, MAX_PACKET } from '../hep/chunks.js';
import { diameterJson } from '../protocols/diameter.js';
import type { Logger } from 'pino';
import type { HepSender } from './hep-sender.js';
import { TcpHepSender } from './hep-sender-tcp.js';
import { UdpHepSender } from './hep-sender-udp.js';
import type { HepTarget } from './target.js';
import type { NodeNameTemplate } from './node-name.js';

/** What HEP chunk 0x02 says for TLS: 22, as Kamailio siptrace marks it, unless the operator asks for 6 (TCP). */
export const HEP_IP_PROTO_TLS = 22;

export interface ForwardOptions {
  diameterPayload?: DiameterPayload;
  tlsIpProto?: number;
  /** Per-message node name from the event's container; without it the agent's constant one (if any). */
  nodeName?: NodeNameTemplate;
}

/** What a Diameter message's HEP payload is: the decoded message as JSON (README "Diameter"), or the exact bytes. */
export type DiameterPayload = 'json' | 'raw';

/** Encodes each event once into a reused buffer and hands it to every collector. */
export class HepForwarder {
  private readonly encoder: HepEncoder;
  private readonly packet = Buffer.allocUnsafe(MAX_PACKET);
  private readonly diameterPayload: DiameterPayload;
  private readonly nodeName?: NodeNameTemplate;
  private readonly ipProto: Record<CaptureEvent['message']['transport'], number>;
  /** Messages whose payload was cut to fit a HEP packet. */
  private cutToFit = 0;

  constructor(
    private readonly senders: HepSender[],
    agent: HepAgentFields,
    opts: ForwardOptions = {},
  ) {
    this.diameterPayload = opts.diameterPayload ?? 'json';
    this.nodeName = opts.nodeName;
    this.ipProto = { udp: 17, tcp: 6, tls: opts.tlsIpProto ?? HEP_IP_PROTO_TLS, sctp: 132 };
    this.encoder = new HepEncoder(agent);
  }

  forward(ev: CaptureEvent): void {
    const m = ev.message;
    const payload = ev.diameter && this.diameterPayload === 'json' ? Buffer.from(JSON.stringify(diameterJson(ev.diameter))) : ev.payload;
    const hep: HepMessage = {
      family: m.family,
      ipProto: this.ipProto[m.transport],
      srcIp: m.src.ip,
      dstIp: m.dst.ip,
      srcPort: m.src.port,
      dstPort: m.dst.port,
      timeUs: ev.wallUs,
      protoType: ev.connection ? HEP_PROTO_LOG : ev.diameter ? HEP_PROTO_DIAMETER : HEP_PROTO_SIP,
      correlationId: ev.correlationId,
      payload,
      nodeName: this.nodeName?.render(ev.container),
    };
    let encodedFor = -1;
    let length = 0;
    for (const s of this.senders) {
      if (s.maxPacket !== encodedFor) {
        const r = this.encoder.encode(hep, this.packet, 0, s.maxPacket);
        if (r.payloadBytes < payload.length) this.cutToFit++;
        length = r.length;
        encodedFor = s.maxPacket;
      }
      s.send(this.packet.subarray(0, length));
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.senders.map((s) => s.close()));
  }

  stats() {
    return { cutToFit: this.cutToFit, nodeNamesCut: this.nodeName?.cut ?? 0, collectors: Object.fromEntries(this.senders.map((s) => [s.target.url, s.stats()])) };
  }
}

/** udp:// one datagram per packet; tcp:// and tls:// a stream. */
export function createSender(target: HepTarget, log: Logger): HepSender {
  return target.transport === 'udp' ? new UdpHepSender(target, log) : new TcpHepSender(target, log);
}
