import type { CaptureEvent } from './event.js';
import type { Message, ReceiverCopy } from '../stream/message.js';
import { parseDiameter } from '../protocols/diameter.js';
import type { ContainerIdentity, ContainerResolver } from './containers.js';
import { HeldPayloads } from './held-payloads.js';
import { EndpointKeys, EndpointTable } from './endpoint-table.js';
import { isLoopback, isWildcard } from '../net/address.js';

export interface AttributionOptions {
  /** Longest a message waits for its container names or its counterpart (wall clock). */
  holdMs?: number;
  /** How long, in capture time, a message to an unknown endpoint waits for its copy from the receiver's side. */
  counterpartWindowMs?: number;
  maxHeld?: number;
  heldBytes?: number;
}

const HOLD_MS = 500;
const COUNTERPART_WINDOW_MS = 50;
// Bounds of the hold, part of the agent's memory budget (README "Memory and overload"): a held
// message costs its payload copy in the ring and about 3.5 KB of objects (its event, message and
// parsed SIP: 16384 held SIP messages were 56 MB of old space, measured). Past them the oldest leave
// early (containers.overflow), named if their names are known by then.
const MAX_HELD = 4096;
const HELD_BYTES = 8 << 20;
/** An endpoint whose messages had no local counterpart is taken for remote this long. */
const REMOTE_TTL_MS = 60_000;
const MAX_ENDPOINTS = 65536;

interface Held {
  ev: CaptureEvent;
  deadlineMs: number;
  /** Waiting for the copy of this message from the other end's side (the other end may be on this host). */
  awaitingCounterpart: boolean;
  /** Where the payload copy lives; released when the message leaves. */
  copy: Buffer;
}

interface LocalSocket {
  cgroupId: bigint;
  pid: number;
}

/**
 * Puts the container of each end on every message before it leaves. The hot path never waits: a
 * message whose names are known (or that cannot learn more) goes out at once. One that waits for a
 * container lookup, or for the receiver's copy of it (which names the receiving container), is
 * held with a copy of its payload, up to holdMs, then goes out with what is known. Messages leave
 * in the order they came. Nothing is dropped: when the hold is full the oldest goes early.
 *
 * The other end is known from (a) the receiver's copy, paired by LocalDedup, or (b) the local
 * endpoint table: every message names the cgroup that owns its local address and port. Loopback
 * addresses are learnt per network namespace (each has its own); a message to one that is not in
 * the table yet always has a counterpart on this host and waits for it.
 */
export class Attribution {
  private readonly queue: Held[] = [];
  private head = 0;
  private readonly payloads: HeldPayloads;
  private readonly keys = new EndpointKeys();
  private readonly local = new EndpointTable<LocalSocket>(this.keys, MAX_ENDPOINTS);
  /** Until when (wall clock) an endpoint is taken for remote. */
  private readonly remote = new EndpointTable<number>(this.keys, MAX_ENDPOINTS);
  private readonly holdMs: number;
  private readonly windowNs: bigint;
  private readonly maxHeld: number;
  private latestTsNs = 0n;
  private timer?: NodeJS.Timeout;
  stats = { held: 0, unnamed: 0, counterpartMissed: 0, overflow: 0, peerFromTable: 0, peerFromCounterpart: 0 };

  constructor(
    private readonly resolver: ContainerResolver,
    private readonly sink: (ev: CaptureEvent) => void,
    opts: AttributionOptions = {},
  ) {
    this.holdMs = opts.holdMs ?? HOLD_MS;
    this.windowNs = BigInt(opts.counterpartWindowMs ?? COUNTERPART_WINDOW_MS) * 1_000_000n;
    this.maxHeld = opts.maxHeld ?? MAX_HELD;
    this.payloads = new HeldPayloads(opts.heldBytes ?? HELD_BYTES);
    resolver.onResolved(() => this.drain());
    resolver.onForgotten((id) => {
      this.local.deleteWhere((s) => s.cgroupId === id);
    });
  }

  /** Every copy of every message, forwarded or not: its local side belongs to its cgroup. */
  learn(m: Message | ReceiverCopy): void {
    if (m.tsNs > this.latestTsNs) this.latestTsNs = m.tsNs;
    const own = m.direction === 'egress' ? m.src : m.dst;
    if (isWildcard(own.ip) || (isLoopback(own.ip) && !m.netns)) return;
    const s = this.local.get(this.keys.find(m.transport, own, m.netns));
    if (s) {
      s.cgroupId = m.cgroupId;
      s.pid = m.pid;
      return;
    }
    this.remote.delete(this.local.set(m.transport, own, m.netns, { cgroupId: m.cgroupId, pid: m.pid }));
  }

  /** The receiver's (or sender's) copy of a message already submitted: it names the other end. */
  counterpart(first: Message, copy: Message | ReceiverCopy): void {
    first.peerCgroupId = copy.cgroupId;
    first.peerPid = copy.pid;
    this.stats.peerFromCounterpart++;
    this.resolver.lookup(copy.cgroupId, copy.pid);
    if (this.size) this.drain();
  }

