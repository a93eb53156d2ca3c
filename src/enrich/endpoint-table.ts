import { transportIndex, type Endpoint, type Transport } from '../stream/message.js';
import { isLoopback } from '../net/address.js';

/** Key room: 65536 ports, each with room for 8 transports. */
const PER_ADDRESS = 65536 * 8;
const keyOf = (id: number, transport: Transport, port: number) => id * PER_ADDRESS + port * 8 + transportIndex(transport);

interface Address {
  ip: string;
  /** The map of ids this address is in: host-wide, or its network namespace's. */
  scope: Map<string, number>;
  /** Its network namespace (as an int32), when loopback. */
  netns?: number;
  /** Table entries whose key has this address's id. */
  users: number;
}

/**
 * One number per endpoint (transport, address, port; and network namespace for a loopback address,
 * which is one only within its namespace): (address id * 65536 + port) * 8 + transport. Every copy
 * of every message looks up its endpoints: a number key is neither hashed nor compared as text, and
 * while ids stay below 4096 it is below 2^31, a small integer in Node's V8 (no number boxed per look-up).
 * An address has an id while a table entry uses it: ids are reused, so they stay as few as the
 * addresses the tables hold, and the tables' bounds bound them.
 */
export class EndpointKeys {
  private readonly hostWide = new Map<string, number>();
  /** Loopback addresses by network namespace: its inode | 0, a small integer (an inode is a u32). */
  private readonly loopback = new Map<number, Map<string, number>>();
  private readonly addresses: Array<Address | undefined> = [];
  private readonly freeIds: number[] = [];

  /** The key of an endpoint whose address has an id; undefined otherwise: no table holds it. */
  find(transport: Transport, e: Endpoint, netns: number): number | undefined {
    const id = isLoopback(e.ip) ? this.loopback.get(netns | 0)?.get(e.ip) : this.hostWide.get(e.ip);
    return id === undefined ? undefined : keyOf(id, transport, e.port);
  }

  /** The key of an endpoint; its address gets an id if it had none (the caller's table entry then uses it). */
  make(transport: Transport, e: Endpoint, netns: number): number {
    const loopback = isLoopback(e.ip);
    let scope = this.hostWide;
    if (loopback) {
      scope = this.loopback.get(netns | 0) ?? new Map();
      if (scope.size === 0) this.loopback.set(netns | 0, scope);
    }
    let id = scope.get(e.ip);
    if (id === undefined) {
      id = this.freeIds.pop() ?? this.addresses.length;
      this.addresses[id] = { ip: e.ip, scope, netns: loopback ? netns | 0 : undefined, users: 0 };
      scope.set(e.ip, id);
    }
    return keyOf(id, transport, e.port);
  }

  /** A table entry took `key`. */
  use(key: number): void {
    this.addresses[Math.floor(key / PER_ADDRESS)]!.users++;
  }

  /** A table entry with `key` left: its address's id is free once no entry uses it. */
  release(key: number): void {
    const id = Math.floor(key / PER_ADDRESS);
    const a = this.addresses[id]!;
    if (--a.users > 0) return;
    a.scope.delete(a.ip);
    if (a.netns !== undefined && a.scope.size === 0) this.loopback.delete(a.netns);
    this.addresses[id] = undefined;
    this.freeIds.push(id);
  }

  /** Addresses with an id (for tests: they return to none with the tables' entries). */
  get size(): number {
    return this.addresses.length - this.freeIds.length;
  }
}

/** A bounded table by endpoint key (EndpointKeys): past `max` entries the oldest goes. */
export class EndpointTable<V> {
  private readonly entries = new Map<number, V>();

  constructor(
    private readonly keys: EndpointKeys,
    private readonly max: number,
  ) {}

  get(key: number | undefined): V | undefined {
    return key === undefined ? undefined : this.entries.get(key);
  }

  /** Sets the endpoint's value; returns its key. */
  set(transport: Transport, e: Endpoint, netns: number, value: V): number {
    const key = this.keys.make(transport, e, netns);
    if (!this.entries.has(key)) {
      this.keys.use(key); // before the oldest goes: it may be the last other user of this address
      if (this.entries.size >= this.max) this.delete(this.entries.keys().next().value!);
    }
    this.entries.set(key, value);
    return key;
  }

  delete(key: number): void {
    if (this.entries.delete(key)) this.keys.release(key);
  }

  deleteWhere(matches: (value: V) => boolean): void {
    for (const [key, value] of this.entries) if (matches(value)) this.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
