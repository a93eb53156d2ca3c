import { fstatSync, readSync } from 'node:fs';

// ELF64 little-endian only: the layout of x86-64 and aarch64 files.
const ELF_HEADER_SIZE = 64;
const SECTION_HEADER_SIZE = 64;
const SYMBOL_SIZE = 24;
const PROGRAM_HEADER_SIZE = 56;
const PT_LOAD = 1;
const PF_X = 1;
const SHT_SYMTAB = 2;
const SHT_STRTAB = 3;
const SHT_DYNSYM = 11;
const SHN_UNDEF = 0;
const STT_FUNC = 2;
const STT_GNU_IFUNC = 10;

// The files read belong to other processes, any of which may be hostile: every limit below makes a
// crafted file cost little, and is far above real files (node: 41 sections, 110k symbols in
// .symtab, a 7.5 MB .strtab).
const MAX_SECTIONS = 4096;
const MAX_SYMBOLS = 4_000_000;
const MAX_STRING_TABLE_BYTES = 64 << 20;
/** Everything read from one file, all tables together. */
const MAX_BYTES_READ = 128 << 20;
const TIME_BUDGET_MS = 2000;
/** A name occurs once or twice in a real string table; thousands of copies are an attack on the lookup. */
const MAX_NAME_OCCURRENCES = 64;
/** Tables are read through one buffer of this size, a multiple of the symbol size. */
const CHUNK_BYTES = SYMBOL_SIZE * 43_690;

/** What a file defines, or why it was not read: too big, malformed, slow or unreadable. */
export type ElfFunctions = { defined: Set<string> } | { refused: string };

/** A defined function's symbol: its virtual address and size; an IFUNC's address is its resolver's. */
export interface FunctionSymbol {
  address: number;
  size: number;
  ifunc: boolean;
}
export type ElfFunctionSymbols = { functions: Map<string, FunctionSymbol> } | { refused: string };

/** Code bytes of a file and where they are in it. */
export interface ElfCode {
  bytes: Buffer;
  fileOffset: number;
}

interface Section {
  type: number;
  offset: number;
  size: number;
  link: number;
}

/** A file the reader gives up on; its message is the reason. */
class Refusal extends Error {}

let chunkBuffer: Buffer | undefined;

/** Positioned reads of one open file, inside the file's real size and the read and time budgets. */
class BoundedReader {
  private bytesRead = 0;
  private readonly deadline = Date.now() + TIME_BUDGET_MS;

  constructor(
    private readonly fd: number,
    private readonly fileSize: number,
  ) {}

  /** Bytes [offset, offset + length) as a view of the shared chunk buffer (length <= CHUNK_BYTES), valid until the next read. */
  read(offset: number, length: number, what: string): Buffer {
    if (!Number.isSafeInteger(offset + length) || offset + length > this.fileSize) throw new Refusal(`${what} past the end of the file`);
    if ((this.bytesRead += length) > MAX_BYTES_READ) throw new Refusal(`more than ${MAX_BYTES_READ} bytes of tables`);
    if (Date.now() > this.deadline) throw new Refusal(`took more than ${TIME_BUDGET_MS} ms`);
    chunkBuffer ??= Buffer.allocUnsafe(CHUNK_BYTES);
    const buf = chunkBuffer.subarray(0, length);
    for (let done = 0; done < length; ) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n === 0) throw new Refusal('file shorter than its size');
      done += n;
    }
    return buf;
  }

  /** Calls fn for consecutive chunks of a section, each starting `overlap` bytes before the previous one ended, with its place in the section. */
  forEachChunk(section: Section, overlap: number, what: string, fn: (chunk: Buffer, at: number) => void): void {
    const step = CHUNK_BYTES - overlap;
    for (let at = 0; ; at += step) {
      const chunk = this.read(section.offset + at, Math.min(CHUNK_BYTES, section.size - at), what);
      fn(chunk, at);
      if (at + chunk.length >= section.size) return;
    }
  }
}

/**
 * Which of `names` are functions defined (not merely imported) in the open file `fd`, from its
 * .dynsym and .symtab. Only the ELF header, the section headers and those symbol and string tables
 * are read, in chunks of 1 MiB, so a 100 MB executable costs its tables, not its code, and memory
 * stays bounded whatever sizes the file claims. A file that is not ELF64 little-endian defines
 * nothing; one that is malformed, over a limit, too slow or unreadable is refused, with the reason.
 * Never throws.
 */
export function definedFunctions(fd: number, names: readonly string[]): ElfFunctions {
  const symbols = functionSymbols(fd, names);
  return 'refused' in symbols ? symbols : { defined: new Set(symbols.functions.keys()) };
}

/** As definedFunctions, with each function's symbol. */
export function functionSymbols(fd: number, names: readonly string[]): ElfFunctionSymbols {
  try {
    const size = fstatSync(fd).size;
    const file = new BoundedReader(fd, size);
    const found = new Map<string, FunctionSymbol>();
    const header = elfHeader(file, size);
    if (!header) return { functions: found };
    const sections = readSections(file, header);
    // An ELF file has at most one of each. .dynsym first: a library's .symtab is then not read.
    for (const type of [SHT_DYNSYM, SHT_SYMTAB]) {
      const symbols = sections.find((s) => s.type === type);
      if (symbols && found.size < names.length) addDefined(file, symbols, sections[symbols.link], names, found);
    }
    return { functions: found };
  } catch (err) {
    // A Refusal, an I/O error, or an allocation that failed: this file is refused, the agent goes on.
    return { refused: err instanceof Error ? err.message : String(err) };
  }
}

