import { hostname } from 'node:os';
import type { ContainerIdentity } from '../enrich/containers.js';
import { MAX_TEXT_CHUNK_BYTES, utf8Prefix } from '../hep/chunks.js';

/** The default HEP node name: the container's name, the host's for host processes. */
export const DEFAULT_NODE_NAME = '{container}';

const FIELDS = ['host', 'container', 'id', 'runtime', 'service', 'project', 'pod', 'namespace', 'image'] as const;

/**
 * HEP node name (chunk 0x13) from a template such as `{container}`, `{project}/{service}` or
 * `{namespace}/{pod}`: homer 7 (heplify-server) shows and searches it as the node. Rendered once
 * per container and kept with it: the hot path copies a ready buffer. At most MAX_TEXT_CHUNK_BYTES,
 * cut between characters.
 */
export class NodeNameTemplate {
  private readonly cache = new WeakMap<ContainerIdentity, Buffer>();
  private readonly forHost: Buffer;
  /** Names cut to MAX_TEXT_CHUNK_BYTES (a runtime API can return a name or label of any length). */
  cut = 0;

  constructor(
    private readonly template: string,
    private readonly host = hostname(),
  ) {
    const unknown = [...template.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).filter((f) => !(FIELDS as readonly string[]).includes(f));
    if (unknown.length) throw new Error(`--node-name: unknown field {${unknown[0]}}; known: ${FIELDS.map((f) => `{${f}}`).join(' ')}`);
    this.forHost = this.renderText(null);
  }

  render(c: ContainerIdentity | null): Buffer {
    if (!c) return this.forHost;
    let b = this.cache.get(c);
    if (!b) this.cache.set(c, (b = this.renderText(c)));
    return b;
  }

  private renderText(c: ContainerIdentity | null): Buffer {
    const value: Record<(typeof FIELDS)[number], string | undefined> = {
      host: this.host,
      container: c ? c.name : this.host,
      id: c?.id.slice(0, 12),
      runtime: c?.runtime,
      service: c?.service,
      project: c?.project,
      pod: c?.pod,
      namespace: c?.namespace,
      image: c?.image,
    };
    let filled = false;
    const text = this.template.replace(/\{([a-z]+)\}/g, (_, f: (typeof FIELDS)[number]) => {
      filled ||= !!value[f];
      return value[f] ?? '';
    });
    // A template none of whose fields apply (`{namespace}/{pod}` for a host process) names the host.
    const name = Buffer.from(filled ? text : this.host);
    if (name.length <= MAX_TEXT_CHUNK_BYTES) return name;
    this.cut++;
    return utf8Prefix(name);
  }
}
