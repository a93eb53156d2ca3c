/**
 * `npm run bench -- --only=start`: no loss at start. A fresh agent per round; the moment it logs
 * `ready`, 800-byte SIP messages go at 20k/s for 8 s between two local processes (UDP), and every
 * message must be forwarded once. The baseline is what the receiver got without the agent.
 */
export interface ColdStartContext {
  say(line?: string): void;
  table(rows: string[][]): void;
  startAgent(hep: string): Promise<{ stop(): Promise<Record<string, any>> }>;
  startCounter(port: number): Promise<{ settle(): Promise<number>; stop(): Promise<number> }>;
  flood(rate: number, secs: number): Promise<{ sent: number; received: number }>;
  port(): number;
}

const RATE = 20_000;
const SECS = 8;
const ROUNDS = 3;

export async function coldStartBench(ctx: ColdStartContext): Promise<Record<string, unknown>> {
  ctx.say(`\n(start) a fresh agent, then ${RATE / 1000}k SIP messages/s over UDP for ${SECS} s from the moment it is ready (${ROUNDS} rounds)`);
  const rows = [['round', 'sent', 'received (no agent)', 'forwarded', 'lost', 'kernel ring buffer full']];
  const rounds: object[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const base = await ctx.flood(RATE, SECS);
    const hepPort = ctx.port();
    const counter = await ctx.startCounter(hepPort);
    try {
      const agent = await ctx.startAgent(`udp://127.0.0.1:${hepPort}`);
      const f = await ctx.flood(RATE, SECS);
      const forwarded = await counter.settle();
      const stats = await agent.stop();
      const ringbufFull = stats.capture?.kernel?.ringbufFull ?? NaN;
      rounds.push({ sent: f.sent, received: f.received, baseline: base, forwarded, lost: f.sent - forwarded, ringbufFull });
      rows.push([String(r + 1), String(f.sent), `${base.received}/${base.sent}`, String(forwarded), String(f.sent - forwarded), String(ringbufFull)]);
    } finally {
      await counter.stop();
    }
  }
  ctx.table(rows);
  return { rate: RATE, seconds: SECS, rounds };
}
