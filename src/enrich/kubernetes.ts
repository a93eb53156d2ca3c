import { readFileSync } from 'node:fs';
import { getJson } from './http-json.js';

/** Who a container is in Kubernetes terms. */
export interface PodContainer {
  pod: string;
  namespace: string;
  /** Absent when only the pod is known (found by pod UID, e.g. its sandbox). */
  container?: string;
}

interface PodList {
  items?: Array<{
    metadata?: { name?: string; namespace?: string; uid?: string };
    status?: { containerStatuses?: ContainerStatus[]; initContainerStatuses?: ContainerStatus[]; ephemeralContainerStatuses?: ContainerStatus[] };
  }>;
}
interface ContainerStatus {
  name?: string;
  /** "containerd://<64 hex>", "cri-o://...", "docker://..." */
  containerID?: string;
}

/** Indexes a pod list (GET /api/v1/pods) by container id and by pod UID. */
export function indexPods(list: PodList): { byContainer: Map<string, PodContainer>; byPodUid: Map<string, PodContainer> } {
  const byContainer = new Map<string, PodContainer>();
  const byPodUid = new Map<string, PodContainer>();
  for (const pod of list.items ?? []) {
    const { name, namespace, uid } = pod.metadata ?? {};
    if (!name || !namespace) continue;
    if (uid) byPodUid.set(uid, { pod: name, namespace });
    const s = pod.status ?? {};
    for (const c of [...(s.containerStatuses ?? []), ...(s.initContainerStatuses ?? []), ...(s.ephemeralContainerStatuses ?? [])]) {
      const id = c.containerID?.replace(/^[a-z-]+:\/\//, '');
      if (id && c.name) byContainer.set(id, { pod: name, namespace, container: c.name });
    }
  }
  return { byContainer, byPodUid };
}

export interface KubernetesApiOptions {
  /** e.g. https://10.96.0.1:443 */
  url: string;
  /** Only this node's pods are listed (fieldSelector spec.nodeName). */
  nodeName: string;
  token?: string;
  ca?: Buffer;
}

const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';
/** A miss refreshes the pod list at most this often: a pod that is not listed yet is listed soon after. */
const REFRESH_MIN_MS = 2000;
const TIMEOUT_MS = 5000;

/**
 * Pod, namespace and container names from the API server, for an agent running as a DaemonSet: one
 * pod list of this node, refreshed on a miss (rate-limited), never per message.
 */
export class KubernetesPods {
  private index = indexPods({});
  private lastRefresh = 0;
  private refreshing?: Promise<void>;
  errors = 0;

  constructor(private readonly opts: KubernetesApiOptions) {}

  /** In a pod with a service account and NODE_NAME set from spec.nodeName (deploy/daemonset.yaml), else undefined. */
  static inCluster(env = process.env, serviceAccount = SERVICE_ACCOUNT): KubernetesPods | undefined {
    const host = env.KUBERNETES_SERVICE_HOST;
    if (!host || !env.NODE_NAME) return undefined;
    const read = (f: string) => {
      try {
        return readFileSync(`${serviceAccount}/${f}`);
      } catch {
        return undefined;
      }
    };
    const url = `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT ?? 443}`;
    return new KubernetesPods({ url, nodeName: env.NODE_NAME, token: read('token')?.toString().trim(), ca: read('ca.crt') });
  }

  async lookup(containerId: string, podUid?: string): Promise<PodContainer | undefined> {
    const find = () => this.index.byContainer.get(containerId) ?? (podUid ? this.index.byPodUid.get(podUid) : undefined);
    const hit = find();
    if (hit?.container || Date.now() - this.lastRefresh < REFRESH_MIN_MS) return hit;
    await (this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined)));
    return find();
  }

  private async refresh(): Promise<void> {
    this.lastRefresh = Date.now();
    try {
      this.index = indexPods((await this.get(`/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${this.opts.nodeName}`)}`)) as PodList);
    } catch {
      this.errors++; // the names stay as they were; ids and runtime are still right
    }
  }

  private get(path: string): Promise<unknown> {
    const u = new URL(this.opts.url);
    return getJson({
      protocol: u.protocol,
      hostname: u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port,
      path,
      headers: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
      ca: this.opts.ca,
      timeout: TIMEOUT_MS,
    } as Parameters<typeof getJson>[0]);
  }
}
