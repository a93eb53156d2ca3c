import { lstatSync, mkdirSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Who may be trusted on the control socket's path: whoever can write its directory can replace the
 * socket and feed forged events to `hepbpf tail`, or read what the agent sends. So the directory must
 * be a real directory (not a symlink) owned by root and writable by no one else, and the socket a
 * socket owned by root. The agent creates the directory itself (0700) and never changes the mode
 * of one it did not create.
 */
export class UntrustedControlPath extends Error {}

const ROOT = 0;

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function checkDir(dir: string, st: Stats): void {
  if (st.isSymbolicLink()) throw new UntrustedControlPath(`${dir} is a symlink: refused for the control socket`);
  if (!st.isDirectory()) throw new UntrustedControlPath(`${dir} is not a directory: refused for the control socket`);
  if (st.uid !== ROOT) throw new UntrustedControlPath(`${dir} is owned by uid ${st.uid}, not root: refused for the control socket`);
  if (st.mode & 0o022) throw new UntrustedControlPath(`${dir} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)}): refused for the control socket`);
}

/** The agent's side: creates the socket's directory 0700, or accepts an existing one only if it is trusted. */
export function prepareControlDir(socketPath: string): void {
  const dir = dirname(socketPath);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new UntrustedControlPath(`cannot create ${dir}: ${(err as Error).message}`);
  }
  checkDir(dir, lstatSync(dir));
}

/**
 * The client's side: false when no agent socket is there; true when it is there and trusted;
 * throws UntrustedControlPath when something else sits where the socket should be.
 */
export function trustedControlSocket(socketPath: string): boolean {
  const dirStat = lstatOrUndefined(dirname(socketPath));
  if (!dirStat) return false;
  checkDir(dirname(socketPath), dirStat);
  const st = lstatOrUndefined(socketPath);
  if (!st) return false;
  if (!st.isSocket()) throw new UntrustedControlPath(`${socketPath} is not a socket: refused`);
  if (st.uid !== ROOT) throw new UntrustedControlPath(`${socketPath} is owned by uid ${st.uid}, not root: refused`);
  return true;
}
