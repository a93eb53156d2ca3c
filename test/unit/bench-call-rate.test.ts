import { describe, expect, it } from 'vitest';
import { maxCallRate, type CallStep } from '../../bench/call-rate.js';

/** A path that sustains up to `limit` cps; each step "takes" `secs`. */
const pathUpTo = (limit: number, tried: number[], secs = 2) => async (cps: number): Promise<CallStep> => {
  tried.push(cps);
  return cps <= limit ? { cps, ok: true, secs } : { cps, ok: false, secs, why: 'failed' };
};

describe('bench call-rate search', () => {
  it('doubles until a step fails, then bisects to the resolution', async () => {
    const tried: number[] = [];
    const r = await maxCallRate({ first: 200, max: 6400, resolution: 50, budgetSecs: 90 }, pathUpTo(1130, tried));
    expect(tried).toEqual([200, 400, 800, 1600, 1200, 1000, 1100, 1150]);
    expect(r.maxCps).toBe(1100);
    expect(r.cutShort).toBeUndefined();
  });

  it('stops at the highest rate when nothing fails, and reports 0 when the first rate fails', async () => {
    expect((await maxCallRate({ first: 500, max: 2000, resolution: 125, budgetSecs: 90 }, pathUpTo(1e6, []))).maxCps).toBe(2000);
    expect((await maxCallRate({ first: 500, max: 2000, resolution: 125, budgetSecs: 90 }, pathUpTo(100, []))).maxCps).toBe(0);
  });

  it('is cut short by its budget and says what it reached', async () => {
    const tried: number[] = [];
    const slowStep = async (cps: number) => {
      await new Promise((r) => setTimeout(r, 30));
      return pathUpTo(1130, tried)(cps);
    };
    const r = await maxCallRate({ first: 200, max: 6400, resolution: 50, budgetSecs: 0.1 }, slowStep);
    expect(tried.length).toBeLessThan(8);
    expect(r.maxCps).toBe(tried.filter((c) => c <= 1130).pop());
    expect(r.cutShort).toMatch(/^cut short by its 0.1 s bound after \d+ steps/);
  });
});
