import { getJson } from './http-json.js';

/** What the runtime says about a container: the parts a name, a compose service or a pod is made of. */
export interface ContainerMetadata {
  name: string;
  image?: string;
  labels: Record<string, string>;
}

/**
 * Docker Engine API over its unix socket: GET /containers/ID/json. Podman's Docker-compatible
 * service answers the same request the same way.
 */
export class DockerApi {
  constructor(readonly socketPath: string) {}

  async inspect(id: string): Promise<ContainerMetadata | undefined> {
    const doc = (await getJson({ socketPath: this.socketPath, path: `/containers/${id}/json` })) as
      | { Name?: string; Config?: { Image?: string; Labels?: Record<string, string> | null } }
      | undefined;
    if (!doc) return undefined;
    return { name: (doc.Name ?? '').replace(/^\//, ''), image: doc.Config?.Image, labels: doc.Config?.Labels ?? {} };
  }
}