/** The ELF header of an ELF64 little-endian file, else undefined. */
function elfHeader(file: BoundedReader, size: number): Buffer | undefined {
  if (size < ELF_HEADER_SIZE) return undefined;
  const header = file.read(0, ELF_HEADER_SIZE, 'ELF header');
  // Magic, EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian).
  if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return undefined;
  return header;
}

/**
 * `length` bytes of code at virtual address `address` of the open file `fd` (an executable PT_LOAD
 * segment holds them all), or a reason why not. Never throws.
 */
export function codeAt(fd: number, address: number, length: number): ElfCode | { refused: string } {
  try {
    const size = fstatSync(fd).size;
    const file = new BoundedReader(fd, size);
    const header = elfHeader(file, size);
    if (!header) return { refused: 'not an ELF64 little-endian file' };
    const tableOffset = Number(header.readBigUInt64LE(0x20));
    const entrySize = header.readUInt16LE(0x36);
    const count = header.readUInt16LE(0x38);
    if (entrySize !== PROGRAM_HEADER_SIZE || count > MAX_SECTIONS) throw new Refusal(`${count} program headers of ${entrySize} bytes`);
    const table = Buffer.from(file.read(tableOffset, count * PROGRAM_HEADER_SIZE, 'program headers'));
    for (let at = 0; at < table.length; at += PROGRAM_HEADER_SIZE) {
      const type = table.readUInt32LE(at);
      const flags = table.readUInt32LE(at + 4);
      const offset = Number(table.readBigUInt64LE(at + 8));
      const vaddr = Number(table.readBigUInt64LE(at + 0x10));
      const fileSize = Number(table.readBigUInt64LE(at + 0x20));
      if (type !== PT_LOAD || !(flags & PF_X) || address < vaddr || address + length > vaddr + fileSize) continue;
      const fileOffset = offset + (address - vaddr);
      return { bytes: Buffer.from(file.read(fileOffset, length, 'code')), fileOffset };
    }
    return { refused: `0x${address.toString(16)}+${length} is in no executable segment` };
  } catch (err) {
    return { refused: err instanceof Error ? err.message : String(err) };
  }
}

function readSections(file: BoundedReader, header: Buffer): Section[] {
  const tableOffset = Number(header.readBigUInt64LE(0x28));
  const entrySize = header.readUInt16LE(0x3a);
  // e_shnum 0 means more than 0xff00 sections (count in section 0): not seen in linked executables or libraries.
  const count = header.readUInt16LE(0x3c);
  if (entrySize !== SECTION_HEADER_SIZE) throw new Refusal(`section header size ${entrySize}`);
  if (count === 0 || count > MAX_SECTIONS) throw new Refusal(`${count} sections (at most ${MAX_SECTIONS} read)`);
  const table = file.read(tableOffset, count * SECTION_HEADER_SIZE, 'section headers');
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

/** Adds to `found` the names that `symbols` defines as functions, with their symbols. */
function addDefined(file: BoundedReader, symbols: Section, strings: Section | undefined, names: readonly string[], found: Map<string, FunctionSymbol>): void {
  if (!strings || strings.type !== SHT_STRTAB) throw new Refusal('symbol table without its string table');
  if (symbols.size / SYMBOL_SIZE > MAX_SYMBOLS) throw new Refusal(`more than ${MAX_SYMBOLS} symbols`);
  if (strings.size > MAX_STRING_TABLE_BYTES) throw new Refusal(`string table over ${MAX_STRING_TABLE_BYTES} bytes`);
  const wanted = nameOffsets(file, strings, names);
  if (wanted.size === 0) return;
  file.forEachChunk({ ...symbols, size: symbols.size - (symbols.size % SYMBOL_SIZE) }, 0, 'symbol table', (chunk) => {
    for (let at = 0; at + SYMBOL_SIZE <= chunk.length; at += SYMBOL_SIZE) {
      const name = wanted.get(chunk.readUInt32LE(at));
      if (name === undefined) continue;
      const type = chunk[at + 4] & 0xf;
      const defined = chunk.readUInt16LE(at + 6) !== SHN_UNDEF;
      if (defined && (type === STT_FUNC || type === STT_GNU_IFUNC))
        found.set(name, { address: Number(chunk.readBigUInt64LE(at + 8)), size: Number(chunk.readBigUInt64LE(at + 16)), ifunc: type === STT_GNU_IFUNC });
    }
  });
}

/**
 * st_name values that name each of `names` in a string table. Linkers share string tails, so a
 * name may start inside a longer string ("SSL_write" inside "xSSL_write"): every place the name
 * occurs followed by NUL is one. Matching offsets avoids decoding every symbol name (node has ~150k).
 * Chunks overlap by the longest name, so a name across two chunks is found (twice: same offset).
 */
function nameOffsets(file: BoundedReader, strings: Section, names: readonly string[]): Map<number, string> {
  const needles = names.map((name) => ({ name, bytes: Buffer.from(`${name}\0`, 'latin1') }));
  const overlap = Math.max(...needles.map((n) => n.bytes.length)) - 1;
  const offsets = new Map<number, string>();
  if (strings.size === 0) return offsets;
  file.forEachChunk(strings, overlap, 'string table', (chunk, base) => {
    for (const { name, bytes } of needles) {
      for (let at = chunk.indexOf(bytes); at !== -1; at = chunk.indexOf(bytes, at + 1)) {
        offsets.set(base + at, name);
        if (offsets.size > MAX_NAME_OCCURRENCES * names.length) throw new Refusal(`more than ${MAX_NAME_OCCURRENCES} copies of a name`);
      }
    }
  });
  return offsets;
}
