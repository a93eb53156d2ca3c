import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { definedFunctions, type ElfFunctions } from '../../src/capture/elf-symbols.js';
import { TLS_FUNCTIONS, TlsDiscovery, type TlsTarget } from '../../src/capture/tls-discovery.js';
import { mapsKey } from '../helpers/maps.js';
import { systemLibrary } from '../helpers/libraries.js';

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

/** definedFunctions on the file at `path`. */
function functionsIn(path: string): ElfFunctions {
  const fd = openSync(path, 'r');
  try {
    return definedFunctions(fd, ALL);
  } finally {
    closeSync(fd);
  }
}
const defines = (names: Iterable<string>) => ({ defined: new Set(names) });

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
    expect(functionsIn(scratchFile('synthetic.so', elf))).toEqual(defines(['SSL_write', 'SSL_read_ex']));
  });


  it('finds OpenSSL linked into the node executable (.dynsym and .symtab of a 100 MB file)', () => {
    expect(functionsIn(process.execPath)).toEqual(defines(TLS_FUNCTIONS.openssl));
  });

  it('finds the functions libssl.so.3 and libgnutls.so.30 define', () => {
    expect(functionsIn(LIBSSL)).toEqual(defines(TLS_FUNCTIONS.openssl));
    expect(functionsIn(LIBGNUTLS)).toEqual(defines(TLS_FUNCTIONS.gnutls));
  });

  it('does not count a function a file only imports', () => {
    expect(functionsIn(OPENSSL_CLI)).toEqual(defines([]));
    expect(functionsIn(LIBFDCORE)).toEqual(defines([]));
  });

  it('finds nothing in a non-ELF, empty or 32-bit file', () => {
    const elf32 = firstBytes(LIBSSL, 4096);
    elf32[4] = 1;
    for (const path of [scratchFile('text', 'not an ELF file\n'), scratchFile('empty', ''), scratchFile('elf32', elf32)]) {
      expect(functionsIn(path), path).toEqual(defines([]));
    }
  });

  /** libssl.so.3 with `patch` applied to a copy of its first `length` bytes (its whole size by default). */
  function patchedLibssl(name: string, patch: (elf: Buffer) => void, length = statSync(LIBSSL).size): string {
    const elf = firstBytes(LIBSSL, length);
    patch(elf);
    return scratchFile(name, elf);
  }
  const shoff = (elf: Buffer) => Number(elf.readBigUInt64LE(0x28));
  /** Section header field at `field` of the section of type `type`. */
  const sectionOf = (elf: Buffer, type: number) => {
    for (let at = shoff(elf); at < elf.length; at += 64) if (elf.readUInt32LE(at + 4) === type) return at;
    throw new Error(`no section of type ${type}`);
  };

  it('refuses, quickly and with the reason, files that are truncated, corrupt or over a limit', () => {
    const cases: Array<[string, string, RegExp]> = [
      [patchedLibssl('truncated', () => {}, 100), 'cut after the ELF header', /section headers past the end/],
      [patchedLibssl('table-past-end', (e) => e.writeBigUInt64LE(0xffffffffffn, 0x28)), 'e_shoff past the end', /section headers past the end/],
      [patchedLibssl('huge-offset', (e) => e.writeBigUInt64LE(0xfffffffffffffff0n, 0x28)), 'e_shoff near 2^64', /section headers past the end/],
      [patchedLibssl('sections', (e) => e.writeUInt16LE(65535, 0x3c)), '65,535 sections', /65535 sections/],
      [patchedLibssl('no-sections', (e) => e.writeUInt16LE(0, 0x3c)), 'e_shnum 0', /0 sections/],
      [patchedLibssl('dynsym-past-end', (e) => e.writeBigUInt64LE(16n << 20n, sectionOf(e, 11) + 0x20)), '.dynsym size past the end', /symbol table past the end/],
      [patchedLibssl('dynsym-huge', (e) => e.writeBigUInt64LE(1n << 40n, sectionOf(e, 11) + 0x20)), '.dynsym of 2^40 bytes', /more than 4000000 symbols/],
      [patchedLibssl('dynstr-link', (e) => e.writeUInt32LE(60000, sectionOf(e, 11) + 0x28)), '.dynsym linked to no section', /without its string table/],
      [patchedLibssl('dynstr-past-end', (e) => e.writeBigUInt64LE(1n << 62n, sectionOf(e, 3) + 0x18)), '.dynstr offset out of range', /string table past the end/],
    ];
    for (const [path, what, reason] of cases) {
      const t0 = performance.now();
      const result = functionsIn(path);
      expect(performance.now() - t0, what).toBeLessThan(100);
      expect(result, what).toEqual({ refused: expect.stringMatching(reason) });
    }
  });

  it('refuses, never throws, when the file cannot be read at all', () => {
    const fd = openSync(LIBSSL, 'r');
    closeSync(fd);
    expect(definedFunctions(fd, ALL)).toEqual({ refused: expect.stringMatching(/EBADF/) });
  });

  it('reads a 4 MiB file of 65,535 symbol tables in linear time (only the first .dynsym)', () => {
    const count = 65_535;
    const strings = '\0SSL_write\0';
    const header = Buffer.alloc(64);
    header.writeUInt32BE(0x7f454c46, 0);
    header.set([2, 1, 1], 4);
    header.writeBigUInt64LE(64n, 0x28);
    header.writeUInt16LE(64, 0x3a);
    header.writeUInt16LE(count, 0x3c);
    const sections = Buffer.alloc(count * 64);
    const dataAt = 64 + sections.length;
    for (let i = 1; i < count; i++) {
      sections.writeUInt32LE(i === 1 ? 3 : 11, i * 64 + 4); // section 1 the strings, every other one a .dynsym of the whole file
      sections.writeBigUInt64LE(BigInt(i === 1 ? dataAt : 0), i * 64 + 0x18);
      sections.writeBigUInt64LE(BigInt(i === 1 ? strings.length : dataAt), i * 64 + 0x20);
      sections.writeUInt32LE(1, i * 64 + 0x28);
    }
    const path = scratchFile('65535-dynsym', Buffer.concat([header, sections, Buffer.from(strings, 'latin1')]));
    const t0 = performance.now();
    expect(functionsIn(path)).toEqual({ refused: '65535 sections (at most 4096 read)' });
    expect(performance.now() - t0).toBeLessThan(100);
    // Within the section limit, every .dynsym after the first is ignored: one pass over one table.
    const within = Buffer.concat([header, sections.subarray(0, 4096 * 64)]);
    within.writeUInt16LE(4096, 0x3c);
    const withinPath = scratchFile('4096-dynsym', Buffer.concat([within, Buffer.alloc(dataAt - within.length), Buffer.from(strings, 'latin1')]));
    const t1 = performance.now();
    expect(functionsIn(withinPath)).toEqual(defines([]));
    expect(performance.now() - t1).toBeLessThan(200);
  });

  it('refuses a sparse 2 GiB file claiming a 2 GiB symbol table in well under a second, without allocating it', () => {
    const path = patchedLibssl('sparse-2g', (e) => {
      e.writeBigUInt64LE(1n << 20n, sectionOf(e, 11) + 0x18); // .dynsym at 1 MiB...
      e.writeBigUInt64LE((2n << 30n) - (2n << 20n), sectionOf(e, 11) + 0x20); // ...of nearly 2 GiB, inside the file
    });
    truncateSync(path, 2 * 2 ** 30);
    const rss = process.memoryUsage().rss;
    const t0 = performance.now();
    expect(functionsIn(path)).toEqual({ refused: 'more than 4000000 symbols' });
    expect(performance.now() - t0).toBeLessThan(500);
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 << 20);
    rmSync(path);
  });

  it('reads at most 128 MiB of a sparse file whose tables are each under their limit, within its time budget', () => {
    const path = patchedLibssl('sparse-tables', (e) => {
      const dynstr = sectionOf(e, 3);
      e.writeBigUInt64LE(1n << 30n, dynstr + 0x18); // strings: 64 MiB of zeros at 1 GiB
      e.writeBigUInt64LE(64n << 20n, dynstr + 0x20);
    });
    truncateSync(path, 2 * 2 ** 30);
    const t0 = performance.now();
    expect(functionsIn(path)).toEqual(defines([])); // zeros name nothing: the symbol table is not even read
    expect(performance.now() - t0).toBeLessThan(2500);
    rmSync(path);
  });
});

