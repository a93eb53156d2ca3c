/**
 * releaseMemory() (src/bpf/native/libbpf_addon.c) drops this process's pages of node's and
 * capstone's read-only code and data: what runs afterwards must read them in again and work the
 * same, here in the test's own process.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { disassemble, releaseMemory } from '../../src/bpf/libbpf.js';

/** Resident kB of the process's mappings of `file`. */
function residentKb(file: string): number {
  let kb = 0;
  let inFile = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping) inFile = mapping[1] === file;
    else if (inFile && line.startsWith('Rss:')) kb += Number(line.split(/\s+/)[1]);
  }
  return kb;
}

describe('releaseMemory', () => {
  it('drops node\'s resident read-only pages; code and decoder tables are read in again when used', () => {
    // push %rbp; mov %rsp,%rbp; call +0x10; ret
    const code = Buffer.from([0x55, 0x48, 0x89, 0xe5, 0xe8, 0x10, 0x00, 0x00, 0x00, 0xc3]);
    const before = disassemble(code, 0x1000);
    const exe = realpathSync(process.execPath);
    const residentBefore = residentKb(exe);
    releaseMemory();
    const residentAfter = residentKb(exe);
    expect(residentAfter).toBeLessThan(residentBefore);
    expect(disassemble(code, 0x1000)).toEqual(before);
    expect(before.map((i) => i.mnemonic)).toEqual(['push', 'mov', 'call', 'ret']);
    expect(JSON.parse(JSON.stringify({ still: 'running' }))).toEqual({ still: 'running' });
  });
});
