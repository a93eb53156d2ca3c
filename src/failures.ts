import type { Logger } from 'pino';

/** One log line per cause per interval at most: a hostile stream can fail every message. */
const LOG_INTERVAL_MS = 60_000;

/**
 * Failures kept inside one record, message or event, so that no input can take the agent down:
 * counted per cause (the pipeline stage that failed) and logged at most once per cause per interval,
 * with how many happened since.
 */
export class Failures {
  readonly counts: Record<string, number> = {};
  private readonly lastLogged = new Map<string, { atMs: number; count: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = LOG_INTERVAL_MS,
  ) {}

  /** Counts a failure under `cause` (the stage that failed); logs it unless this cause was logged within the interval. */
  failed(cause: string, err: unknown): void {
    const count = (this.counts[cause] = (this.counts[cause] ?? 0) + 1);
    const now = Date.now();
    const last = this.lastLogged.get(cause);
    if (last && now - last.atMs < this.intervalMs) return;
    this.lastLogged.set(cause, { atMs: now, count });
    const since = count - (last?.count ?? 0);
    this.log.error({ cause, failures: since, err: err instanceof Error ? err.stack : String(err) }, 'failure contained: the input it was processing is dropped');
  }
}
