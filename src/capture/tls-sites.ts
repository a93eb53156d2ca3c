import { release } from 'node:os';
import { disassemble, type Instruction } from '../bpf/libbpf.js';
import { codeAt, functionSymbols, type FunctionSymbol } from './elf-symbols.js';
import type { TlsLibraryKind } from './tls-discovery.js';

/**
 * Where the uprobes of one TLS library file go. A uprobe on an instruction the kernel cannot
 * emulate is single-stepped out of line, and on a VM that debug trap costs ~20 µs per call; on an
 * emulated one (call, jmp, jcc, push, nop: arch/x86/kernel/uprobes.c) it costs under 1 µs. Today's
 * probes sit on each function's first instruction (`sub $0x18,%rsp` in Debian's libssl 3), so each
 * function is decoded with capstone and its probes moved to an emulated instruction where the
 * arguments and the return address are provably the same as at the entry, or to the internal
 * function that it and its `_ex` twin both call. Anything not proven safe keeps today's entry +
 * return probes.
 */

/** Each TLS function and the programs of bpf/tls.bpf.h that hook its entry and its return. */
export const PROGRAMS: Record<string, { enter: string; ret: string }> = {
  SSL_write: { enter: 'tls_ssl_write', ret: 'tls_ssl_ret' },
  SSL_read: { enter: 'tls_ssl_read', ret: 'tls_ssl_ret' },
  SSL_write_ex: { enter: 'tls_ssl_write_ex', ret: 'tls_ssl_ret' },
  SSL_read_ex: { enter: 'tls_ssl_read_ex', ret: 'tls_ssl_ret' },
  gnutls_record_send: { enter: 'tls_gnutls_send', ret: 'tls_gnutls_ret' },
  gnutls_record_recv: { enter: 'tls_gnutls_recv', ret: 'tls_gnutls_ret' },
  // handshakes, for failures (bpf/conn_events.bpf.h)
  SSL_do_handshake: { enter: 'tls_ssl_do_handshake', ret: 'tls_ssl_ret' },
  SSL_connect: { enter: 'tls_ssl_connect', ret: 'tls_ssl_ret' },
  SSL_accept: { enter: 'tls_ssl_accept', ret: 'tls_ssl_ret' },
  gnutls_handshake: { enter: 'tls_gnutls_handshake', ret: 'tls_gnutls_ret' },
};

/** The argument registers each entry program reads (x86-64 SysV: rdi, rsi, rdx, rcx...). */
const ARGUMENTS: Record<string, readonly string[]> = {
  SSL_write: ['rdi', 'rsi'],
  SSL_read: ['rdi', 'rsi'],
  SSL_write_ex: ['rdi', 'rsi', 'rcx'],
  SSL_read_ex: ['rdi', 'rsi', 'rcx'],
  gnutls_record_send: ['rdi', 'rsi'],
  gnutls_record_recv: ['rdi', 'rsi'],
  SSL_do_handshake: ['rdi'],
  SSL_connect: ['rdi'],
  SSL_accept: ['rdi'],
  gnutls_handshake: ['rdi'],
};

/** OpenSSL's plain functions and their `_ex` twins, which forward (ssl, buf, num, &count) to one internal function. */
const EX_TWINS: Record<string, string> = { SSL_write: 'SSL_write_ex', SSL_read: 'SSL_read_ex' };

/** The environment variable that forces today's entry + return probes everywhere. */
export const PROBES_ENV = 'HEPBPF_TLS_PROBES';

export type ProbeMode = 'entry' | 'emulated-entry' | 'site' | 'callee';

/** One uprobe: a program on a function's name (its entry) or on a file offset. */
export interface Probe {
  program: string;
  at: string | number;
  retprobe: boolean;
}

/** How one function is probed and why. */
export interface FunctionPlan {
  name: string;
  /** entry: first instruction, single-stepped (today's probes); the others are emulated. */
  mode: ProbeMode;
  why: string;
  probes: Probe[];
}

// A function body longer than this is not decoded (OpenSSL's and GnuTLS's are under 1 KiB).
const MAX_BODY_BYTES = 64 << 10;
const FIRST_INSTRUCTIONS_BYTES = 32;
// Calls out of SSL_write besides the internal one (Debian: 3 error-reporting imports and __stack_chk_fail); each is decoded.
const MAX_OTHER_CALLS = 16;

