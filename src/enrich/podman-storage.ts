import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerMetadata } from './docker-api.js';

/** One entry of containers/storage's `<driver>-containers/containers.json`. */
interface StorageContainer {
  id: string;
  names?: string[];
  /** A JSON document podman writes: {"image-name": ..., "name": ...}. */
  metadata?: string;
}

/**
 * Podman's own metadata, for hosts where its API service is not running: containers/storage keeps
 * every container's id, names and image in `<root>/<driver>-containers/containers.json` (root
 * /var/lib/containers/storage by default). Labels are not in it.
 */
export class PodmanStorage {
  constructor(readonly root: string) {}

  async inspect(id: string): Promise<ContainerMetadata | undefined> {
    const dirs = await readdir(this.root).catch(() => [] as string[]);
    for (const d of dirs.filter((x) => x.endsWith('-containers'))) {
      const list = await readFile(join(this.root, d, 'containers.json'), 'utf8').then((t) => JSON.parse(t) as StorageContainer[], () => []);
      const c = list.find((x) => x.id === id);
      if (!c) continue;
      let image: string | undefined;
      try {
        image = c.metadata ? (JSON.parse(c.metadata) as { 'image-name'?: string })['image-name'] : undefined;
      } catch {
        image = undefined; // metadata is podman's own: a format change costs the image name only
      }
      return { name: c.names?.[0] ?? id.slice(0, 12), image, labels: {} };
    }
    return undefined;
  }
}
