import { readFileSync } from 'node:fs';
import pino from 'pino';
import { Forwarding } from '../agent.js';
import type { DiameterPayload } from '../output/hep-forwarder.js';
import { parseHepTarget } from '../output/target.js';
import { NodeNameTemplate } from '../output/node-name.js';
import type { ContainerOptions } from './container-options.js';
import { preflight } from './preflight.js';

export interface RunOptions extends ContainerOptions {
  hep: string[];
  hepCa?: string;
  hepInsecure?: boolean;
  hepId: number;
  nodeName: string;
  authKey?: string;
  sipPorts?: number[];
  diameterPayload: DiameterPayload;
  tlsIpProto: number;
  redact: boolean;
  connectionEvents?: boolean;
  logLevel: string;
}

export async function runCommand(opts: RunOptions): Promise<void> {
  const log = pino({ level: opts.logLevel, base: { name: 'hepbpf' } }, pino.destination({ fd: 2, sync: true }));
  if (opts.hep.length === 0) throw new Error('at least one --hep collector is required, e.g. --hep udp://127.0.0.1:9060');
  const ca = opts.hepCa === undefined ? undefined : readCa(opts.hepCa);
  const targets = opts.hep.map((url) => parseHepTarget(url, { ca, insecure: opts.hepInsecure }));
  if (!Number.isInteger(opts.hepId) || opts.hepId < 0 || opts.hepId > 0xffffffff) throw new Error('--hep-id must be a 32-bit unsigned integer');
  preflight();
  if (opts.hepInsecure && targets.some((t) => t.transport === 'tls'))
    log.warn('--hep-insecure: the HEP collector\'s certificate is not verified; decrypted SIP and Diameter may go to whoever answers');

  if (opts.tlsIpProto !== 22 && opts.tlsIpProto !== 6) throw new Error('--tls-ip-proto must be 22 (as Kamailio siptrace marks TLS) or 6 (TCP)');
  const forwarding = new Forwarding(
    {
      ...opts,
      targets,
      hep: { captureId: opts.hepId, authKey: opts.authKey },
      nodeName: new NodeNameTemplate(opts.nodeName),
    },
    log,
  );
  await forwarding.start();
  log.info({ collectors: opts.hep, sipPorts: opts.sipPorts ?? 'any', redact: opts.redact }, 'ready');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await forwarding.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

function readCa(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`--hep-ca ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