/** The kernel release as [major, minor]. */
function kernelVersion(): [number, number] {
  const [major, minor] = release().split('.').map((n) => Number.parseInt(n, 10));
  return [major || 0, minor || 0];
}

/**
 * Whether the running kernel's x86 uprobes emulate `insn` instead of single-stepping it, as
 * arch_uprobe_analyze_insn() decides: branch_setup_xol_ops() takes call/jmp rel and jcc without a
 * 0x66 prefix, and NOP (0x90; NOPL 0f 1f /0 since 6.16); push_setup_xol_ops() takes `push reg`,
 * one byte or REX.B 0x41 + one byte (since 4.18). Returns what it is, or undefined.
 */
export function emulatedBy(kernel: [number, number], insn: Instruction): string | undefined {
  const [op1, op2] = insn.opcode;
  const no66 = !insn.prefixes.includes(0x66);
  if (insn.mnemonic === 'nop' && (op1 === 0x90 || (op1 === 0x0f && op2 === 0x1f && (kernel[0] > 6 || (kernel[0] === 6 && kernel[1] >= 16)))))
    return 'nop';
  if (no66 && insn.target !== undefined && (op1 === 0xe8 || op1 === 0xe9 || op1 === 0xeb || (op1 >= 0x70 && op1 <= 0x7f) || (op1 === 0x0f && op2 >= 0x80 && op2 <= 0x8f)))
    return op1 === 0xe8 ? 'call' : 'jump';
  if (insn.mnemonic === 'push' && op1 >= 0x50 && op1 <= 0x57 && (insn.size === 1 || (insn.size === 2 && insn.rex === 0x41)) && insn.prefixes.length === 0)
    return 'push';
  return undefined;
}

/** The 64-bit register that a register name (eax, r8d, sil...) is part of. */
function fullRegister(name: string): string {
  let m = /^[re]?([abcd])[xlh]$/.exec(name);
  if (m) return `r${m[1]}x`;
  m = /^[re]?(si|di|sp|bp)l?$/.exec(name);
  if (m) return `r${m[1]}`;
  m = /^(r\d+)[dwb]?$/.exec(name);
  return m ? m[1] : name;
}

const writesAny = (insn: Instruction, registers: readonly string[]) => insn.writes.some((r) => registers.includes(fullRegister(r)));
const isIndirect = (insn: Instruction) => (insn.groups.includes('jump') || insn.groups.includes('call')) && insn.target === undefined;
const text = (insn: Instruction) => `${insn.mnemonic} ${insn.operands}`.trim();
const hex = (n: number) => `0x${n.toString(16)}`;

/** One file being planned: its symbols and decoded code. */
class Code {
  constructor(
    private readonly fd: number,
    readonly symbols: Map<string, FunctionSymbol>,
  ) {}

  /** Decoded instructions at `address`, and the file offset of the first, or why not. */
  decode(address: number, length: number): { insns: Instruction[]; fileOffset: number } | string {
    const code = codeAt(this.fd, address, length);
    if ('refused' in code) return code.refused;
    return { insns: disassemble(code.bytes, address), fileOffset: code.fileOffset };
  }

  /** A whole function body, fully decoded, or why not. */
  body(name: string): { insns: Instruction[]; fileOffset: number; sym: FunctionSymbol } | string {
    const sym = this.symbols.get(name);
    if (!sym) return 'not defined';
    if (sym.ifunc) return 'an IFUNC';
    if (sym.size === 0 || sym.size > MAX_BODY_BYTES) return `symbol size ${sym.size}`;
    const decoded = this.decode(sym.address, sym.size);
    if (typeof decoded === 'string') return decoded;
    const decodedBytes = decoded.insns.reduce((n, i) => n + i.size, 0);
    if (decodedBytes !== sym.size) return `capstone decoded ${decodedBytes} of its ${sym.size} bytes`;
    return { ...decoded, sym };
  }

  /** Whether `address` is an import stub (PLT): `[endbr64;] [bnd] jmp qword ptr [rip + x]`. */
  isImportStub(address: number): boolean {
    const decoded = this.decode(address, 16);
    if (typeof decoded === 'string') return false;
    const insns = decoded.insns[0]?.mnemonic === 'endbr64' ? decoded.insns.slice(1) : decoded.insns;
    return insns[0]?.mnemonic === 'jmp' && /^qword ptr \[rip [+-] 0x[0-9a-f]+\]$/.test(insns[0].operands);
  }
}