interface FakeProcess {
  maps?: string[]; // none: the process exited before its maps were read
  root?: string; // the process's root directory, default the real /
  mapFiles?: Record<string, string>; // /proc/PID/map_files/RANGE -> the file it opens
}

/** A procRoot with /proc/PID/maps files, and /proc/PID/root linked to the real / (or the process's own root) so the mapped paths open real libraries. */
function fakeProc(processes: Record<number, FakeProcess>): string {
  const root = mkdtempSync(join(scratch, 'proc-'));
  for (const [pid, p] of Object.entries(processes)) writeFakeProcess(root, Number(pid), p);
  return root;
}

function writeFakeProcess(root: string, pid: number, p: FakeProcess): void {
  const dir = join(root, String(pid));
  mkdirSync(join(dir, 'map_files'), { recursive: true });
  rmSync(join(dir, 'root'), { force: true });
  symlinkSync(p.root ?? '/', join(dir, 'root'));
  if (p.maps) writeFileSync(join(dir, 'maps'), p.maps.join('\n') + '\n');
  for (const [range, target] of Object.entries(p.mapFiles ?? {})) symlinkSync(target, join(dir, 'map_files', range));
}

let nextRange = 0x7f0000000000;
/** A /proc/PID/maps line as the kernel prints it, by default with the real device and inode of the file. */
function mapsLine(perms: string, path: string, key = mapsKey(path.replace(/ \(deleted\)$/, ''))): string {
  const start = (nextRange += 0x10000);
  const dev = key.slice(0, key.lastIndexOf(':'));
  const inode = key.slice(key.lastIndexOf(':') + 1);
  return `${start.toString(16)}-${(start + 0x1000).toString(16)} ${perms} 00002000 ${dev} ${inode}                   ${path}`;
}
/** What attach got as the file's path, which is open only during attach: the inode it opens. */
const openedInode = (path: string) => `inode ${statSync(path).ino}`;
const rangeOf = (line: string) => line.split(' ')[0];

