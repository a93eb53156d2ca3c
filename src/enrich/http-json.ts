import { request as httpRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** Longest silence on the connection. */
const TIMEOUT_MS = 2000;
/** Longest a whole answer may take: a server that drips a byte now and then never trips the idle timeout. */
const DEADLINE_MS = 10_000;
/** A pod list of a busy node is a few MiB; a larger answer is refused, not buffered. */
const MAX_RESPONSE_BYTES = 16 << 20;

/**
 * GET a JSON document from a runtime's or the API server's HTTP API (over a unix socket when
 * `socketPath` is set, HTTPS when `protocol` is https:); undefined on 404, an error otherwise
 * (also when the answer is larger than `maxBytes` or not complete within `deadlineMs`).
 */
export function getJson(opts: RequestOptions & { path: string; deadlineMs?: number; maxBytes?: number }): Promise<unknown> {
  const { deadlineMs = DEADLINE_MS, maxBytes = MAX_RESPONSE_BYTES, ...requestOpts } = opts;
  const request = opts.protocol === 'https:' ? httpsRequest : httpRequest;
  const timeout = opts.timeout ?? TIMEOUT_MS;
  let deadline: NodeJS.Timeout | undefined;
  const answer = new Promise<unknown>((resolve, reject) => {
    // Settled first, then the connection dropped: whatever the request and response emit after that is moot.
    const fail = (why: string) => {
      reject(new Error(`${opts.path}: ${why}`));
      req.destroy();
    };
    const req = request({ method: 'GET', headers: { host: 'localhost' }, ...requestOpts, timeout }, (res) => {
      const parts: Buffer[] = [];
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        if (bytes > maxBytes) fail(`response over ${maxBytes} bytes`);
        else parts.push(d);
      });
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode === 404) return resolve(undefined);
        if (res.statusCode !== 200) return reject(new Error(`${opts.path}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => fail(`no answer within ${timeout} ms`));
    req.on('error', reject);
    req.end();
    deadline = setTimeout(() => fail(`no complete answer within ${deadlineMs} ms`), deadlineMs);
  });
  return answer.finally(() => clearTimeout(deadline));
}