/**
 * The first instruction of `name` that the kernel emulates, when every call reaches it with the
 * return address still at (%rsp) and the argument registers untouched: straight-line code from the
 * entry that writes neither, no branch into it, no indirect jump in the function. A probe and a
 * return probe there see what they would see at the entry. Returns the site or why there is none.
 */
function movedEntry(code: Code, kernel: [number, number], name: string): { fileOffset: number; insn: Instruction } | string {
  const body = code.body(name);
  if (typeof body === 'string') return body;
  const { insns, sym } = body;
  const at = insns.findIndex((i) => emulatedBy(kernel, i) !== undefined || i.groups.includes('ret') || isIndirect(i) || writesAny(i, ['rsp', ...ARGUMENTS[name]]));
  const site = insns[at];
  if (!site || !emulatedBy(kernel, site)) return site ? `\`${text(site)}\` at +${site.address - sym.address} comes first and is single-stepped` : 'no instruction the kernel emulates';
  // The entry itself: today's probe location, nothing to prove.
  if (at === 0) return { fileOffset: body.fileOffset, insn: site };
  if (insns.some(isIndirect)) return 'an indirect jump or call in it';
  const into = insns.find((i) => i.target !== undefined && i.target >= sym.address && i.target <= site.address);
  if (into) return `a branch back to +${into.target! - sym.address}`;
  return { fileOffset: body.fileOffset + (site.address - sym.address), insn: site };
}

/**
 * OpenSSL: the internal function that `plain` (SSL_write) and its `_ex` twin both call, e.g.
 * ssl_write_internal(ssl, buf, num, &count), when the kernel emulates its first instruction. The
 * twin's first branch must be that call, with its four argument registers untouched, so the callee
 * takes exactly SSL_write_ex's arguments and result (1, count at the 4th argument). Each of the two
 * must call it directly and leave otherwise only to import stubs (ERR_*, __stack_chk_fail), so
 * every byte they move goes through it. Returns its file offset or why not.
 */
function sharedCallee(code: Code, kernel: [number, number], plain: string): { fileOffset: number; address: number; insn: Instruction } | string {
  const twin = EX_TWINS[plain];
  const twinBody = code.body(twin);
  if (typeof twinBody === 'string') return `${twin}: ${twinBody}`;
  const first = twinBody.insns.findIndex((i) => i.groups.includes('jump') || i.groups.includes('call') || i.groups.includes('ret'));
  const call = twinBody.insns[first];
  if (!call?.groups.includes('call') || call.target === undefined) return `${twin} does not start by calling a function`;
  if (twinBody.insns.slice(0, first).some((i) => writesAny(i, ['rdi', 'rsi', 'rdx', 'rcx'])))
    return `${twin} changes its arguments before it calls ${hex(call.target)}`;
  const callee = call.target;
  for (const name of [plain, twin]) {
    const body = code.body(name);
    if (typeof body === 'string') return `${name}: ${body}`;
    const { insns, sym } = body;
    const inside = (a: number) => a >= sym.address && a < sym.address + sym.size;
    if (!insns.some((i) => i.groups.includes('call') && i.target === callee)) return `${name} does not call ${hex(callee)}`;
    const leaving = insns.filter((i) => (i.groups.includes('jump') || i.groups.includes('call')) && i.target !== callee && (i.target === undefined || !inside(i.target)));
    if (new Set(leaving.map((i) => i.target)).size > MAX_OTHER_CALLS) return `${name} calls more than ${MAX_OTHER_CALLS} other places`;
    const other = leaving.find((i) => i.target === undefined || !code.isImportStub(i.target));
    if (other) return `${name} also leaves by \`${text(other)}\``;
  }
  for (const sym of code.symbols.values()) {
    if (callee >= sym.address && callee < sym.address + sym.size) return `${hex(callee)} is inside a probed function`;
  }
  const decoded = code.decode(callee, FIRST_INSTRUCTIONS_BYTES);
  if (typeof decoded === 'string') return `${hex(callee)}: ${decoded}`;
  const entry = decoded.insns[0];
  if (!entry || !emulatedBy(kernel, entry)) return `the first instruction of ${hex(callee)}${entry ? ` (\`${text(entry)}\`)` : ''} is single-stepped`;
  return { fileOffset: decoded.fileOffset, address: callee, insn: entry };
}

const entryProbes = (name: string): Probe[] => [
  { program: PROGRAMS[name].enter, at: name, retprobe: false },
  { program: PROGRAMS[name].ret, at: name, retprobe: true },
];

/** `name` probed at its entry, or at a moved entry site; undefined when only the single-stepped entry is left. */
function emulatedPlan(code: Code, kernel: [number, number], name: string): FunctionPlan | string {
  const site = movedEntry(code, kernel, name);
  if (typeof site === 'string') return site;
  const sym = code.symbols.get(name)!;
  const offset = site.insn.address - sym.address;
  const what = `\`${text(site.insn)}\``;
  if (offset === 0) return { name, mode: 'emulated-entry', why: `its first instruction ${what} is emulated`, probes: entryProbes(name) };
  const { enter, ret } = PROGRAMS[name];
  return {
    name,
    mode: 'site',
    why: `${what} at +${offset}, emulated, arguments and return address as at the entry`,
    probes: [
      { program: enter, at: site.fileOffset, retprobe: false },
      { program: ret, at: site.fileOffset, retprobe: true },
    ],
  };
}

