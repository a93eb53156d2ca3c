/** Waiting in tests: on conditions, polled; `sleep` only for a scenario's pacing or a settle. */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits (polling every 50 ms) until `cond` holds; throws naming `what` after timeoutMs. */
export async function until(what: string | (() => string), cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(50);
  }
}