  submit(ev: CaptureEvent): void {
    const m = ev.message;
    const own = this.resolver.lookup(m.cgroupId, m.pid);
    const awaitingCounterpart = this.needsCounterpart(m);
    if (this.size === 0 && !awaitingCounterpart && own !== undefined) {
      // Both names known: sent with them as looked up (a look-up by BigInt was ~10 ns, seven a message).
      const peer = m.peerCgroupId === undefined ? null : this.resolver.lookup(m.peerCgroupId, m.peerPid ?? 0);
      if (peer !== undefined) return this.send(ev, own, peer);
    }
    this.hold(ev, awaitingCounterpart);
    this.drain();
  }

  /** Does the other end's identity depend on a copy not seen yet? Sets the peer from the endpoint table when it can. */
  private needsCounterpart(m: Message): boolean {
    if (m.peerCgroupId !== undefined) return false;
    const other = m.direction === 'egress' ? m.dst : m.src;
    if (isLoopback(other.ip) && !m.netns) return true;
    const key = this.keys.find(m.transport, other, m.netns);
    const s = this.local.get(key);
    if (s) {
      m.peerCgroupId = s.cgroupId;
      m.peerPid = s.pid;
      this.resolver.lookup(s.cgroupId, s.pid);
      this.stats.peerFromTable++;
      return false;
    }
    const until = this.remote.get(key);
    if (until !== undefined && until > Date.now()) return false;
    return !isWildcard(other.ip) || other.port !== 0;
  }

  private namesKnown(m: Message): boolean {
    if (this.resolver.lookup(m.cgroupId, m.pid) === undefined) return false;
    return m.peerCgroupId === undefined || this.resolver.lookup(m.peerCgroupId, m.peerPid ?? 0) !== undefined;
  }

  private hold(ev: CaptureEvent, awaitingCounterpart: boolean): void {
    if (this.size >= this.maxHeld) this.releaseOldest();
    let copy = this.payloads.copy(ev.payload);
    while (!copy && this.size) {
      this.releaseOldest();
      copy = this.payloads.copy(ev.payload);
    }
    if (!copy) return this.release(ev); // larger than the whole ring: cannot wait
    ev.payload = copy;
    // Decoded AVPs are views of the bytes they came from: decode the copy.
    if (ev.diameter) ev.diameter = parseDiameter(copy)!;
    this.queue.push({ ev, deadlineMs: Date.now() + this.holdMs, awaitingCounterpart, copy });
    this.stats.held++;
  }

  private releaseOldest(): void {
    this.stats.overflow++;
    this.leave(this.queue[this.head]);
  }

  /** Sends what can go, oldest first; re-arms the timer for the oldest that cannot. */
  private drain(): void {
    const now = Date.now();
    while (this.size) {
      const h = this.queue[this.head];
      const m = h.ev.message;
      if (h.awaitingCounterpart && m.peerCgroupId === undefined && this.latestTsNs - m.tsNs >= this.windowNs) this.missedCounterpart(h);
      const ready = (!h.awaitingCounterpart || m.peerCgroupId !== undefined) && this.namesKnown(m);
      if (!ready && now < h.deadlineMs) break;
      this.leave(h);
    }
    this.arm();
  }

  private missedCounterpart(h: Held): void {
    h.awaitingCounterpart = false;
    this.stats.counterpartMissed++;
    const m = h.ev.message;
    const other = m.direction === 'egress' ? m.dst : m.src;
    if (isLoopback(other.ip)) return;
    this.remote.set(m.transport, other, m.netns, Date.now() + REMOTE_TTL_MS);
  }

  private leave(h: Held): void {
    this.queue[this.head++] = undefined as unknown as Held;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    const m = h.ev.message;
    if (h.awaitingCounterpart && m.peerCgroupId === undefined) this.missedCounterpart(h);
    if (!this.namesKnown(m)) this.stats.unnamed++;
    this.release(h.ev);
    this.payloads.release(h.copy);
  }

  /** Sends `ev` with what is known of both ends now (provisional identities while the runtime is asked). */
  private release(ev: CaptureEvent): void {
    const m = ev.message;
    this.send(ev, this.resolver.best(m.cgroupId), m.peerCgroupId === undefined ? null : this.resolver.best(m.peerCgroupId));
  }

  /**
   * Sends `ev` with the identities of its own cgroup and of its peer's. `container` is the sender's
   * where it was seen sending: the receiver's copy can be the first one (its recv can complete on
   * another CPU before the send's record is written), and then its peer, when on this host, is the sender.
   */
  private send(ev: CaptureEvent, own: ContainerIdentity | null, peer: ContainerIdentity | null): void {
    const m = ev.message;
    const senderIsPeer = m.direction === 'ingress' && m.peerCgroupId !== undefined;
    ev.container = senderIsPeer ? peer : own;
    ev.peerContainer = senderIsPeer ? own : peer;
    this.resolver.count(ev.container, ev.peerContainer);
    this.sink(ev);
  }

  private arm(): void {
    if (this.timer || !this.size) return;
    const wait = Math.max(1, this.queue[this.head].deadlineMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.drain();
    }, wait);
  }

  /** Sends everything held (agent stopping). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.size) this.leave(this.queue[this.head]);
  }

  get size(): number {
    return this.queue.length - this.head;
  }

  sizes() {
    return { holding: this.size, localEndpoints: this.local.size, remoteEndpoints: this.remote.size };
  }
}
