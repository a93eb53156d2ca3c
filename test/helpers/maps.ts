import { statSync } from 'node:fs';

/** Device and inode of a file as /proc/PID/maps prints them ("fe:00:260689"). */
export function mapsKey(path: string): string {
  const { dev, ino } = statSync(path);
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
}
