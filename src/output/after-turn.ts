/**
 * Returns a function that runs `fn` once after the current event-loop turn however often it is
 * called in that turn: what a sender is given while the agent works through one batch of kernel
 * records leaves together, right after it.
 */
export function afterTurn(fn: () => void): () => void {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      fn();
    });
  };
}
