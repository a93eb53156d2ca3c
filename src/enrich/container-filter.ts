/** The container fields filters look at: a ContainerIdentity, or its tail-protocol form. */
export interface ContainerFields {
  id: string;
  name: string;
  service?: string;
  pod?: string;
  namespace?: string;
}

/** `--container`, `--exclude-container`, `--pod`, `--namespace`: globs (`*`, `?`), each repeatable. */
export interface ContainerFilterOptions {
  container?: string[];
  excludeContainer?: string[];
  pod?: string[];
  namespace?: string[];
}

export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

const anyMatch = (res: RegExp[], values: Array<string | undefined>) => values.some((v) => !!v && res.some((re) => re.test(v)));

/**
 * A message belongs to both of its ends: it is kept when its container or its peerContainer
 * matches, and dropped when either matches an exclusion. A container matches by name, id (whole
 * or its 12-digit short form) or compose service. Undefined when no filter is set.
 */
export function containerFilter(o: ContainerFilterOptions): ((c?: ContainerFields | null, peer?: ContainerFields | null) => boolean) | undefined {
  const compile = (g?: string[]) => (g?.length ? g.map(globToRegExp) : undefined);
  const include = compile(o.container);
  const exclude = compile(o.excludeContainer);
  const pod = compile(o.pod);
  const namespace = compile(o.namespace);
  if (!include && !exclude && !pod && !namespace) return undefined;
  const names = (c?: ContainerFields | null) => (c ? [c.name, c.id, c.id.slice(0, 12), c.service] : []);
  return (c, peer) => {
    const ends = [c, peer];
    if (include && !ends.some((e) => anyMatch(include, names(e)))) return false;
    if (exclude && ends.some((e) => anyMatch(exclude, names(e)))) return false;
    if (pod && !ends.some((e) => anyMatch(pod, [e?.pod]))) return false;
    if (namespace && !ends.some((e) => anyMatch(namespace, [e?.namespace]))) return false;
    return true;
  };
}
