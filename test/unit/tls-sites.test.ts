/**
 * Probe-site selection (src/capture/tls-sites.ts) on Debian's own TLS libraries and on small
 * libraries assembled here in the shapes it must refuse. Where a site is chosen, its place is checked
 * against objdump's reading of the same file, not against our own decoder.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planProbes, type FunctionPlan } from '../../src/capture/tls-sites.js';
import type { TlsLibraryKind } from '../../src/capture/tls-discovery.js';
import { systemLibrary } from '../helpers/libraries.js';

const LIBSSL = systemLibrary('libssl.so.3');
const LIBGNUTLS = systemLibrary('libgnutls.so.30');
const OPENSSL = ['SSL_write', 'SSL_read', 'SSL_write_ex', 'SSL_read_ex'];
const GNUTLS = ['gnutls_record_send', 'gnutls_record_recv'];

function plan(path: string, kind: TlsLibraryKind, functions: string[], forceEntry = false): FunctionPlan[] {
  const fd = openSync(path, 'r');
  try {
    return planProbes(fd, kind, functions, forceEntry);
  } finally {
    closeSync(fd);
  }
}

/** objdump's disassembly of one function: [address, instruction text] per line. */
function objdump(path: string, fn: string): Array<[number, string]> {
  const out = execFileSync('objdump', ['-d', '--no-show-raw-insn', `--disassemble=${fn}`, path], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return [...out.matchAll(/^\s+([0-9a-f]+):\s+(.*)$/gm)].map((m) => [Number.parseInt(m[1], 16), m[2].trim()]);
}

/** File offset of virtual address `vaddr` (objdump's program headers). */
function fileOffset(path: string, vaddr: number): number {
  const out = execFileSync('objdump', ['-p', path], { encoding: 'utf8' });
  for (const m of out.matchAll(/LOAD off\s+0x([0-9a-f]+) vaddr 0x([0-9a-f]+).*\n\s+filesz 0x([0-9a-f]+).*flags (\S+)/g)) {
    const [off, va, size] = [m[1], m[2], m[3]].map((h) => Number.parseInt(h, 16));
    if (m[4].includes('x') && vaddr >= va && vaddr < va + size) return off + vaddr - va;
  }
  throw new Error(`0x${vaddr.toString(16)} not in an executable segment of ${path}`);
}

const modes = (plans: FunctionPlan[]) => Object.fromEntries(plans.map((p) => [p.name, p.mode]));
const entryProbes = (name: string, enter: string, ret: string) => [
  { program: enter, at: name, retprobe: false },
  { program: ret, at: name, retprobe: true },
];

describe("Debian 12's libraries", () => {
  it('libssl 3: all four functions are probed once each way in the two internal functions SSL_*_ex forward to, at their first (push) instruction', () => {
    const plans = plan(LIBSSL, 'openssl', OPENSSL);
    expect(modes(plans)).toEqual({ SSL_write: 'callee', SSL_read: 'callee', SSL_write_ex: 'callee', SSL_read_ex: 'callee' });
    for (const [plain, twin, enter] of [
      ['SSL_write', 'SSL_write_ex', 'tls_ssl_write_ex'],
      ['SSL_read', 'SSL_read_ex', 'tls_ssl_read_ex'],
    ]) {
      // objdump: SSL_*_ex's first instruction after the stack adjustment calls the internal function.
      const call = objdump(LIBSSL, twin).find(([, text]) => text.startsWith('call'))!;
      const callee = Number.parseInt(/call\s+([0-9a-f]+)/.exec(call[1])![1], 16);
      const calleeEntry = execFileSync('objdump', ['-d', '--no-show-raw-insn', `--start-address=${callee}`, `--stop-address=${callee + 2}`, LIBSSL], { encoding: 'utf8' });
      expect(calleeEntry).toMatch(/push\s+%r/);
      const at = fileOffset(LIBSSL, callee);
      expect(plans.find((p) => p.name === plain)!.probes).toEqual([
        { program: enter, at, retprobe: false },
        { program: 'tls_ssl_ret', at, retprobe: true },
      ]);
      // Probed once: the twin goes through the same probes.
      expect(plans.find((p) => p.name === twin)!.probes).toEqual([]);
    }
  });

  it('GnuTLS: gnutls_record_send at its tail jump (emulated, return address still on top), gnutls_record_recv on its entry (`sub` first)', () => {
    const [send, recv] = plan(LIBGNUTLS, 'gnutls', GNUTLS);
    const jump = objdump(LIBGNUTLS, 'gnutls_record_send').find(([, text]) => text.startsWith('jmp'))!;
    expect(send).toMatchObject({ name: 'gnutls_record_send', mode: 'site' });
    expect(send.probes).toEqual([
      { program: 'tls_gnutls_send', at: fileOffset(LIBGNUTLS, jump[0]), retprobe: false },
      { program: 'tls_gnutls_ret', at: fileOffset(LIBGNUTLS, jump[0]), retprobe: true },
    ]);
    expect(recv).toMatchObject({ name: 'gnutls_record_recv', mode: 'entry', why: expect.stringMatching(/^`sub rsp, 8` at \+0 comes first and is single-stepped/) });
    expect(recv.probes).toEqual(entryProbes('gnutls_record_recv', 'tls_gnutls_recv', 'tls_gnutls_ret'));
  });

  it('HEPBPF_TLS_PROBES=entry: every function on its entry and return, as before sites were chosen', () => {
    const plans = plan(LIBSSL, 'openssl', OPENSSL, true);
    expect(plans.map((p) => [p.mode, p.why])).toEqual(OPENSSL.map(() => ['entry', 'HEPBPF_TLS_PROBES=entry']));
    expect(plans[0].probes).toEqual(entryProbes('SSL_write', 'tls_ssl_write', 'tls_ssl_ret'));
  });
});

describe('shapes that keep the entry + return probes', () => {
  let dir: string;
  let lib: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-tls-sites-'));
    const asm = join(dir, 'shapes.s');
    writeFileSync(
      asm,
      `	.text
	.globl SSL_write, SSL_read, SSL_read_ex, gnutls_record_send, gnutls_record_recv
	.type SSL_write, @function
SSL_write: # single-stepped entry, no SSL_write_ex twin to share a callee with
	sub $8, %rsp
	call helper
	add $8, %rsp
	ret
	.size SSL_write, .-SSL_write
	.type SSL_read, @function
SSL_read:
	sub $8, %rsp
	call helper
	add $8, %rsp
	ret
	.size SSL_read, .-SSL_read
	.type SSL_read_ex, @function
SSL_read_ex: # changes its 4th argument before the call: the callee's arguments are not SSL_read_ex's
	sub $8, %rsp
	xor %ecx, %ecx
	call helper
	add $8, %rsp
	ret
	.size SSL_read_ex, .-SSL_read_ex
	.type gnutls_record_send, @function
gnutls_record_send: # the first emulated instruction is a loop's branch back into the prefix
	xor %ecx, %ecx
1:	test %edx, %edx
	jne 1b
	jmp helper
	.size gnutls_record_send, .-gnutls_record_send
	.type gnutls_record_recv, @function
gnutls_record_recv: # overwrites its buffer argument before the first emulated instruction
	mov %rdx, %rsi
	jmp helper
	.size gnutls_record_recv, .-gnutls_record_recv
helper:
	push %rbx
	pop %rbx
	ret
`,
    );
    lib = join(dir, 'libshapes.so');
    execFileSync('cc', ['-shared', '-nostdlib', '-o', lib, asm]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('each refusal says why, once per function', () => {
    const openssl = plan(lib, 'openssl', ['SSL_write', 'SSL_read', 'SSL_read_ex']);
    const noSharedCallee = expect.stringMatching(/^`sub rsp, 8` at \+0 comes first and is single-stepped; no shared callee: SSL_read_ex changes its arguments before it calls 0x[0-9a-f]+$/);
    expect(openssl.map((p) => [p.name, p.mode, p.why])).toEqual([
      ['SSL_write', 'entry', '`sub rsp, 8` at +0 comes first and is single-stepped'],
      ['SSL_read', 'entry', noSharedCallee],
      ['SSL_read_ex', 'entry', noSharedCallee],
    ]);
    expect(openssl.flatMap((p) => p.probes).every((p) => typeof p.at === 'string')).toBe(true);
    const gnutls = plan(lib, 'gnutls', GNUTLS);
    expect(gnutls.map((p) => [p.name, p.mode, p.why])).toEqual([
      ['gnutls_record_send', 'entry', 'a branch back to +2'],
      ['gnutls_record_recv', 'entry', '`mov rsi, rdx` at +0 comes first and is single-stepped'],
    ]);
  });
});
