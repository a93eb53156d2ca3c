import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { CaptureEvent } from '../enrich/event.js';
import type { ContainerSeen } from '../enrich/containers.js';
import { LogLimiter } from '../failures.js';
import { prepareControlDir, UntrustedControlPath } from './control-path.js';
import { CONTROL_SOCKET_PATH, ControlProtocolError, ControlRequestReader, encodeContainerList, encodeTailEvent, REQUEST_CONTAINERS, REQUEST_TAIL } from './tail-protocol.js';
import { toTailEvent } from './tail-record.js';

/** Clients connected at once; one more is closed on arrival and counted. */
export const MAX_CONTROL_CLIENTS = 16;
/** A client must send its whole request within this time after connecting. */
export const REQUEST_TIMEOUT_MS = 5000;
// A tail client that stops reading must not grow the agent's memory: past this it is disconnected.
// With every client at the limit: MAX_CONTROL_CLIENTS x 4 MiB.
const MAX_CLIENT_BACKLOG = 4 * 1024 * 1024;
const WARN_INTERVAL_MS = 10_000;

export interface ControlStats {
  /** Tail clients attached now. */
  tailClients: number;
  /** Connections closed on arrival: MAX_CONTROL_CLIENTS were already connected. */
  refusedClients: number;
  /** Clients closed for a malformed, oversized or unknown request. */
  badRequests: number;
  /** Clients closed for not sending a complete request within REQUEST_TIMEOUT_MS. */
  idleClosed: number;
  /** Tail clients disconnected for not reading (their backlog passed 4 MiB). */
  slowTailClients: number;
  /** Bytes of events queued for those slow clients when they were disconnected, never delivered. */
  tailBytesDropped: number;
}

/** On a root-only unix socket: streams every forwarded event to `hepbpf tail` clients, answers `hepbpf containers`. */
export class ControlServer {
  /** Tail clients, streamed every event. */
  private readonly clients = new Set<Socket>();
  /** Every open connection, so that close() does not wait for an idle one. */
  private readonly connections = new Set<Socket>();
  private server?: Server;
  private readonly counters = { refusedClients: 0, badRequests: 0, idleClosed: 0, slowTailClients: 0, tailBytesDropped: 0 };
  /** One line per kind of trouble per WARN_INTERVAL_MS, whatever a hostile client does; the counters say how many. */
  private readonly warnings = new LogLimiter(WARN_INTERVAL_MS);

  constructor(
    private readonly log: Logger,
    private readonly containers: () => ContainerSeen[],
    readonly path = CONTROL_SOCKET_PATH,
  ) {}

  /**
   * Listens on the socket. An untrusted directory (see control-path.ts) disables the control socket
   * with one error line and capture goes on: `tail` and `containers` then report no running agent.
   */
  async start(): Promise<void> {
    try {
      prepareControlDir(this.path);
    } catch (err) {
      if (!(err instanceof UntrustedControlPath)) throw err;
      this.log.error({ socket: this.path, err: err.message }, 'control socket disabled');
      return;
    }
    rmSync(this.path, { force: true }); // a stale socket from an agent that was killed
    const server = createServer((sock) => this.serve(sock));
    server.maxConnections = MAX_CONTROL_CLIENTS;
    server.on('drop', () => {
      this.counters.refusedClients++;
      this.warn('refused', `control socket: more than ${MAX_CONTROL_CLIENTS} clients, connection closed`, this.counters.refusedClients);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.path, resolve));
    chmodSync(this.path, 0o600);
    this.server = server;
  }

  /** One request per connection; tail filters run on the client's side. */
  private serve(sock: Socket): void {
    this.connections.add(sock);
    const reader = new ControlRequestReader();
    const idle = setTimeout(() => {
      this.counters.idleClosed++;
      this.warn('idle', `control socket: no complete request within ${REQUEST_TIMEOUT_MS} ms, client closed`, this.counters.idleClosed);
      sock.destroy();
    }, REQUEST_TIMEOUT_MS);
    const refuse = (why: string) => {
      clearTimeout(idle);
      this.counters.badRequests++;
      this.warn('bad', `control socket: bad request (${why}), client closed`, this.counters.badRequests);
      sock.destroy();
    };
    sock.on('close', () => {
      clearTimeout(idle);
      this.clients.delete(sock);
      this.connections.delete(sock);
    });
    sock.on('error', () => sock.destroy());
    const onData = (chunk: Buffer) => {
      try {
        reader.push(chunk, ({ kind }) => {
          sock.off('data', onData); // answered: whatever the client sends next is ignored
          clearTimeout(idle);
          if (kind === REQUEST_TAIL) this.clients.add(sock);
          else if (kind === REQUEST_CONTAINERS) sock.end(encodeContainerList(this.containerList()));
          else refuse(`unknown kind ${kind}`);
        });
      } catch (err) {
        if (!(err instanceof ControlProtocolError)) throw err;
        refuse(err.message);
      }
    };
    sock.on('data', onData);
  }

  publish(ev: CaptureEvent): void {
    if (this.clients.size === 0) return;
    const bytes = encodeTailEvent(toTailEvent(ev));
    for (const sock of this.clients) {
      if (sock.writableLength > MAX_CLIENT_BACKLOG) {
        this.counters.slowTailClients++;
        this.counters.tailBytesDropped += sock.writableLength;
        this.warn('slow', 'tail client not reading: disconnected', this.counters.slowTailClients);
        this.clients.delete(sock);
        sock.destroy();
        continue;
      }
      sock.write(bytes);
    }
  }

  stats(): ControlStats {
    return { tailClients: this.clients.size, ...this.counters };
  }

  private warn(kind: string, msg: string, count: number): void {
    if (this.warnings.due(kind, count)) this.log.warn({ count }, msg);
  }

  private containerList() {
    return this.containers().map((c) => ({ ...c, container: { ...c.container }, cgroupIds: c.cgroupIds.map(String) }));
  }

  async close(): Promise<void> {
    if (!this.server) return;
    for (const sock of this.connections) {
      if (this.clients.has(sock)) sock.end();
      else sock.destroy();
    }
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}
