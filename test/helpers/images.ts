/**
 * The repo's Dockerfile built for real where no image registry is reachable: its two bases are made
 * here from Debian's packages and the host's Node.
 *   local/debian:bookworm-slim  debootstrap --variant=minbase bookworm from deb.debian.org (the tar
 *                               is kept in /var/cache/hepbpf-test: delete it to make it afresh)
 *   local/node:20-bookworm-slim that, plus the host's Node 20 (binary, npm, headers) where
 *                               node:20-bookworm-slim keeps them (/usr/local), and the CAs the
 *                               host's Node trusts (NODE_EXTRA_CA_CERTS: an egress proxy here may
 *                               sign registry.npmjs.org itself)
 * then `docker build --build-arg NODE_IMAGE=local/node:20-bookworm-slim -t hepbpf:latest .`.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const DEBIAN_BASE = 'local/debian:bookworm-slim';
export const NODE_BASE = 'local/node:20-bookworm-slim';
const ROOTFS_TAR = '/var/cache/hepbpf-test/debian-bookworm-minbase.tar';

/** A docker-compatible client: `docker -H ...` or `podman --root ...`. */
export type Client = (...args: string[]) => string;

/** Debian 12 minbase rootfs as a tar for `docker import`, made once with debootstrap (about 4 min). */
function debianRootfsTar(): string {
  if (existsSync(ROOTFS_TAR)) return ROOTFS_TAR;
  const work = `${ROOTFS_TAR}.d`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    execFileSync('debootstrap', ['--variant=minbase', 'bookworm', join(work, 'rootfs'), 'http://deb.debian.org/debian'], { stdio: 'ignore' });
    execFileSync('tar', ['-C', join(work, 'rootfs'), '--exclude=./var/cache/apt/archives/*.deb', '-cf', join(work, 'rootfs.tar'), '.']);
    renameSync(join(work, 'rootfs.tar'), ROOTFS_TAR);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return ROOTFS_TAR;
}

/** Makes both bases in `client`'s image store; `dir` is scratch space the caller removes. */
export function localBases(client: Client, dir: string): void {
  client('import', debianRootfsTar(), DEBIAN_BASE);
  const ctx = join(dir, 'node-base');
  const node = process.execPath; // /usr/bin/node from nodesource
  const prefix = dirname(dirname(node));
  mkdirSync(ctx, { recursive: true });
  cpSync(node, join(ctx, 'node'));
  cpSync(join(prefix, 'lib/node_modules/npm'), join(ctx, 'npm'), { recursive: true });
  cpSync(join(prefix, 'include/node'), join(ctx, 'include'), { recursive: true });
  const extraCa = process.env.NODE_EXTRA_CA_CERTS;
  if (extraCa) cpSync(extraCa, join(ctx, 'extra-ca.crt'));
  writeFileSync(
    join(ctx, 'Dockerfile'),
    [
      `FROM ${DEBIAN_BASE}`,
      'COPY node /usr/local/bin/node',
      'COPY npm /usr/local/lib/node_modules/npm',
      'COPY include /usr/local/include/node',
      'RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx',
      ...(extraCa ? ['COPY extra-ca.crt /usr/local/share/extra-ca.crt', 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/extra-ca.crt'] : []),
      'CMD ["node"]',
      '',
    ].join('\n'),
  );
  client('build', '-q', '--network', 'none', '-t', NODE_BASE, ctx);
}

/** Builds the repo's Dockerfile on the local bases; apt and npm reach their mirrors over the host's network. */
export function buildHepbpfImage(client: Client, repo: string, tag = 'hepbpf:latest'): void {
  client('build', '-q', '--network', 'host', '--build-arg', `NODE_IMAGE=${NODE_BASE}`, '-t', tag, repo);
}