function fakeLog() {
  return { warn: vi.fn(), info: vi.fn(), debug: vi.fn() };
}

function discovery(procRoot: string, opts: { selfPid?: number; attach?: (t: TlsTarget) => void } = {}) {
  const attached: TlsTarget[] = []; // the targets whose attach returned
  const log = fakeLog();
  const attach = (t: TlsTarget) => {
    opts.attach?.(t);
    attached.push({ ...t, path: openedInode(t.path) });
  };
  return { d: new TlsDiscovery({ procRoot, selfPid: opts.selfPid ?? 1, log, attach }), attached, log };
}

describe('TlsDiscovery on a fixture /proc', () => {
  it('attaches each defining file once, however many processes map it, and nothing else', () => {
    const proc = fakeProc({
      100: {
        maps: [
          mapsLine('r--p', LIBSSL),
          mapsLine('r-xp', LIBSSL),
          mapsLine('r-xp', OPENSSL_CLI),
          mapsLine('r-xp', LIBC),
          mapsLine('r--p', LIBGNUTLS), // not executable
          mapsLine('rw-p', '[heap]', '00:00:0'),
          mapsLine('r-xp', '[vdso]', '00:00:0'),
        ],
      },
      101: { maps: [mapsLine('r-xp', LIBSSL), mapsLine('r-xp', process.execPath), mapsLine('r-xp', LIBGNUTLS), mapsLine('r-xp', LIBFDCORE)] },
    });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    d.scanAll();
    const openssl = [...TLS_FUNCTIONS.openssl];
    expect(attached.map((t) => ({ ...t }))).toEqual([
      { key: mapsKey(LIBSSL), path: openedInode(LIBSSL), mappedPath: LIBSSL, kind: 'openssl', functions: openssl, pid: 100 },
      { key: mapsKey(process.execPath), path: openedInode(process.execPath), mappedPath: process.execPath, kind: 'openssl', functions: openssl, pid: 101 },
      { key: mapsKey(LIBGNUTLS), path: openedInode(LIBGNUTLS), mappedPath: LIBGNUTLS, kind: 'gnutls', functions: [...TLS_FUNCTIONS.gnutls], pid: 101 },
    ]);
    expect(d.stats()).toEqual({ filesChecked: 6, attached: 3, failed: 0, refused: 0 });
    expect(log.warn).not.toHaveBeenCalled();
  });

  it('warns once about a deleted TLS library, not about other deleted files', () => {
    const deletedSsl = mapsLine('r-xp', `${LIBSSL} (deleted)`);
    const deletedLibc = mapsLine('r-xp', `${LIBC} (deleted)`);
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
    expect(d.stats()).toEqual({ filesChecked: 2, attached: 0, failed: 1, refused: 0 });
  });

  it('warns once with the path and reason when attach throws, does not retry, attaches the rest', () => {
    const proc = fakeProc({
      100: { maps: [mapsLine('r-xp', LIBGNUTLS), mapsLine('r-xp', LIBSSL)] },
      101: { maps: [mapsLine('r-xp', LIBGNUTLS), mapsLine('r-xp', process.execPath)] },
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
    expect(tried).toEqual([LIBGNUTLS, LIBSSL, process.execPath].map(mapsKey));
    expect(attached.map((t) => t.key)).toEqual([LIBSSL, process.execPath].map(mapsKey));
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn.mock.calls[0][0]).toMatchObject({ pid: 100, path: LIBGNUTLS, reason: 'uprobe: permission denied' });
    expect(d.stats()).toEqual({ filesChecked: 3, attached: 2, failed: 1, refused: 0 });
    d.close();
  });

  /** A root directory (a jail) holding `files` at the paths of the mapped files. */
  function jail(files: Record<string, (path: string) => void>): string {
    const root = mkdtempSync(join(scratch, 'jail-'));
    for (const [path, make] of Object.entries(files)) {
      mkdirSync(join(root, dirname(path)), { recursive: true });
      make(join(root, path));
    }
    return root;
  }

  it('refuses what a process puts at its mapped library\'s path in its own root, without blocking, and still probes that library for others', () => {
    const libsslLine = mapsLine('r-xp', LIBSSL);
    const proc = fakeProc({
      // Each maps the real libssl, then changed its root to a directory where that path is something else.
      100: { maps: [libsslLine], root: jail({ [LIBSSL]: (p) => execFileSync('mkfifo', [p]) }) },
      101: { maps: [libsslLine], root: jail({ [LIBSSL]: (p) => writeFileSync(p, 'not the library\n') }) },
      102: { maps: [libsslLine], root: jail({ [LIBSSL]: (p) => writeFileSync(p, firstBytes(LIBSSL, statSync(LIBSSL).size)) }) }, // a copy: another inode
      103: { maps: [libsslLine] }, // a process of the host using libssl
    });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    d.scanAll();
    expect(attached.map((t) => ({ pid: t.pid, key: t.key, path: t.path }))).toEqual([{ pid: 103, key: mapsKey(LIBSSL), path: openedInode(LIBSSL) }]);
    expect(d.stats()).toEqual({ filesChecked: 1, attached: 1, failed: 0, refused: 3 });
    expect(log.warn.mock.calls.map(([fields, msg]) => [fields.pid, msg, fields.reason])).toEqual([
      [100, 'TLS discovery: file refused', expect.stringMatching(/not a regular file.*EINVAL/)],
      [101, 'TLS discovery: file refused', expect.stringMatching(/not the file the process mapped/)],
      [102, 'TLS discovery: file refused', expect.stringMatching(/not the file the process mapped/)],
    ]);
  });

  it('resolves absolute symlinks and .. inside the process\'s root, never reaching the host\'s files', () => {
    const secret = scratchFile('root-only', firstBytes(LIBSSL, statSync(LIBSSL).size));
    const proc = fakeProc({
      100: { maps: [mapsLine('r-xp', '/lib/libssl.so.3', mapsKey(secret))], root: jail({ '/lib/libssl.so.3': (p) => symlinkSync(secret, p) }) },
      101: { maps: [mapsLine('r-xp', '/lib/libssl.so.3', mapsKey(secret))], root: jail({ '/lib/libssl.so.3': (p) => symlinkSync(`../../../../../../../..${secret}`, p) }) },
    });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    expect(attached).toEqual([]);
    expect(d.stats()).toEqual({ filesChecked: 0, attached: 0, failed: 0, refused: 0 }); // not there inside the root: as if the process had exited
    expect(log.warn).not.toHaveBeenCalled();
  });

  it('warns once about a file it refuses to read and counts it', () => {
    const corrupt = scratchFile('corrupt.so', firstBytes(LIBSSL, 4096));
    const proc = fakeProc({ 100: { maps: [mapsLine('r-xp', corrupt)] }, 101: { maps: [mapsLine('r-xp', corrupt)] } });
    const { d, attached, log } = discovery(proc);
    d.scanAll();
    d.scanAll();
    expect(attached).toEqual([]);
    expect(d.stats()).toEqual({ filesChecked: 1, attached: 0, failed: 0, refused: 1 });
    expect(log.warn).toHaveBeenCalledTimes(1);
    expect(log.warn.mock.calls[0]).toEqual([{ pid: 100, path: corrupt, file: mapsKey(corrupt), reason: 'section headers past the end of the file' }, 'TLS discovery: file not read']);
  });

  it('is silent about a process that exited, and never scans itself', () => {
    const proc = fakeProc({ 100: {}, 104: { maps: [mapsLine('r-xp', LIBSSL)] } });
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
    const proc = fakeProc({ 100: { maps: [mapsLine('r-xp', LIBC)] } });
    const { d, attached } = discovery(proc);
    d.processChanged(100);
    vi.advanceTimersByTime(50);
    expect(d.stats().filesChecked).toBe(1);
    writeFakeProcess(proc, 100, { maps: [mapsLine('r-xp', LIBC), mapsLine('r-xp', LIBSSL)] });
    d.processChanged(100); // coalesced into the pending second rescan
    vi.advanceTimersByTime(950);
    expect(attached.map((t) => t.key)).toEqual([mapsKey(LIBSSL)]);
    d.close();
  });

  it('does not scan after close', () => {
    vi.useFakeTimers();
    const { d } = discovery(fakeProc({ 100: { maps: [mapsLine('r-xp', LIBSSL)] } }));
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
    expect(target.path).toBe(openedInode(process.execPath));
  });

  it('finds libssl.so.3 in openssl s_client, not the openssl executable that imports it', async () => {
    const child = await startClient('openssl', ['s_client', '-connect', `127.0.0.1:${port()}`]);
    const targets = targetsOf(child.pid!);
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({ kind: 'openssl', functions: [...TLS_FUNCTIONS.openssl], pid: child.pid, key: mapsKey(LIBSSL) });
    expect(targets[0].path).toBe(openedInode(LIBSSL));
  });

  it('finds libgnutls.so.30 in gnutls-cli (Debian gnutls-bin)', async () => {
    const child = await startClient('gnutls-cli', ['--insecure', '-p', String(port()), '127.0.0.1']);
    const targets = targetsOf(child.pid!);
    expect(targets).toHaveLength(1);
    expect(targets[0]).toMatchObject({ kind: 'gnutls', functions: [...TLS_FUNCTIONS.gnutls], pid: child.pid, key: mapsKey(LIBGNUTLS) });
    expect(targets[0].path).toBe(openedInode(LIBGNUTLS));
  });
});
