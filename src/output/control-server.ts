import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { CaptureEvent } from '../enrich/event.js';
import type { ContainerSeen } from '../enrich/containers.js';
import { CONTROL_SOCKET_PATH, ControlRequestReader, encodeContainerList, encodeTailEvent, REQUEST_CONTAINERS, REQUEST_TAIL } from './tail-protocol.js';
import { toTailEvent } from './tail-record.js';

// A tail client that stops reading must not grow the agent's memory: past this it is disconnected.
const MAX_CLIENT_BACKLOG = 8 * 1024 * 1024;

/** On a root-only unix socket: streams every forwarded event to `hepbpf tail` clients, answers `hepbpf containers`. */
export class ControlServer {
  private readonly clients = new Set<Socket>();
  private server?: Server;
  dropped = 0;

  constructor(
    private readonly log: Logger,
    private readonly containers: () => ContainerSeen[],
    readonly path = CONTROL_SOCKET_PATH,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    chmodSync(dirname(this.path), 0o700);
    rmSync(this.path, { force: true }); // a stale socket from an agent that was killed
    const server = createServer((sock) => {
      const reader = new ControlRequestReader();
      let answered = false;
      sock.on('close', () => this.clients.delete(sock));
      sock.on('error', () => sock.destroy());
      // One request per connection; tail filters run on the client's side.
      sock.on('data', (chunk: Buffer) =>
        reader.push(chunk, ({ kind }) => {
          if (answered) return;
          answered = true;
          if (kind === REQUEST_TAIL) this.clients.add(sock);
          else if (kind === REQUEST_CONTAINERS) sock.end(encodeContainerList(this.containerList()));
          else sock.destroy();
        }),
      );
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.path, resolve));
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  publish(ev: CaptureEvent): void {
    if (this.clients.size === 0) return;
    const bytes = encodeTailEvent(toTailEvent(ev));
    for (const sock of this.clients) {
      if (sock.writableLength > MAX_CLIENT_BACKLOG) {
        this.dropped++;
        this.log.warn('tail client too slow: disconnected');
        sock.destroy();
        continue;
      }
      sock.write(bytes);
    }
  }

  private containerList() {
    return this.containers().map((c) => ({ ...c, container: { ...c.container }, cgroupIds: c.cgroupIds.map(String) }));
  }

  async close(): Promise<void> {
    for (const sock of this.clients) sock.end();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.path, { force: true });
  }
}
