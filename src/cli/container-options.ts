import type { Command } from 'commander';
import type { ContainerFilterOptions } from '../enrich/container-filter.js';
import { DEFAULT_DOCKER_SOCKET, DEFAULT_PODMAN_ROOT, DEFAULT_PODMAN_SOCKET } from '../enrich/containers.js';
import { collect, integer } from './config.js';

export interface ContainerOptions extends ContainerFilterOptions {
  dockerSocket: string;
  podmanSocket: string;
  podmanRoot: string;
  holdMs: number;
}

/** Where names come from and which containers to keep: the same options for `run` and `tail`. */
export function addContainerOptions(cmd: Command): Command {
  return cmd
    .option('--container <glob>', 'only messages from or to a container whose name, id or compose service matches (repeatable)', collect)
    .option('--exclude-container <glob>', 'leave out messages from or to a matching container (repeatable)', collect)
    .option('--pod <glob>', 'only messages from or to a Kubernetes pod whose name matches (repeatable)', collect)
    .option('--namespace <glob>', 'only messages from or to a pod in a matching Kubernetes namespace (repeatable)', collect)
    .option('--docker-socket <path>', 'Docker Engine API socket (container names, compose labels)', DEFAULT_DOCKER_SOCKET)
    .option('--podman-socket <path>', "podman's Docker-compatible API socket, when its service runs", DEFAULT_PODMAN_SOCKET)
    .option('--podman-root <dir>', "podman's storage root, read when its API socket is absent", DEFAULT_PODMAN_ROOT)
    .option('--hold-ms <ms>', 'longest a message waits for its container names before it goes out with what is known', integer('--hold-ms', 0, 60_000), 500);
}
