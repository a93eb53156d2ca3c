import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

// ELF64 little-endian only: the layout of x86-64 and aarch64 files.
const ELF_HEADER_SIZE = 64;
const SECTION_HEADER_SIZE = 64;
const SYMBOL_SIZE = 24;
const SHT_SYMTAB = 2;
const SHT_DYNSYM = 11;
const SHN_UNDEF = 0;
const STT_FUNC = 2;
const STT_GNU_IFUNC = 10;

interface Section {
  type: number;
  offset: number;
  size: number;
  link: number;
}

/** Positioned reads of one open file; `undefined` when the range is not all inside the file (truncated or corrupt). */
class FileReader {
  constructor(
    private readonly fd: number,
    private readonly fileSize: number,
  ) {}

  read(offset: number, length: number): Buffer | undefined {
    if (offset < 0 || length < 0 || offset + length > this.fileSize) return undefined;
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) return undefined;
      done += n;
    }
    return buf;
  }
}

/**
 * Which of `names` are functions defined (not merely imported) in the ELF file at `path`, from its
 * .dynsym and .symtab. Only the headers and the symbol and string tables are read, so a 100 MB
 * executable costs its tables, not its code. A file that is not a well-formed ELF64 little-endian
 * object gives an empty set; a file that cannot be opened or read throws (the caller knows why that
 * can happen).
 */
export function definedFunctions(path: string, names: readonly string[]): Set<string> {
  const fd = openSync(path, 'r');
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return new Set();
    return definedIn(new FileReader(fd, stat.size), names);
  } finally {
    closeSync(fd);
  }
}

function definedIn(file: FileReader, names: readonly string[]): Set<string> {
  const found = new Set<string>();
  const header = file.read(0, ELF_HEADER_SIZE);
  // Magic, EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian).
  if (!header || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return found;
  const sections = readSections(file, header);
  for (const symbols of sections) {
    if (found.size === names.length) break; // .dynsym comes first: a library's .symtab is then not read
    if (symbols.type !== SHT_SYMTAB && symbols.type !== SHT_DYNSYM) continue;
    const strings = sections[symbols.link];
    const symbolBytes = file.read(symbols.offset, symbols.size);
    const stringBytes = strings && file.read(strings.offset, strings.size);
    if (!symbolBytes || !stringBytes) continue;
    const wanted = nameOffsets(stringBytes, names);
    for (let at = 0; at + SYMBOL_SIZE <= symbolBytes.length; at += SYMBOL_SIZE) {
      const name = wanted.get(symbolBytes.readUInt32LE(at));
      if (name === undefined) continue;
      const type = symbolBytes[at + 4] & 0xf;
      const defined = symbolBytes.readUInt16LE(at + 6) !== SHN_UNDEF;
      if (defined && (type === STT_FUNC || type === STT_GNU_IFUNC)) found.add(name);
    }
  }
  return found;
}

function readSections(file: FileReader, header: Buffer): Section[] {
  const tableOffset = Number(header.readBigUInt64LE(0x28));
  const entrySize = header.readUInt16LE(0x3a);
  // e_shnum 0 means more than 0xff00 sections (count in section 0): not seen in linked executables or libraries.
  const count = header.readUInt16LE(0x3c);
  if (entrySize !== SECTION_HEADER_SIZE) return [];
  const table = file.read(tableOffset, count * SECTION_HEADER_SIZE);
  if (!table) return [];
  const sections: Section[] = [];
  for (let at = 0; at < table.length; at += SECTION_HEADER_SIZE) {
    sections.push({
      type: table.readUInt32LE(at + 4),
      offset: Number(table.readBigUInt64LE(at + 0x18)),
      size: Number(table.readBigUInt64LE(at + 0x20)),
      link: table.readUInt32LE(at + 0x28),
    });
  }
  return sections;
}

/**
 * st_name values that name each of `names` in a string table. Linkers share string tails, so a
 * name may start inside a longer string ("SSL_write" inside "xSSL_write"): every place the name
 * occurs followed by NUL is one. Matching offsets avoids decoding every symbol name (node has ~150k).
 */
function nameOffsets(strings: Buffer, names: readonly string[]): Map<number, string> {
  const offsets = new Map<number, string>();
  for (const name of names) {
    const needle = Buffer.from(`${name}\0`, 'latin1');
    for (let at = strings.indexOf(needle); at !== -1; at = strings.indexOf(needle, at + 1)) offsets.set(at, name);
  }
  return offsets;
}
