import type { Logger } from 'pino';
import type { BpfLink, BpfObject } from '../bpf/libbpf.js';
import { hasCapability } from './privileges.js';
import { closeSync, openSync } from 'node:fs';
import { TlsDiscovery, type TlsTarget } from './tls-discovery.js';
import { planProbes, PROBES_ENV, PROGRAMS, type FunctionPlan } from './tls-sites.js';

/** Programs attached per TLS library file, not by their SEC(). */
export const TLS_PROGRAMS = new Set(Object.values(PROGRAMS).flatMap((p) => [p.enter, p.ret]));

/**
 * Uprobes on every TLS library and executable in use on the host: found by TlsDiscovery, attached
 * once per file for every process (uprobes belong to the inode), kept until the BPF object closes.
 */
export class TlsProbes {
  private readonly discovery: TlsDiscovery;

  /** HEPBPF_TLS_PROBES=entry: today's entry + return probes on every function, the fallback kept tested. */
  private readonly forceEntry: boolean;

  constructor(
    private readonly obj: BpfObject,
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const mode = env[PROBES_ENV] ?? 'auto';
    if (mode !== 'auto' && mode !== 'entry') throw new Error(`${PROBES_ENV}=${mode}: expected auto or entry`);
    this.forceEntry = mode === 'entry';
    if (this.forceEntry) log.info(`${PROBES_ENV}=entry: every TLS function is probed at its entry and return`);
    this.discovery = new TlsDiscovery({ selfPid: process.pid, log, attach: (t) => this.attach(t) });
  }

  /** Attaches to the TLS libraries of every root's loader (host, containers), then to what every running process uses. */
  start(): void {
    if (!hasCapability('CAP_SYS_PTRACE'))
      this.log.warn('missing CAP_SYS_PTRACE: TLS libraries of other users\' processes cannot be found (no /proc/PID/maps), their TLS is not captured');
    this.discovery.scanRoots();
    this.discovery.scanAll();
  }

  /** The kernel saw pid, in cgroup cgroupId, exec or map code: attach to any TLS library new to us. */
  processChanged(pid: number, cgroupId: bigint): void {
    this.discovery.processChanged(pid, cgroupId);
  }

  private attach(target: TlsTarget): void {
    const plans = this.plan(target);
    const links: BpfLink[] = [];
    try {
      for (const probe of plans.flatMap((p) => p.probes))
        links.push(this.obj.attach(probe.program, { binaryPath: target.path, funcName: probe.at, retprobe: probe.retprobe }));
    } catch (err) {
      for (const l of links) l.destroy();
      throw err;
    }
  }

  /** Where target's probes go; said once per file, with why any function keeps its single-stepped entry. */
  private plan(target: TlsTarget): FunctionPlan[] {
    const fd = openSync(target.path, 'r');
    let plans: FunctionPlan[];
    try {
      plans = planProbes(fd, target.kind, target.functions, this.forceEntry);
    } finally {
      closeSync(fd);
    }
    const modes = Object.fromEntries(plans.map((p) => [p.name, p.mode]));
    const fallback = plans.filter((p) => p.mode === 'entry');
    if (fallback.length && !this.forceEntry)
      this.log.info({ path: target.mappedPath, functions: Object.fromEntries(fallback.map((p) => [p.name, p.why])) }, 'TLS probes: no emulated site proven safe, these keep entry + return probes (single-stepped, slow on VMs)');
    this.log.debug({ path: target.mappedPath, modes, why: Object.fromEntries(plans.map((p) => [p.name, p.why])) }, 'TLS probe sites');
    return plans;
  }

  /** Files checked, probed and failed. */
  stats() {
    return this.discovery.stats();
  }

  /** Stops discovery; the links go with the BPF object. */
  close(): void {
    this.discovery.close();
  }
}
