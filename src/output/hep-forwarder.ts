import type { CaptureEvent } from '../enrich/event.js';
import { TRANSPORTS, transportIndex, type Transport } from '../stream/message.js';
import { HepEncoder, type HepAgentFields, type HepMessage } from '../hep/encode.js';
import { HEP_PROTO_DIAMETER, HEP_PROTO_LOG, HEP_PROTO_SIP, MAX_PACKET } from '../hep/chunks.js';
import { diameterJsonBytes } from '../protocols/diameter.js';
import type { Logger } from 'pino';
import type { HepSender } from './hep-sender.js';
import { TcpHepSender } from './hep-sender-tcp.js';
import { UdpHepSender } from './hep-sender-udp.js';
import { Spool, ensurePrivateDir, type SpoolOptions } from './spool.js';
import type { HepTarget } from './target.js';
import { join } from 'node:path';
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
  /** HEP's IP protocol by transportIndex. */
  private readonly ipProto: number[];
  /** What is encoded, one object rewritten per message: encoding is synchronous. */
  private readonly hep: HepMessage = {
    family: 4, ipProto: 0, srcIp: '', dstIp: '', srcPort: 0, dstPort: 0, timeUs: 0, protoType: 0, correlationId: '', payload: Buffer.alloc(0), nodeName: undefined,
  };
  /** Messages whose payload was cut to fit a HEP packet. */
  private cutToFit = 0;

  constructor(
    private readonly senders: HepSender[],
    agent: HepAgentFields,
    opts: ForwardOptions = {},
  ) {
    this.diameterPayload = opts.diameterPayload ?? 'json';
    this.nodeName = opts.nodeName;
    // Kamailio siptrace marks WebSocket (ws and wss) with the same 22 as TLS; --tls-ip-proto 6 makes all three TCP.
    const tls = opts.tlsIpProto ?? HEP_IP_PROTO_TLS;
    const ipProto: Record<Transport, number> = { udp: 17, tcp: 6, tls, sctp: 132, ws: tls, wss: tls };
    this.ipProto = TRANSPORTS.map((t) => ipProto[t]);
    this.encoder = new HepEncoder(agent);
  }

  forward(ev: CaptureEvent): void {
    const m = ev.message;
    const payload = ev.diameter && this.diameterPayload === 'json' ? diameterJsonBytes(ev.diameter) : ev.payload;
    const hep = this.hep;
    hep.family = m.family;
    hep.ipProto = this.ipProto[transportIndex(m.transport)];
    hep.srcIp = m.src.ip;
    hep.dstIp = m.dst.ip;
    hep.srcPort = m.src.port;
    hep.dstPort = m.dst.port;
    hep.timeUs = ev.wallUs;
    hep.protoType = ev.connection ? HEP_PROTO_LOG : ev.diameter ? HEP_PROTO_DIAMETER : HEP_PROTO_SIP;
    hep.correlationId = ev.correlationId;
    hep.payload = payload;
    hep.nodeName = this.nodeName?.render(ev.container);
    let encodedFor = -1;
    let length = 0;
    for (const s of this.senders) {
      if (s.maxPacket !== encodedFor) {
        length = this.encoder.encode(hep, this.packet, 0, s.maxPacket);
        if (this.encoder.payloadBytes < payload.length) this.cutToFit++;
        encodedFor = s.maxPacket;
      }
      s.send(this.packet, length);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.senders.map((s) => s.close()));
  }

  stats() {
    return { cutToFit: this.cutToFit, nodeNamesCut: this.nodeName?.cut ?? 0, collectors: Object.fromEntries(this.senders.map((s) => [s.name, s.stats()])) };
  }
}

/**
 * One sender per --hep value: udp:// one datagram per packet; tcp:// and tls:// (or a failover
 * group of them) a stream, with its own spool under `spool.dir` when given; the spool bound is
 * shared equally by the TCP/TLS senders.
 */
export function createSenders(groups: HepTarget[][], log: Logger, spool?: SpoolOptions): HepSender[] {
  const streams = groups.filter((g) => g[0].transport !== 'udp').length;
  if (spool) ensurePrivateDir(spool.dir);
  return groups.map((g) =>
    g[0].transport === 'udp'
      ? new UdpHepSender(g[0], log)
      : new TcpHepSender(g, log, { spool: spool && new Spool(join(spool.dir, spoolName(g[0])), Math.floor(spool.maxBytes / streams), log) }),
  );
}

/** The spool directory of a group: named after its primary, so changing the backups keeps the spool. */
function spoolName(primary: HepTarget): string {
  return `${primary.transport}_${primary.host.replace(/[^0-9A-Za-z.-]/g, '_')}_${primary.port}`;
}
