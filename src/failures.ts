import type { Logger } from 'pino';

/** One log line per cause per interval at most: a hostile stream can fail every message. */
const LOG_INTERVAL_MS = 60_000;

/**
 * At most one log line per kind of trouble per interval, whatever a hostile input or client does:
 * the agent's contained failures (below) and the control socket's bad clients share it.
 */
export class LogLimiter {
  private readonly lastLogged = new Map<string, { atMs: number; count: number }>();

  constructor(private readonly intervalMs: number) {}

  /** `count` is how many of `kind` so far: returns how many since the last line if one is due now, else 0. */
  due(kind: string, count: number): number {
    const now = Date.now();
    const last = this.lastLogged.get(kind);
    if (last && now - last.atMs < this.intervalMs) return 0;
    this.lastLogged.set(kind, { atMs: now, count });
    return count - (last?.count ?? 0);
  }
}

/**
 * Failures kept inside one record, message or event, so that no input can take the agent down:
 * counted per cause (the pipeline stage that failed) and logged at most once per cause per interval,
 * with how many happened since.
 */
export class Failures {
  readonly counts: Record<string, number> = {};
  private readonly limiter: LogLimiter;

  constructor(
    private readonly log: Logger,
    intervalMs = LOG_INTERVAL_MS,
  ) {
    this.limiter = new LogLimiter(intervalMs);
  }

  /** Counts a failure under `cause` (the stage that failed); logs it unless this cause was logged within the interval. */
  failed(cause: string, err: unknown): void {
    const count = (this.counts[cause] = (this.counts[cause] ?? 0) + 1);
    const since = this.limiter.due(cause, count);
    if (since === 0) return;
    this.log.error({ cause, failures: since, err: err instanceof Error ? err.stack : String(err) }, 'failure contained: the input it was processing is dropped');
  }
}
