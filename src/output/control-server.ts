import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { CaptureEvent } from '../agent.js';
import { CONTROL_SOCKET_PATH, encodeTailEvent } from './tail-protocol.js';
import { toTailEvent } from './tail-record.js';

// A tail client that stops reading must not grow the agent's memory: past this it is disconnected.
const MAX_CLIENT_BACKLOG = 8 * 1024 * 1024;

/** Streams every forwarded event to `hepbpf tail` clients on a root-only unix socket. */
export class ControlServer {
  private readonly clients = new Set<Socket>();
  private server?: Server;
  dropped = 0;

  constructor(
    private readonly log: Logger,
    readonly path = CONTROL_SOCKET_PATH,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    chmodSync(dirname(this.path), 0o700);
    rmSync(this.path, { force: true }); // a stale socket from an agent that was killed
    const server = createServer((sock) => {
      this.clients.add(sock);
      sock.on('close', () => this.clients.delete(sock));
      sock.on('error', () => sock.destroy());
      sock.resume(); // clients send nothing; filters run on their side
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

  async close(): Promise<void> {
    for (const sock of this.clients) sock.end();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.path, { force: true });
  }
}
