import { existsSync } from 'node:fs';
import { missingForCapture } from '../capture/privileges.js';

/** An expected condition that stops the agent: printed as one line, exit 1, never a stack trace. */
export class FatalCondition extends Error {}

/** Checks what capture needs before touching the kernel, so the user gets the fix, not an errno. */
export function preflight(): void {
  const missing = missingForCapture();
  if (missing.length)
    throw new FatalCondition(
      `missing capability ${missing.join(', ')}: run as root (sudo) or grant CAP_BPF and CAP_PERFMON (see hepbpf doctor)`,
    );
  if (!existsSync('/sys/kernel/btf/vmlinux'))
    throw new FatalCondition('kernel BTF missing (/sys/kernel/btf/vmlinux): use a kernel built with CONFIG_DEBUG_INFO_BTF=y');
}
