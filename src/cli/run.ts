import { readFileSync } from 'node:fs';
import pino from 'pino';
import { Forwarding } from '../agent.js';
import type { DiameterPayload } from '../output/hep-forwarder.js';
import { parseHepGroup } from '../output/target.js';
import { NodeNameTemplate } from '../output/node-name.js';
import type { ContainerOptions } from './container-options.js';
import { preflight } from './preflight.js';
import type { SelectionOptions } from '../enrich/selection.js';

export interface RunOptions extends ContainerOptions, SelectionOptions {
  hep: string[];
  spoolDir?: string;
  spoolMaxMb: number;
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
  correlationHeader?: string;
  correlationRegex?: RegExp;
  logLevel: string;
  metricsListen?: string;
}

export async function runCommand(opts: RunOptions): Promise<void> {
  const log = pino({ level: opts.logLevel, base: { name: 'hepbpf' } }, pino.destination({ fd: 2, sync: true }));
  if (opts.hep.length === 0) throw new Error('at least one --hep collector is required, e.g. --hep udp://127.0.0.1:9060');
  const ca = opts.hepCa === undefined ? undefined : readCa(opts.hepCa);
  const targets = opts.hep.map((v) => parseHepGroup(v, { ca, insecure: opts.hepInsecure }));
  const spool = opts.spoolDir === undefined ? undefined : { dir: opts.spoolDir, maxBytes: Math.floor(opts.spoolMaxMb * 1024 * 1024) };
  if (spool && targets.every((g) => g[0].transport === 'udp')) throw new Error('--spool-dir needs a tcp:// or tls:// collector (HEP over UDP is never spooled)');
  preflight();
  if (opts.hepInsecure && targets.some((g) => g.some((t) => t.transport === 'tls')))
    log.warn('--hep-insecure: the HEP collector\'s certificate is not verified; decrypted SIP and Diameter may go to whoever answers');
  const forwarding = new Forwarding(
    {
      ...opts,
      targets,
      spool,
      hep: { captureId: opts.hepId, authKey: opts.authKey },
      nodeName: new NodeNameTemplate(opts.nodeName),
    },
    log,
  );
  // A signal while the probes attach (start takes seconds) stops the agent once they are attached:
  // without handlers yet, it would die by the signal mid-start.
  const started = forwarding.start();
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    await started.catch(() => {});
    await forwarding.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  await started;
  if (!stopping) log.info({ collectors: opts.hep, sipPorts: opts.sipPorts ?? 'any', redact: opts.redact }, 'ready');
}

function readCa(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`--hep-ca ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
