import { request } from 'node:http';

/** What the runtime says about a container: the parts a name, a compose service or a pod is made of. */
export interface ContainerMetadata {
  name: string;
  image?: string;
  labels: Record<string, string>;
}

const LOOKUP_TIMEOUT_MS = 2000;
const MAX_RESPONSE_BYTES = 4 << 20;

/** GET a JSON document over a unix socket; undefined on 404, an error otherwise. */
export function getJsonOverUnixSocket(socketPath: string, path: string, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', headers: { host: 'localhost' }, timeout: timeoutMs }, (res) => {
      const parts: Buffer[] = [];
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        if (bytes > MAX_RESPONSE_BYTES) req.destroy(new Error(`${path}: response over ${MAX_RESPONSE_BYTES} bytes`));
        else parts.push(d);
      });
      res.on('end', () => {
        if (res.statusCode === 404) return resolve(undefined);
        if (res.statusCode !== 200) return reject(new Error(`${path}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Docker Engine API over its unix socket: GET /containers/ID/json. Podman's Docker-compatible
 * service answers the same request the same way.
 */
export class DockerApi {
  constructor(readonly socketPath: string) {}

  async inspect(id: string): Promise<ContainerMetadata | undefined> {
    const doc = (await getJsonOverUnixSocket(this.socketPath, `/containers/${id}/json`)) as
      | { Name?: string; Config?: { Image?: string; Labels?: Record<string, string> | null } }
      | undefined;
    if (!doc) return undefined;
    return { name: (doc.Name ?? '').replace(/^\//, ''), image: doc.Config?.Image, labels: doc.Config?.Labels ?? {} };
  }
}
