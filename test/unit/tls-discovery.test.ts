import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { definedFunctions } from '../../src/capture/elf-symbols.js';
import { TLS_FUNCTIONS, TlsDiscovery, type TlsTarget } from '../../src/capture/tls-discovery.js';

/** A library's path from the loader cache (Debian: libssl3, libgnutls30, freediameterd, libc6). */
function systemLibrary(soname: string): string {
  const line = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' })
    .split('\n')
    .find((l) => l.trim().startsWith(`${soname} (`) && l.includes('x86-64'));
  if (!line) throw new Error(`${soname} not in ldconfig -p: install its Debian package`);
  return line.split(' => ')[1].trim();
}

const LIBSSL = systemLibrary('libssl.so.3');
const LIBGNUTLS = systemLibrary('libgnutls.so.30');
const LIBC = systemLibrary('libc.so.6');
const LIBFDCORE = systemLibrary('libfdcore.so.6'); // freeDiameter's core: imports gnutls_record_send
const OPENSSL_CLI = '/usr/bin/openssl'; // imports SSL_write from libssl
const ALL = Object.values(TLS_FUNCTIONS).flat();

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'hepbpf-tls-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function scratchFile(name: string, content: Buffer | string): string {
  const path = join(scratch, name);
  writeFileSync(path, content);
  return path;
}

function firstBytes(path: string, length: number): Buffer {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(length);
  readSync(fd, buf, 0, length, 0);
  closeSync(fd);
  return buf;
}

/** A minimal ELF64 LE file whose only section besides the null one is a .symtab (and its strings). */
function elfWithSymbols(strings: string, symbols: Array<{ name: number; type: number; section: number }>): Buffer {
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header.set([2, 1, 1], 4); // 64-bit, little-endian, version 1
  header.writeBigUInt64LE(64n, 0x28); // e_shoff: right after this header
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(3, 0x3c);
  const symtab = Buffer.alloc(24 * (symbols.length + 1)); // entry 0 is the null symbol
  symbols.forEach((sym, i) => {
    symtab.writeUInt32LE(sym.name, 24 * (i + 1));
    symtab[24 * (i + 1) + 4] = 0x10 | sym.type; // STB_GLOBAL
    symtab.writeUInt16LE(sym.section, 24 * (i + 1) + 6);
  });
  const sections = Buffer.alloc(3 * 64);
  const symtabAt = 64 + sections.length;
  const section = (index: number, type: number, offset: number, size: number, link: number) => {
    sections.writeUInt32LE(type, index * 64 + 4);
    sections.writeBigUInt64LE(BigInt(offset), index * 64 + 0x18);
    sections.writeBigUInt64LE(BigInt(size), index * 64 + 0x20);
    sections.writeUInt32LE(link, index * 64 + 0x28);
  };
  section(1, 2, symtabAt, symtab.length, 2); // SHT_SYMTAB, strings in section 2
  section(2, 3, symtabAt + symtab.length, strings.length, 0); // SHT_STRTAB
  return Buffer.concat([header, sections, symtab, Buffer.from(strings, 'latin1')]);
}

