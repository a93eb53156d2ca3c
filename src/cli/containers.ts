import { connect } from 'node:net';
import { trustedControlSocket } from '../output/control-path.js';
import { CONTROL_SOCKET_PATH, ContainerListReader, encodeControlRequest, REQUEST_CONTAINERS, type ContainerSeenWire } from '../output/tail-protocol.js';
import { escapeControl } from '../output/tail-record.js';

/** One line per container: runtime, name, compose service or pod, messages as sender/receiver and as the other end. */
export function formatContainers(list: ContainerSeenWire[]): string {
  const rows = [['RUNTIME', 'NAME', 'SERVICE/POD', 'ID', 'MESSAGES', 'AS PEER']];
  for (const { container: c, messages, peerMessages } of [...list].sort((a, b) => a.container.name.localeCompare(b.container.name))) {
    const group = c.pod ? `${c.namespace}/${c.pod}` : c.service ? `${c.project ? c.project + '/' : ''}${c.service}` : '-';
    rows.push([c.runtime, c.name, group, c.id.slice(0, 12), String(messages), String(peerMessages)].map(escapeControl));
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n';
}

/** `hepbpf containers`: asks the running agent over its control socket. */
export async function containersCommand(opts: { json?: boolean }): Promise<void> {
  if (!trustedControlSocket(CONTROL_SOCKET_PATH)) throw new Error(`no running agent (${CONTROL_SOCKET_PATH}): start one with hepbpf run`);
  const list = await new Promise<ContainerSeenWire[]>((resolve, reject) => {
    const sock = connect(CONTROL_SOCKET_PATH);
    const reader = new ContainerListReader();
    sock.once('connect', () => sock.write(encodeControlRequest(REQUEST_CONTAINERS)));
    sock.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk, (m) => resolve(m.containers));
      } catch (err) {
        sock.destroy();
        reject(new Error(`${CONTROL_SOCKET_PATH}: ${(err as Error).message}`));
      }
    });
    sock.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `no running agent (${CONTROL_SOCKET_PATH}): start one with hepbpf run` : `${CONTROL_SOCKET_PATH}: ${err.message}`)),
    );
    sock.once('end', () => resolve([]));
  });
  process.stdout.write(opts.json ? list.map((c) => JSON.stringify(c)).join('\n') + (list.length ? '\n' : '') : formatContainers(list));
}
