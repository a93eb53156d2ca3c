import { request as httpRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';

const TIMEOUT_MS = 2000;
const MAX_RESPONSE_BYTES = 16 << 20;

/**
 * GET a JSON document from a runtime's or the API server's HTTP API (over a unix socket when
 * `socketPath` is set, HTTPS when `protocol` is https:); undefined on 404, an error otherwise.
 */
export function getJson(opts: RequestOptions & { path: string }): Promise<unknown> {
  const request = opts.protocol === 'https:' ? httpsRequest : httpRequest;
  const timeout = opts.timeout ?? TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const req = request({ method: 'GET', headers: { host: 'localhost' }, ...opts, timeout }, (res) => {
      const parts: Buffer[] = [];
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        if (bytes > MAX_RESPONSE_BYTES) req.destroy(new Error(`${opts.path}: response over ${MAX_RESPONSE_BYTES} bytes`));
        else parts.push(d);
      });
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
    req.on('timeout', () => req.destroy(new Error(`${opts.path}: no answer within ${timeout} ms`)));
    req.on('error', reject);
    req.end();
  });
}
