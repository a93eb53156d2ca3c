/**
 * The DaemonSet's path to the API server, as in a pod: KUBERNETES_SERVICE_HOST/PORT and NODE_NAME
 * from the environment, the service account's token and ca.crt from its directory, HTTPS to a local
 * server (no cluster runs here) whose certificate openssl made and signed with that CA for 127.0.0.1.
 */
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:https';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubernetesPods } from '../../src/enrich/kubernetes.js';

const ID = 'a'.repeat(64);
const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.service-account.signature';
const POD_LIST = {
  kind: 'PodList',
  items: [{ metadata: { name: 'pcscf-0', namespace: 'ims', uid: '1d2c3b4a-5e6f-4a1b-9c8d-0e1f2a3b4c5d' }, status: { containerStatuses: [{ name: 'kamailio', containerID: `containerd://${ID}` }] } }],
};

/** A CA and a server certificate for IP 127.0.0.1 signed by it, in `dir`. */
function makeCa(dir: string, name: string): { ca: string; key: string; cert: string } {
  const p = (f: string) => join(dir, `${name}-${f}`);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', `/CN=${name}-ca`);
  ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=kubernetes');
  writeFileSync(p('ext'), 'subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n');
  ossl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.crt'), '-days', '2', '-extfile', p('ext'));
  return { ca: p('ca.crt'), key: p('server.key'), cert: p('server.crt') };
}

describe('Kubernetes API over HTTPS with the service account', () => {
  let dir: string;
  let server: Server;
  let port: number;
  let cluster: ReturnType<typeof makeCa>;
  let other: ReturnType<typeof makeCa>;
  const seen: Array<{ url?: string; auth?: string }> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-k8s-'));
    cluster = makeCa(dir, 'cluster');
    other = makeCa(dir, 'other');
    server = createServer({ key: readFileSync(cluster.key), cert: readFileSync(cluster.cert) }, (req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.statusCode = 401;
        return res.end('{"kind":"Status","code":401}');
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(POD_LIST));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A service-account directory as the kubelet mounts it. */
  const serviceAccount = (name: string, ca: string, token = TOKEN) => {
    const sa = join(dir, name);
    mkdirSync(sa);
    writeFileSync(join(sa, 'token'), `${token}\n`);
    writeFileSync(join(sa, 'ca.crt'), readFileSync(ca));
    return sa;
  };
  const env = () => ({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port), NODE_NAME: 'worker-1' });

  it('verifies the API server against ca.crt and sends the token: pods of this node are named', async () => {
    seen.length = 0;
    const pods = KubernetesPods.inCluster(env(), serviceAccount('sa-good', cluster.ca))!;
    expect(await pods.lookup(ID)).toEqual({ pod: 'pcscf-0', namespace: 'ims', container: 'kamailio' });
    expect(seen).toEqual([{ url: '/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1', auth: `Bearer ${TOKEN}` }]);
    expect(pods.errors).toBe(0);
  });

  it('refuses an API server whose certificate does not chain to ca.crt: nothing sent, counted as an error', async () => {
    seen.length = 0;
    const pods = KubernetesPods.inCluster(env(), serviceAccount('sa-other-ca', other.ca))!;
    expect(await pods.lookup(ID)).toBeUndefined();
    expect(seen).toEqual([]);
    expect(pods.errors).toBe(1);
  });

  it('a rejected token leaves names unknown and counts the error', async () => {
    seen.length = 0;
    const pods = KubernetesPods.inCluster(env(), serviceAccount('sa-bad-token', cluster.ca, 'expired'))!;
    expect(await pods.lookup(ID)).toBeUndefined();
    expect(seen).toEqual([{ url: '/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1', auth: 'Bearer expired' }]);
    expect(pods.errors).toBe(1);
  });

  it('outside a pod (no KUBERNETES_SERVICE_HOST or NODE_NAME) there is no API path', () => {
    expect(KubernetesPods.inCluster({ NODE_NAME: 'worker-1' }, join(dir, 'sa-good'))).toBeUndefined();
    expect(KubernetesPods.inCluster({ KUBERNETES_SERVICE_HOST: '127.0.0.1' }, join(dir, 'sa-good'))).toBeUndefined();
  });
});