describe('definedFunctions', () => {
  it('takes functions and IFUNCs defined in a section, including names sharing a longer string\'s tail', () => {
    const strings = '\0SSL_write\0xSSL_write\0SSL_read\0SSL_read_ex\0gnutls_record_send\0';
    const at = (name: string) => strings.indexOf(`${name}\0`);
    const elf = elfWithSymbols(strings, [
      { name: at('xSSL_write'), type: 2, section: 1 }, // STT_FUNC, another name
      { name: at('xSSL_write') + 1, type: 2, section: 1 }, // "SSL_write" as the tail of "xSSL_write", not its first occurrence
      { name: at('SSL_read'), type: 1, section: 1 }, // STT_OBJECT: not a function
      { name: at('SSL_read_ex'), type: 10, section: 1 }, // STT_GNU_IFUNC
      { name: at('gnutls_record_send'), type: 2, section: 0 }, // SHN_UNDEF: imported
    ]);
    expect(definedFunctions(scratchFile('synthetic.so', elf), ALL)).toEqual(new Set(['SSL_write', 'SSL_read_ex']));
  });


  it('finds OpenSSL linked into the node executable (.dynsym and .symtab of a 100 MB file)', () => {
    expect(definedFunctions(process.execPath, ALL)).toEqual(new Set(TLS_FUNCTIONS.openssl));
  });

  it('finds the functions libssl.so.3 and libgnutls.so.30 define', () => {
    expect(definedFunctions(LIBSSL, ALL)).toEqual(new Set(TLS_FUNCTIONS.openssl));
    expect(definedFunctions(LIBGNUTLS, ALL)).toEqual(new Set(TLS_FUNCTIONS.gnutls));
  });

  it('does not count a function a file only imports', () => {
    expect(definedFunctions(OPENSSL_CLI, ALL)).toEqual(new Set());
    expect(definedFunctions(LIBFDCORE, ALL)).toEqual(new Set());
  });

  it('gives an empty set for a non-ELF, empty, truncated, 32-bit or corrupt file', () => {
    const elf = firstBytes(LIBSSL, 4096);
    const elf32 = Buffer.from(elf);
    elf32[4] = 1;
    const tablePastEnd = Buffer.from(elf);
    tablePastEnd.writeBigUInt64LE(0xffffffffffn, 0x28); // e_shoff
    for (const path of [
      scratchFile('text', 'not an ELF file\n'),
      scratchFile('empty', ''),
      scratchFile('truncated', elf.subarray(0, 100)),
      scratchFile('elf32', elf32),
      scratchFile('table-past-end', tablePastEnd),
    ]) {
      expect(definedFunctions(path, ALL), path).toEqual(new Set());
    }
  });

  it('throws when the file cannot be opened: the caller decides what that means', () => {
    expect(() => definedFunctions(join(scratch, 'missing'), ALL)).toThrow(/ENOENT/);
  });
});

interface FakeProcess {
  maps?: string[]; // none: the process exited before its maps were read
  mapFiles?: Record<string, string>; // /proc/PID/map_files/RANGE -> the file it opens
}

/** A procRoot with /proc/PID/maps files, and /proc/PID/root linked to the real / so the mapped paths open real libraries. */
function fakeProc(processes: Record<number, FakeProcess>): string {
  const root = mkdtempSync(join(scratch, 'proc-'));
  for (const [pid, p] of Object.entries(processes)) writeFakeProcess(root, Number(pid), p);
  return root;
}

function writeFakeProcess(root: string, pid: number, p: FakeProcess): void {
  const dir = join(root, String(pid));
  mkdirSync(join(dir, 'map_files'), { recursive: true });
  rmSync(join(dir, 'root'), { force: true });
  symlinkSync('/', join(dir, 'root'));
  if (p.maps) writeFileSync(join(dir, 'maps'), p.maps.join('\n') + '\n');
  for (const [range, target] of Object.entries(p.mapFiles ?? {})) symlinkSync(target, join(dir, 'map_files', range));
}

let nextRange = 0x7f0000000000;
/** A /proc/PID/maps line as the kernel prints it. */
function mapsLine(perms: string, inode: number, path: string, dev = 'fd:01'): string {
  const start = (nextRange += 0x10000);
  return `${start.toString(16)}-${(start + 0x1000).toString(16)} ${perms} 00002000 ${dev} ${inode}                   ${path}`;
}
const rangeOf = (line: string) => line.split(' ')[0];

function fakeLog() {
  return { warn: vi.fn(), info: vi.fn(), debug: vi.fn() };
}

function discovery(procRoot: string, opts: { selfPid?: number; attach?: (t: TlsTarget) => void } = {}) {
  const attached: TlsTarget[] = []; // the targets whose attach returned
  const log = fakeLog();
  const attach = (t: TlsTarget) => {
    opts.attach?.(t);
    attached.push(t);
  };
  return { d: new TlsDiscovery({ procRoot, selfPid: opts.selfPid ?? 1, log, attach }), attached, log };
}

