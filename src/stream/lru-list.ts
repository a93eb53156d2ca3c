/** A member of an LruList: the list runs through these two fields of its members. */
export interface LruNode<T> {
  older?: T;
  newer?: T;
}

/**
 * Members in order of last use, a doubly linked list through the members themselves: moving one to the
 * newest end costs no allocation and no Map delete and re-insert.
 */
export class LruList<T extends LruNode<T>> {
  oldest?: T;
  newest?: T;

  /** `n` was just used: it goes to the newest end (added if it was not in the list). */
  touch(n: T): void {
    if (this.newest === n) return;
    this.remove(n);
    n.older = this.newest;
    if (this.newest) this.newest.newer = n;
    else this.oldest = n;
    this.newest = n;
  }

  /** Takes `n` out of the list (nothing if it was not in it). */
  remove(n: T): void {
    if (n.older) n.older.newer = n.newer;
    else if (this.oldest === n) this.oldest = n.newer;
    if (n.newer) n.newer.older = n.older;
    else if (this.newest === n) this.newest = n.older;
    n.older = n.newer = undefined;
  }
}
