import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { missingForCapture, REQUIRED_CAPABILITIES, effectiveCapabilities, hasCapability, type CapabilityName } from '../capture/privileges.js';
import { BPF_OBJECT_PATH } from '../capture/paths.js';
import { ADDON_PATH } from '../bpf/libbpf.js';
import { tracefsMount } from '../bpf/tracefs.js';
import { TlsDiscovery, type TlsTarget } from '../capture/tls-discovery.js';
import { planProbes, PROBES_ENV, type FunctionPlan } from '../capture/tls-sites.js';
import { findCgroup2Mount } from '../enrich/cgroups.js';

export interface Check {
  name: string;
  ok: boolean;
  /** Optional checks warn instead of failing the host. */
  required: boolean;
  detail: string;
  fix?: string;
}

function kernelAtLeast(major: number, minor: number): boolean {
  const [maj, min] = release().split('.').map((s) => parseInt(s, 10));
  return maj > major || (maj === major && min >= minor);
}

/** The TLS libraries and executables running processes use: what the agent would probe now, and where. */
function tlsInUse(): { target: TlsTarget; plans: FunctionPlan[] }[] {
  const found: { target: TlsTarget; plans: FunctionPlan[] }[] = [];
  const silent = { warn() {}, info() {}, debug() {} };
  const forceEntry = process.env[PROBES_ENV] === 'entry';
  const attach = (target: TlsTarget) => {
    const fd = openSync(target.path, 'r');
    try {
      found.push({ target, plans: planProbes(fd, target.kind, target.functions, forceEntry) });
    } finally {
      closeSync(fd);
    }
  };
  new TlsDiscovery({ selfPid: process.pid, log: silent, attach }).scanAll();
  return found;
}

/** One library's probe modes: the functions that share a mode and its reason, group by group ("entry" is the single-stepped fallback). */
function probeModes(plans: FunctionPlan[]): string {
  const groups = new Map<string, string[]>();
  for (const p of plans) {
    const key = `${p.mode === 'entry' ? 'entry+return, single-stepped' : p.mode} (${p.why})`;
    groups.set(key, [...(groups.get(key) ?? []), p.name]);
  }
  return [...groups].map(([mode, names]) => `${names.join(', ')}: ${mode}`).join('; ');
}

export function runChecks(): Check[] {
  const caps = effectiveCapabilities();
  const missing = missingForCapture(caps);
  const lockdown = existsSync('/sys/kernel/security/lockdown')
    ? (/\[(\w+)\]/.exec(readFileSync('/sys/kernel/security/lockdown', 'utf8'))?.[1] ?? 'none')
    : 'none';
  const tracefs = tracefsMount();
  const cgroup2 = findCgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'))?.mountPoint;
  return [
    {
      name: 'privileges',
      ok: missing.length === 0,
      required: true,
      detail: missing.length ? `missing ${missing.join(', ')}` : 'can load and attach BPF programs',
      fix: 'run as root (sudo), or grant ' + Object.keys(REQUIRED_CAPABILITIES).join(', '),
    },
    ...(['CAP_SYS_PTRACE'] as CapabilityName[]).map((c) => ({
      name: c,
      ok: hasCapability(c, caps) || hasCapability('CAP_SYS_ADMIN', caps),
      required: false,
      detail: REQUIRED_CAPABILITIES[c],
      fix: `grant ${c}`,
    })),
    {
      name: 'kernel',
      ok: kernelAtLeast(6, 3),
      required: true,
      detail: `Linux ${release()} (needs tp_btf sock_send_length/sock_recv_length, task storage, bpf_rdonly_cast, bpf_loop; tested on 6.18)`,
      fix: 'upgrade to Linux 6.3 or newer',
    },
    {
      name: 'BTF',
      ok: existsSync('/sys/kernel/btf/vmlinux'),
      required: true,
      detail: '/sys/kernel/btf/vmlinux (CO-RE relocations)',
      fix: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y',
    },
    {
      name: 'lockdown',
      ok: lockdown !== 'confidentiality',
      required: true,
      detail: `lockdown mode: ${lockdown}`,
      fix: 'boot with lockdown=integrity or none: confidentiality forbids reading socket data from BPF',
    },
    {
      name: 'tracefs',
      ok: tracefs !== undefined || missing.length === 0,
      required: true,
      detail: tracefs ? `mounted at ${tracefs}` : 'not mounted; the agent mounts it at /sys/kernel/tracing on start',
      fix: 'mount -t tracefs nodev /sys/kernel/tracing',
    },
    {
      name: 'cgroup v2',
      ok: cgroup2 !== undefined,
      required: false,
      detail: cgroup2 ? `mounted at ${cgroup2}` : 'no cgroup2 mount: containers cannot be named',
      fix: 'mount -t cgroup2 none /sys/fs/cgroup/unified',
    },
    {
      name: 'uprobes',
      ok: existsSync('/sys/bus/event_source/devices/uprobe/type'),
      required: false,
      detail: 'uprobes see the plaintext of TLS (OpenSSL, BoringSSL, GnuTLS)',
      fix: 'use a kernel built with CONFIG_UPROBE_EVENTS=y: without it SIP and Diameter inside TLS are not captured',
    },
    (() => {
      // Files of other processes are opened through the addon (openat2).
      const tls = existsSync(ADDON_PATH) ? tlsInUse() : undefined;
      return {
        name: 'TLS libraries',
        ok: true,
        required: false,
        detail: !tls
          ? 'not looked for: the libbpf addon is not built (see build)'
          : tls.length
            ? `${tls.length} in use, probed when the agent starts:${tls.map(({ target, plans }) => `\n        ${target.mappedPath} (${target.kind}) ${probeModes(plans)}`).join('')}`
            : 'none in use now; probed as processes start',
      };
    })(),
    {
      name: 'build',
      ok: existsSync(BPF_OBJECT_PATH) && existsSync(ADDON_PATH),
      required: true,
      detail: 'BPF object and libbpf addon',
      fix: 'sudo scripts/setup.sh',
    },
  ];
}

/** Prints the checks (one line each, or one JSON document); 1 when a required one fails. */
export function doctor(out: NodeJS.WritableStream = process.stdout, json = false): number {
  const checks = runChecks();
  const ok = !checks.some((c) => c.required && !c.ok);
  if (json) {
    out.write(`${JSON.stringify({ ok, checks }, null, 2)}\n`);
    return ok ? 0 : 1;
  }
  for (const c of checks) {
    const mark = c.ok ? 'ok  ' : c.required ? 'FAIL' : 'warn';
    out.write(`${mark}  ${c.name.padEnd(20)} ${c.detail}${c.ok || !c.fix ? '' : `\n      fix: ${c.fix}`}\n`);
  }
  return ok ? 0 : 1;
}