describe('TlsDiscovery on a fixture /proc', () => {
  it('attaches each defining file once, however many processes map it, and nothing else', () => {
    const proc = fakeProc({
      100: {
        maps: [
          mapsLine('r--p', 1001, LIBSSL),
          mapsLine('r-xp', 1001, LIBSSL),
          mapsLine('r-xp', 1010, OPENSSL_CLI),
          mapsLine('r-xp', 1011, LIBC),
          mapsLine('r--p', 1012, LIBGNUTLS), // not executable
          mapsLine('rw-p', 0, '[heap]', '00:00'),
          mapsLine('r-xp', 0, '[vdso]', '00:00'),
        ],
      },
      101: { maps: [mapsLine('r-xp', 1001, LIBSSL), mapsLine('r-xp', 1002, process.execPath), mapsLine('r-xp', 1003, LIBGNUTLS), mapsLine('r-xp', 1013, LIBFDCORE)] },
    });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    d.scanAll();
    const openssl = [...TLS_FUNCTIONS.openssl];
    expect(attached.map((t) => ({ ...t }))).toEqual([
      { key: 'fd:01:1001', path: `${proc}/100/root${LIBSSL}`, mappedPath: LIBSSL, kind: 'openssl', functions: openssl, pid: 100 },
      { key: 'fd:01:1002', path: `${proc}/101/root${process.execPath}`, mappedPath: process.execPath, kind: 'openssl', functions: openssl, pid: 101 },
      { key: 'fd:01:1003', path: `${proc}/101/root${LIBGNUTLS}`, mappedPath: LIBGNUTLS, kind: 'gnutls', functions: [...TLS_FUNCTIONS.gnutls], pid: 101 },
    ]);
    expect(d.stats()).toEqual({ filesChecked: 6, attached: 3, failed: 0 });
    expect(log.warn).not.toHaveBeenCalled();
  });

  it('warns once about a deleted TLS library, not about other deleted files', () => {
    const deletedSsl = mapsLine('r-xp', 2001, `${LIBSSL} (deleted)`);
    const deletedLibc = mapsLine('r-xp', 2002, `${LIBC} (deleted)`);
    const proc = fakeProc({
      100: { maps: [deletedSsl, deletedLibc], mapFiles: { [rangeOf(deletedSsl)]: LIBSSL, [rangeOf(deletedLibc)]: LIBC } },
      101: { maps: [deletedSsl], mapFiles: { [rangeOf(deletedSsl)]: LIBSSL } },
    });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    d.scanAll();
    expect(attached).toEqual([]);
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn.mock.calls[0][0]).toMatchObject({ pid: 100, path: LIBSSL });
    expect(log.warn.mock.calls[0][1]).toMatch(/deleted or replaced/);
    expect(d.stats()).toEqual({ filesChecked: 2, attached: 0, failed: 1 });
  });

  it('warns once with the path and reason when attach throws, does not retry, attaches the rest', () => {
    const proc = fakeProc({
      100: { maps: [mapsLine('r-xp', 1003, LIBGNUTLS), mapsLine('r-xp', 1001, LIBSSL)] },
      101: { maps: [mapsLine('r-xp', 1003, LIBGNUTLS), mapsLine('r-xp', 1002, process.execPath)] },
    });
    const tried: string[] = [];
    const { d, attached, log } = discovery(proc, {
      attach: (t) => {
        tried.push(t.key);
        if (t.kind === 'gnutls') throw new Error('uprobe: permission denied');
      },
    });
    d.scanAll();
    d.scanAll();
    d.processChanged(101);
    expect(tried).toEqual(['fd:01:1003', 'fd:01:1001', 'fd:01:1002']);
    expect(attached.map((t) => t.key)).toEqual(['fd:01:1001', 'fd:01:1002']);
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn.mock.calls[0][0]).toMatchObject({ path: `${proc}/100/root${LIBGNUTLS}`, reason: 'uprobe: permission denied' });
    expect(d.stats()).toEqual({ filesChecked: 3, attached: 2, failed: 1 });
    d.close();
  });

  it('is silent about a process that exited, and never scans itself', () => {
    const proc = fakeProc({ 100: {}, 104: { maps: [mapsLine('r-xp', 3001, LIBSSL)] } });
    const { d, attached, log } = discovery(proc, { selfPid: 104 });
    d.scanAll();
    d.scanPid(104);
    d.scanPid(999); // no /proc entry at all
    expect(attached).toEqual([]);
    expect(d.stats().filesChecked).toBe(0);
    expect(log.warn).not.toHaveBeenCalled();
    expect(log.debug).not.toHaveBeenCalled();
  });
});

