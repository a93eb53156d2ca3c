import { readFileSync } from 'node:fs';

// Capability numbers from linux/capability.h.
export const CAPABILITIES = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_RESOURCE: 24,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapabilityName = keyof typeof CAPABILITIES;

/**
 * What the agent needs and why: the least-privilege list the README and deploy/ files repeat,
 * measured by test/e2e/capabilities.test.ts. Without CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON
 * capture all but the TLS plaintext.
 */
export const REQUIRED_CAPABILITIES: Record<string, string> = {
  CAP_SYS_ADMIN: 'attach uprobes (TLS plaintext; Linux requires it since "perf: Require CAP_SYS_ADMIN for uprobes"), mount tracefs where it is not mounted; covers CAP_BPF and CAP_PERFMON',
  CAP_SYS_PTRACE: 'read /proc/PID/maps and /proc/PID/root of processes with more capabilities (TLS library discovery)',
  CAP_BPF: 'load BPF programs and maps (without CAP_SYS_ADMIN)',
  CAP_PERFMON: 'attach tracepoints, read kernel memory from BPF (without CAP_SYS_ADMIN)',
};

export function effectiveCapabilities(statusText = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt('0x' + m[1]) : 0n;
}

export function hasCapability(name: CapabilityName, caps = effectiveCapabilities()): boolean {
  return (caps >> BigInt(CAPABILITIES[name])) & 1n ? true : false;
}

/** The capabilities that stop the agent from starting, or [] if it can. CAP_SYS_ADMIN covers BPF and PERFMON. */
export function missingForCapture(caps = effectiveCapabilities()): string[] {
  if (hasCapability('CAP_SYS_ADMIN', caps)) return [];
  return (['CAP_BPF', 'CAP_PERFMON'] as const).filter((c) => !hasCapability(c, caps));
}
