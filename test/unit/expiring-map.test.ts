/** The bounded expiring table under correlation and selection (src/enrich/expiring-map.ts). */
import { describe, expect, it } from 'vitest';
import { ExpiringMap } from '../../src/enrich/expiring-map.js';

describe('expiring map', () => {
  it('returns an entry until its deadline, not after; take forgets it', () => {
    const m = new ExpiringMap<string, bigint>(10);
    m.set('a', 'A', 100n);
    expect([m.get('a', 100n), m.get('b', 0n)]).toEqual(['A', undefined]);
    expect(m.get('a', 101n)).toBeUndefined();
    expect(m.size).toBe(0); // read past its deadline: dropped
    m.set('a', 'A', 100n);
    expect([m.take('a', 50n), m.get('a', 50n), m.size]).toEqual(['A', undefined, 0]);
  });

  it('when full drops the least recently set, counted; use() makes an entry the most recent and its deadline movable', () => {
    const m = new ExpiringMap<number, number>(3);
    for (const k of ['a', 'b', 'c']) m.set(k, 1, 1000);
    m.get('a', 0); // get leaves the order alone: a is still first
    m.set('d', 1, 1000);
    expect([m.get('a', 0), m.size, m.evicted]).toEqual([undefined, 3, 1]);
    const b = m.use('b', 0)!; // b is now the most recent: c goes next
    b.until = 5000;
    m.set('e', 1, 1000);
    expect([m.get('c', 0), m.get('b', 4000), m.evicted]).toEqual([undefined, 1, 2]);
    // setting a key again replaces it without evicting anything
    m.set('b', 2, 1000);
    expect([m.get('b', 0), m.size, m.evicted]).toEqual([2, 3, 2]);
  });

  it('setting an entry to what it holds leaves it as it is, in its place; a new value or deadline updates it, now the most recent', () => {
    const m = new ExpiringMap<string, number>(2);
    const a = m.set('a', 'A', 10);
    m.set('b', 'B', 10);
    expect(m.set('a', 'A', 10)).toBe(a);
    m.set('c', 'C', 10); // a is still the least recently set
    expect([m.get('a', 0), m.get('b', 0), m.evicted]).toEqual([undefined, 'B', 1]);
    const b = m.set('b', 'B', 20); // a later deadline: now after c
    expect(b).toEqual({ value: 'B', until: 20 });
    expect(m.set('b', 'X', 30)).toBe(b); // the most recent already: updated where it is
    expect(b).toEqual({ value: 'X', until: 30 });
    m.set('d', 'D', 10);
    expect([m.get('c', 0), m.get('b', 0), m.get('d', 0), m.evicted]).toEqual([undefined, 'X', 'D', 2]);
    // b, now the least recent, is set again: it moves after d, which goes next
    m.set('b', 'B', 40);
    m.set('e', 'E', 10);
    expect([m.get('d', 0), m.get('b', 39), m.get('b', 41), m.get('e', 0), m.evicted]).toEqual([undefined, 'B', undefined, 'E', 3]);
  });

  it('an entry taken, expired or evicted and set again is a new one, at the end of the order', () => {
    const m = new ExpiringMap<string, number>(2);
    const a = m.set('a', 'A', 10);
    m.take('a', 0);
    const again = m.set('a', 'A', 20);
    expect(again).not.toBe(a);
    m.set('b', 'B', 10);
    m.set('a', 'A', 30); // a is not the most recent: it moves after b
    m.set('c', 'C', 10);
    expect([m.get('b', 0), m.get('a', 0), m.get('c', 0), m.evicted]).toEqual([undefined, 'A', 'C', 1]);
    m.get('c', 11); // expired: dropped
    m.set('a', 'A', 40); // c, set last, is gone: a moves to the end (of one entry), and d evicts nothing
    m.set('d', 'D', 10);
    expect([m.get('a', 0), m.get('d', 0), m.size, m.evicted]).toEqual(['A', 'D', 2, 1]);
  });

  it('sweep drops expired entries from the front, stopping at the first live one', () => {
    const m = new ExpiringMap<string, number>(10);
    m.set('a', 'A', 10);
    m.set('b', 'B', 20);
    m.set('c', 'C', 5); // behind a live entry: left for a read or the bound
    m.sweep(15);
    expect(m.size).toBe(2);
    expect([m.get('b', 15), m.get('c', 15), m.size]).toEqual(['B', undefined, 1]);
    expect(m.evicted).toBe(0);
  });
});
