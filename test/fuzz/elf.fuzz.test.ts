/**
 * The ELF reader (src/capture/elf-symbols.ts) on files a hostile process can map: mutations of a
 * real libssl's tables and random bytes. It must never throw, only find functions or refuse.
 */
import fc from 'fast-check';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { definedFunctions } from '../../src/capture/elf-symbols.js';
import { TLS_FUNCTIONS } from '../../src/capture/tls-discovery.js';
import { fuzz, fuzzTimeoutMs } from './harness.js';

const LIBSSL = '/usr/lib/x86_64-linux-gnu/libssl.so.3';
const NAMES = Object.values(TLS_FUNCTIONS).flat();
const SEED_BYTES = 64 * 1024;

/**
 * libssl.so.3 made small: its first 64 KiB (ELF header, .dynsym, .dynstr) followed by its section
 * header table, which e_shoff is moved to. Sections past 64 KiB now point past the end of the file.
 */
function seedElf(): Buffer {
  const lib = readFileSync(LIBSSL);
  const tableAt = Number(lib.readBigUInt64LE(0x28));
  const table = lib.subarray(tableAt, tableAt + 64 * lib.readUInt16LE(0x3c));
  const seed = Buffer.concat([lib.subarray(0, SEED_BYTES), table]);
  seed.writeBigUInt64LE(BigInt(SEED_BYTES), 0x28);
  return seed;
}

/**
 * Byte flips, and 64-bit fields set to values that matter (0, small, just past the end, huge) at
 * 8-aligned places; half of them in the ELF header or the section headers, the rest anywhere.
 */
const mutation = fc.record({
  structural: fc.boolean(),
  at: fc.nat(),
  change: fc.oneof(
    fc.record({ byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ wide: fc.constantFrom(0n, 1n, 24n, 0xffffn, 0x10000n, 0x7fffffffn, 0xffffffffn, 1n << 40n, (1n << 63n) - 1n, (1n << 64n) - 1n) }),
  ),
});

describe('ELF reader fuzz', () => {
  let dir: string;
  let fd: number;
  let seed: Buffer;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-elf-fuzz-'));
    fd = openSync(join(dir, 'input'), 'w+');
    seed = seedElf();
  });
  afterAll(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Reads `input` as the file's whole content; never throws. */
  function read(input: Uint8Array) {
    ftruncateSync(fd, 0);
    writeSync(fd, input, 0, input.length, 0);
    return definedFunctions(fd, NAMES);
  }

  it('the seed is read: it defines OpenSSL\'s functions', () => {
    expect(read(seed)).toEqual({ defined: new Set(TLS_FUNCTIONS.openssl) });
  });

  it(
    'mutated libssl tables',
    () => {
      const structure = [...Array(64).keys(), ...Array.from({ length: seed.length - SEED_BYTES }, (_, i) => SEED_BYTES + i)];
      const inputs = fc.array(mutation, { minLength: 1, maxLength: 32 }).map((mutations) => {
        const elf = Buffer.from(seed);
        for (const { structural, at, change } of mutations) {
          const place = structural ? structure[at % structure.length] : at % elf.length;
          if ('byte' in change) elf[place] = change.byte;
          else elf.writeBigUInt64LE(change.wide, Math.min(place & ~7, elf.length - 8));
        }
        return elf;
      });
      fuzz(inputs, (b) => b.length, (b) => void read(b));
    },
    fuzzTimeoutMs(),
  );

  it(
    'random bytes, alone and after an ELF64 header',
    () => {
      const header = seed.subarray(0, 64);
      const inputs = fc
        .tuple(fc.boolean(), fc.uint8Array({ maxLength: 64 * 1024 }))
        .map(([elf, bytes]) => (elf ? Buffer.concat([header, bytes]) : Buffer.from(bytes)));
      fuzz(inputs, (b) => b.length, (b) => void read(b));
    },
    fuzzTimeoutMs(),
  );
});