/**
 * The probes for the TLS functions `functions` (of library `kind`) of the open file `fd`: on
 * emulated instructions where that is proven safe, else today's entry + return. forceEntry: today's
 * probes everywhere. Never throws: a file that cannot be read or decoded gets today's probes.
 */
export function planProbes(fd: number, kind: TlsLibraryKind, functions: readonly string[], forceEntry: boolean): FunctionPlan[] {
  const fallback = (name: string, why: string): FunctionPlan => ({ name, mode: 'entry', why, probes: entryProbes(name) });
  if (forceEntry) return functions.map((name) => fallback(name, `${PROBES_ENV}=entry`));
  if (process.arch !== 'x64') return functions.map((name) => fallback(name, `sites are chosen on x86-64 only, not ${process.arch}`));
  const symbols = functionSymbols(fd, functions);
  if ('refused' in symbols) return functions.map((name) => fallback(name, symbols.refused));
  const code = new Code(fd, symbols.functions);
  const kernel = kernelVersion();
  const plans = new Map<string, FunctionPlan>();
  const reasons = new Map<string, string>();
  for (const name of functions) {
    try {
      const plan = emulatedPlan(code, kernel, name);
      if (typeof plan === 'string') reasons.set(name, plan);
      else plans.set(name, plan);
    } catch (err) {
      reasons.set(name, err instanceof Error ? err.message : String(err));
    }
  }
  // OpenSSL: a pair whose entries are single-stepped is probed once, in the function both call.
  // Both or neither: with only one moved there, the other's own probes would see its bytes twice.
  if (kind === 'openssl') {
    for (const [plain, twin] of Object.entries(EX_TWINS)) {
      if (!functions.includes(plain) || !functions.includes(twin) || (plans.has(plain) && plans.has(twin))) continue;
      let callee: ReturnType<typeof sharedCallee>;
      try {
        callee = sharedCallee(code, kernel, plain);
      } catch (err) {
        callee = err instanceof Error ? err.message : String(err);
      }
      if (typeof callee === 'string') {
        for (const name of [plain, twin]) if (!plans.has(name)) reasons.set(name, `${reasons.get(name)}; no shared callee: ${callee}`);
        continue;
      }
      const probes: Probe[] = [
        { program: PROGRAMS[twin].enter, at: callee.fileOffset, retprobe: false },
        { program: PROGRAMS[twin].ret, at: callee.fileOffset, retprobe: true },
      ];
      const why = `both ${plain} and ${twin} go through ${hex(callee.address)}, whose first instruction \`${text(callee.insn)}\` is emulated`;
      plans.set(plain, { name: plain, mode: 'callee', why, probes });
      plans.set(twin, { name: twin, mode: 'callee', why, probes: [] });
    }
  }
  return functions.map((name) => plans.get(name) ?? fallback(name, reasons.get(name) ?? 'no site'));
}
