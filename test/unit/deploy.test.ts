/**
 * deploy/ read as the tools that consume it do: the DaemonSet against the Kubernetes schema
 * (kubernetes-models, the API's OpenAPI definitions), the systemd unit by `systemd-analyze verify`,
 * the compose file by `docker-compose config`. The three grant the same, measured capabilities
 * (test/e2e/capabilities.test.ts runs the agent with exactly them).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { REPO } from '../helpers/agent.js';
import { AGENT_NODE_FLAGS } from '../../src/cli/node-flags.js';

const DEPLOY = join(REPO, 'deploy');
/** What the agent needs to capture TLS plaintext too (README "Privileges"). */
const DEPLOY_CAPABILITIES = ['SYS_ADMIN', 'SYS_PTRACE'];

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  DaemonSet,
  ServiceAccount,
  ClusterRole,
  ClusterRoleBinding,
};

describe('deploy/daemonset.yaml', () => {
  const docs = parseAllDocuments(readFileSync(join(DEPLOY, 'daemonset.yaml'), 'utf8')).map((d) => d.toJS());
  const ds = docs.find((d) => d.kind === 'DaemonSet');
  const pod = ds.spec.template.spec;
  const agent = pod.containers[0];

  it('every object is valid against the Kubernetes schema', () => {
    expect(docs.map((d) => d.kind)).toEqual(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet']);
    for (const d of docs) expect(() => new MODELS[d.kind](d as never).validate(), d.kind).not.toThrow();
  });

  it('the schema check can fail: a misspelt policy and a probe without a port are refused', () => {
    const broken = structuredClone(ds);
    broken.spec.template.spec.dnsPolicy = 'ClusterFirstWithHostNetwork';
    delete broken.spec.template.spec.containers[0].livenessProbe.httpGet.port;
    expect(() => new DaemonSet(broken).validate()).toThrow(/dnsPolicy must be equal to one of[\s\S]*|httpGet must have required property 'port'/);
  });

  it('runs on every node, resolves cluster names on the host network, and is node-critical', () => {
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.priorityClassName).toBe('system-node-critical');
  });

  it('has requests and limits, and probes on the agent\'s --metrics-listen port', () => {
    expect(agent.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    expect(agent.resources.limits).toEqual({ cpu: '1', memory: '512Mi' });
    const listen = agent.args[agent.args.indexOf('--metrics-listen') + 1];
    expect(listen).toBe('0.0.0.0:9464');
    expect(agent.ports).toEqual([{ name: 'metrics', containerPort: 9464, protocol: 'TCP' }]);
    expect(agent.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(agent.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
  });

  it('runs the image the Dockerfile builds, with exactly the measured capabilities', () => {
    expect(readFileSync(join(REPO, 'Dockerfile'), 'utf8')).toMatch(/^# hepbpf container image: docker build -t hepbpf:latest \.$/m);
    expect(agent.image).toBe('hepbpf:latest');
    expect(agent.securityContext).toEqual({ privileged: false, capabilities: { drop: ['ALL'], add: DEPLOY_CAPABILITIES } });
    expect(agent.volumeMounts).toContainEqual({ name: 'tracefs', mountPath: '/sys/kernel/tracing' });
  });
});

describe('deploy/hepbpf.service', () => {
  const unit = readFileSync(join(DEPLOY, 'hepbpf.service'), 'utf8');

  it('passes systemd-analyze verify without a warning', () => {
    const r = spawnSync('systemd-analyze', ['verify', join(DEPLOY, 'hepbpf.service')], { encoding: 'utf8' });
    expect(r.error, 'systemd-analyze (Debian package systemd) missing').toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });

  it('runs node itself as root bounded to the measured capabilities, with no ambient set', () => {
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/node (--[\w-]+=\S+ )*\/opt\/hepbpf\/dist\/src\/cli\/main\.js run /m);
    expect(unit).toMatch(/^User=root$/m);
    expect(/^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1].split(' ')).toEqual(DEPLOY_CAPABILITIES.map((c) => `CAP_${c}`));
    expect(unit).not.toMatch(/^AmbientCapabilities=/m);
  });
});

describe('deploy/docker-compose.yml', () => {
  it('is what docker-compose reads: cap_drop ALL, exactly the measured capabilities, the host\'s tracefs', () => {
    const r = spawnSync('docker-compose', ['-f', join(DEPLOY, 'docker-compose.yml'), 'config'], { encoding: 'utf8', env: { ...process.env, HEPBPF_HEP: 'udp://127.0.0.1:9999' } });
    expect(r.error, 'docker-compose (Debian package docker-compose) missing').toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    const svc = parse(r.stdout).services.hepbpf;
    expect(svc.cap_drop).toEqual(['ALL']);
    expect(svc.cap_add).toEqual(DEPLOY_CAPABILITIES);
    expect(svc.command).toEqual(['run', '--hep', 'udp://127.0.0.1:9999', '--node-name', '{service}']);
    expect(svc.volumes).toContain('/sys/kernel/tracing:/sys/kernel/tracing:rw');
    expect(svc.security_opt).toEqual(['apparmor:unconfined']);
  });
});

describe('V8 flags of the agent (src/cli/node-flags.ts)', () => {
  it('every launcher starts node with them', () => {
    const flags = AGENT_NODE_FLAGS.join(' ');
    const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
    expect(read('src/cli/main.ts').split('\n')[0]).toBe(`#!/usr/bin/env -S node ${flags}`);
    expect(read('scripts/start.sh')).toContain(`exec node ${flags} dist/src/cli/main.js run`);
    expect(read('deploy/hepbpf.service')).toContain(`ExecStart=/usr/bin/node ${flags} /opt/hepbpf/dist/src/cli/main.js`);
    expect(read('Dockerfile')).toContain(`"node", ${AGENT_NODE_FLAGS.map((f) => JSON.stringify(f)).join(', ')}, "/opt/hepbpf/dist/src/cli/main.js"`);
  });
});