describe('TlsDiscovery.processChanged', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('rescans a process at most twice per burst of events, and again for a later burst', () => {
    vi.useFakeTimers();
    const { d } = discovery(fakeProc({ 100: { maps: [] } }));
    const scans = vi.spyOn(d, 'scanPid');
    for (let i = 0; i < 25; i++) {
      d.processChanged(100);
      vi.advanceTimersByTime(10);
    }
    vi.advanceTimersByTime(1000);
    expect(scans).toHaveBeenCalledTimes(2);
    d.processChanged(100);
    vi.advanceTimersByTime(1000);
    expect(scans).toHaveBeenCalledTimes(4);
    expect(scans.mock.calls.every(([pid]) => pid === 100)).toBe(true);
    d.close();
  });

  it('attaches a library the loader maps after the first rescan well within a second', () => {
    vi.useFakeTimers();
    const proc = fakeProc({ 100: { maps: [mapsLine('r-xp', 1011, LIBC)] } });
    const { d, attached } = discovery(proc);
    d.processChanged(100);
    vi.advanceTimersByTime(50);
    expect(d.stats().filesChecked).toBe(1);
    writeFakeProcess(proc, 100, { maps: [mapsLine('r-xp', 1011, LIBC), mapsLine('r-xp', 1001, LIBSSL)] });
    d.processChanged(100); // coalesced into the pending second rescan
    vi.advanceTimersByTime(950);
    expect(attached.map((t) => t.key)).toEqual(['fd:01:1001']);
    d.close();
  });

  it('does not scan after close', () => {
    vi.useFakeTimers();
    const { d } = discovery(fakeProc({ 100: { maps: [mapsLine('r-xp', 1001, LIBSSL)] } }));
    const scans = vi.spyOn(d, 'scanPid');
    d.processChanged(100);
    d.close();
    d.processChanged(100);
    vi.advanceTimersByTime(1000);
    expect(scans).not.toHaveBeenCalled();
    d.scanAll();
    expect(d.stats().filesChecked).toBe(0);
  });
});

/** Device and inode as /proc/PID/maps prints them ("fe:00:260689"). */
function mapsKey(path: string): string {
  const { dev, ino } = statSync(path);
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
}

describe('TlsDiscovery on real processes', () => {
  let server: Server;
  const connections: Socket[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    // A TCP peer that accepts and never answers: a TLS client started against it waits in its handshake.
    server = createServer((s) => connections.push(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
  });
  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
    for (const s of connections.splice(0)) s.destroy();
  });
  afterAll(() => server.close());

  const port = () => (server.address() as { port: number }).port;

  /** Starts a TLS client and waits until it has connected, so its libraries are mapped. */
  async function startClient(command: string, args: string[]): Promise<ChildProcess> {
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'ignore'] });
    children.push(child);
    const before = connections.length;
    await vi.waitFor(() => expect(connections.length).toBeGreaterThan(before), { timeout: 10_000, interval: 20 });
    return child;
  }

  function targetsOf(pid: number): TlsTarget[] {
    const { d, attached, log } = discovery('/proc', { selfPid: process.pid });
    d.scanPid(pid);
    expect(log.warn).not.toHaveBeenCalled();
    return attached;
  }

  it('finds OpenSSL inside a running node executable', async () => {
    const child = spawn(process.execPath, ['-e', `require('net').connect(${port()}, '127.0.0.1'); setTimeout(() => {}, 30000)`], { stdio: 'ignore' });
    children.push(child);
    await vi.waitFor(() => expect(connections.length).toBe(1), { timeout: 10_000, interval: 20 });
    const [target, ...more] = targetsOf(child.pid!);
    expect(more).toEqual([]);
    expect(target).toMatchObject({ kind: 'openssl', functions: [...TLS_FUNCTIONS.openssl], pid: child.pid, key: mapsKey(process.execPath) });
    expect(statSync(target.path).ino).toBe(statSync(process.execPath).ino);
  });

  it('finds libssl.so.3 in openssl s_client, not the openssl executable that imports it', async () => {
    const child = await startClient('openssl', ['s_client', '-connect', `127.0.0.1:${port()}`]);
    const targets = targetsOf(child.pid!);
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({ kind: 'openssl', functions: [...TLS_FUNCTIONS.openssl], pid: child.pid, key: mapsKey(LIBSSL) });
    expect(targets[0].path).toBe(`/proc/${child.pid}/root${targets[0].mappedPath}`);
    expect(statSync(targets[0].path).ino).toBe(statSync(LIBSSL).ino);
  });

  it('finds libgnutls.so.30 in gnutls-cli (Debian gnutls-bin)', async () => {
    const child = await startClient('gnutls-cli', ['--insecure', '-p', String(port()), '127.0.0.1']);
    const targets = targetsOf(child.pid!);
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({ kind: 'gnutls', functions: [...TLS_FUNCTIONS.gnutls], pid: child.pid, key: mapsKey(LIBGNUTLS) });
    expect(statSync(targets[0].path).ino).toBe(statSync(LIBGNUTLS).ino);
  });
});
