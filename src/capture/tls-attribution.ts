import { CaptureRecord, F_NO_CONN, SRC_TLS_CONN } from './record.js';

/** How long TLS plaintext waits for its connection's addresses before it goes out without them. */
const HOLD_NS = 1_000_000_000n;
/** Bytes of plaintext held at most; past that the oldest connection goes out without addresses. */
const MAX_HELD_BYTES = 8 << 20;

/** A TLS connection: the library's connection object (tls_id) in its process. */
const heldKey = (r: CaptureRecord) => `${r.pid}:${r.tlsId}`;

interface Held {
  sinceNs: bigint;
  records: Buffer[];
}

/**
 * Gives TLS plaintext the addresses of its connection. An application that moves the ciphertext
 * itself (memory BIO: Kamailio, Node) writes it to the socket after SSL_write returns, so the
 * kernel learns the socket of a new connection only after its first plaintext. Those records
 * (flagged F_NO_CONN) wait here, copied, until a record of the same connection names its socket
 * (a HEPBPF_SRC_TLS_CONN notice or any later plaintext record), then go on in their order. What
 * nothing names within HOLD_NS is forwarded with empty addresses, and counted.
 */
export class TlsAttribution {
  private readonly held = new Map<string, Held>();
  private heldBytes = 0;
  private readonly replay = new CaptureRecord();
  /** Records that waited and got their connection. */
  attributedLate = 0;
  /** Records forwarded without a connection. */
  unattributed = 0;

  constructor(
    private readonly onRecord: (r: CaptureRecord) => void,
    private readonly holdNs = HOLD_NS,
    private readonly maxHeldBytes = MAX_HELD_BYTES,
  ) {}

  /** A TLS record or TLS_CONN notice. */
  push(r: CaptureRecord): void {
    if (!(r.flags & F_NO_CONN)) {
      // Usually nothing waits: the key (a bigint's digits in a string) is made only when something does.
      if (this.held.size) {
        const key = heldKey(r);
        const waiting = this.held.get(key);
        if (waiting) this.release(key, waiting, r);
      }
      if (r.source !== SRC_TLS_CONN) this.onRecord(r);
      return;
    }
    if (r.source === SRC_TLS_CONN) return;
    const key = heldKey(r);
    const waiting = this.held.get(key);
    const copy = Buffer.from(r.raw());
    if (waiting) waiting.records.push(copy);
    else this.held.set(key, { sinceNs: r.tsNs, records: [copy] });
    this.heldBytes += copy.length;
    while (this.heldBytes > this.maxHeldBytes) {
      const [oldest, h] = this.held.entries().next().value as [string, Held];
      this.release(oldest, h);
    }
  }

  /** Sends on, without addresses, what has waited longer than the hold time (nowNs: CLOCK_MONOTONIC). */
  expire(nowNs: bigint): void {
    for (const [key, h] of this.held) if (nowNs - h.sinceNs >= this.holdNs) this.release(key, h);
  }

  /** At stop: everything still waiting goes on without addresses. */
  flush(): void {
    for (const [key, h] of this.held) this.release(key, h);
  }

  get heldRecords(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.records.length;
    return n;
  }

  private release(key: string, h: Held, conn?: CaptureRecord): void {
    this.held.delete(key);
    for (const raw of h.records) {
      this.heldBytes -= raw.length;
      if (conn) conn.copyConnectionTo(raw);
      if (!this.replay.wrap(raw, 0, raw.length)) continue;
      if (conn) this.attributedLate++;
      else this.unattributed++;
      this.onRecord(this.replay);
    }
  }
}
