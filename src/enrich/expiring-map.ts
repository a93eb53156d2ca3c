/**
 * A map whose entries each have a deadline, bounded in entries: when it is full the entry at the
 * front (the least recently set, or used) goes, counted in `evicted`; an entry past its deadline is
 * never returned. Deadlines are in the owner's clock: capture nanoseconds (bigint) for correlation,
 * milliseconds (number) for selection. Expired entries are dropped when read or by sweep(), which
 * the owner calls now and then.
 */
export interface Expiring<V, T extends number | bigint> {
  value: V;
  /** The last instant at which the entry is live; the owner may move it (see use). */
  until: T;
}

export class ExpiringMap<V, T extends number | bigint> {
  private readonly map = new Map<string, Expiring<V, T>>();
  /** Entries dropped before their time because the map was full. */
  evicted = 0;

  constructor(private readonly maxEntries: number) {}

  /** The entry set or used last: the end of the order (an entry dropped since is never in the map again). */
  private newest?: Expiring<V, T>;

  /**
   * Sets `key`, now the most recently set; returns its entry. An entry that already holds `value`
   * and `until` is left as it is, in its place (a dialog's messages set the same entry over and
   * over). An entry given a new value or deadline is updated, not replaced, and moved to the end of
   * the order unless it is there already: a call's messages, one after the other, refresh its entry
   * with no Map operation and no allocation.
   */
  set(key: string, value: V, until: T): Expiring<V, T> {
    const old = this.map.get(key);
    if (old !== undefined) {
      if (old.value === value && old.until === until) return old;
      old.value = value;
      old.until = until;
      if (old !== this.newest) this.moveToEnd(key, old);
      return old;
    }
    if (this.map.size >= this.maxEntries) {
      this.map.delete(this.map.keys().next().value!);
      this.evicted++;
    }
    const e = { value, until };
    this.map.set(key, e);
    this.newest = e;
    return e;
  }

  /** The live value of `key`; its place in the order is left as it is. */
  get(key: string, now: T): V | undefined {
    return this.live(key, now)?.value;
  }

  /** The live value of `key`, which is forgotten. */
  take(key: string, now: T): V | undefined {
    const v = this.get(key, now);
    this.map.delete(key);
    return v;
  }

  /**
   * The live entry of `key`, now the most recently used (an LRU table): the caller may move its
   * deadline, as long as entries used later keep later deadlines (see sweep).
   */
  use(key: string, now: T): Expiring<V, T> | undefined {
    const e = this.live(key, now);
    if (e !== undefined && e !== this.newest) this.moveToEnd(key, e);
    return e;
  }

  private moveToEnd(key: string, e: Expiring<V, T>): void {
    this.map.delete(key);
    this.map.set(key, e);
    this.newest = e;
  }

  /** Drops expired entries from the front: the owner keeps the order close to deadline order. */
  sweep(now: T): void {
    for (const [k, e] of this.map) {
      if (e.until >= now) break;
      this.map.delete(k);
    }
  }

  get size(): number {
    return this.map.size;
  }

  private live(key: string, now: T): Expiring<V, T> | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.until < now) {
      this.map.delete(key);
      return undefined;
    }
    return e;
  }
}
