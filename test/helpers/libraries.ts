import { execFileSync } from 'node:child_process';

/** A library's path from the loader cache (Debian: libssl3, libgnutls30, freediameterd, libc6). */
export function systemLibrary(soname: string): string {
  const line = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' })
    .split('\n')
    .find((l) => l.trim().startsWith(`${soname} (`) && l.includes('x86-64'));
  if (!line) throw new Error(`${soname} not in ldconfig -p: install its Debian package`);
  return line.split(' => ')[1].trim();
}
