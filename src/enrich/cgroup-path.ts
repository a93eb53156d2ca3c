/** Which runtime made a container, as its cgroup path names it. */
export type Runtime = 'docker' | 'containerd' | 'cri-o' | 'podman' | 'kubernetes';

/** What a cgroup v2 path alone says about the container a process runs in. */
export interface CgroupContainer {
  runtime: Runtime;
  /** 64 hex digits. */
  id: string;
  /** Kubernetes pod UID (dashes restored) when the path runs through a kubepods pod directory. */
  podUid?: string;
}

const ID = '([0-9a-f]{64})';

/**
 * Path segments that name a container, by runtime. The systemd driver makes `<prefix>-<id>.scope`
 * units; the cgroupfs driver makes plain directories. Conmon and other helper scopes
 * (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) carry the id of the container they watch
 * but are not the container: they do not match.
 */
const SEGMENT_RULES: Array<{ re: RegExp; runtime: Runtime }> = [
  { re: new RegExp(`^docker-${ID}\\.scope$`), runtime: 'docker' },
  { re: new RegExp(`^cri-containerd-${ID}\\.scope$`), runtime: 'containerd' },
  { re: new RegExp(`^crio-${ID}\\.scope$`), runtime: 'cri-o' },
  { re: new RegExp(`^libpod-${ID}(?:\\.scope)?$`), runtime: 'podman' },
  // containerd's cgroupfs-nested form under systemd: "kubepods-...-pod<uid>.slice:cri-containerd:<id>"
  { re: new RegExp(`:cri-containerd:${ID}$`), runtime: 'containerd' },
];

const POD_SEGMENT = /^(?:[a-z]+(?:-[a-z]+)*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$/;
const BARE_ID = new RegExp(`^${ID}$`);

/**
 * The container a cgroup path belongs to, or null for a host process. Paths may be relative to a
 * cgroup namespace (`/../../besteffort/pod<uid>/<id>`, where the kubepods ancestors are out of
 * sight): only segments are looked at, so a `pod<uid>` segment is enough to name a pod. The
 * innermost container segment wins (docker-in-docker, a container inside a pod).
 */
export function containerFromCgroupPath(path: string): CgroupContainer | null {
  const segments = path.split('/');
  let podUid: string | undefined;
  let found: CgroupContainer | null = null;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (!seg || seg === '..') continue;
    // "<pod slice>:cri-containerd:<id>" names the pod and the container in one segment.
    const pod = POD_SEGMENT.exec(seg.split(':')[0]);
    if (pod) podUid = pod[1].replace(/_/g, '-');
    if (pod && !seg.includes(':')) {
      continue;
    }
    const rule = SEGMENT_RULES.find((r) => r.re.test(seg));
    if (rule) {
      found = { runtime: rule.runtime, id: rule.re.exec(seg)![1] };
      continue;
    }
    // cgroupfs drivers: "/docker/<id>", "/libpod_parent/libpod-<id>" (above), "/kubepods/<qos>/pod<uid>/<id>".
    if (BARE_ID.test(seg)) {
      const parent = segments[i - 1];
      if (parent === 'docker') found = { runtime: 'docker', id: seg };
      else if (podUid) found = { runtime: 'kubernetes', id: seg };
    }
  }
  if (found && podUid) found.podUid = podUid;
  return found;
}
