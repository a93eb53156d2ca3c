/**
 * The CLI's operator surface without capture: --version, options from a YAML --config file and
 * HEPBPF_* variables rejected with one line naming the option, and doctor --json. Nothing here
 * loads BPF: every error is found before the agent touches the kernel.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelSuiteSkipReason, CLI, REPO } from '../helpers/agent.js';

const why = kernelSuiteSkipReason('CLI configuration tests');

const hepbpf = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

describe.skipIf(!!why)('hepbpf configuration', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'hepbpf-cli-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('--version prints the package version', () => {
    const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
    const r = hepbpf(['--version']);
    expect([r.status, r.stdout]).toEqual([0, `${version}\n`]);
  });

  it('a bad value from a flag, a HEPBPF_* variable or the config file stops run with one line naming the option', () => {
    const flag = hepbpf(['run', '--hep', 'udp://127.0.0.1:9060', '--hold-ms', 'NaN']);
    expect(flag.status).toBe(1);
    expect(flag.stderr).toMatch(/^error: option '--hold-ms <ms>' argument 'NaN' is invalid\. --hold-ms must be an integer from 0 to 60000, got "NaN"\n/);

    const env = hepbpf(['run', '--hep', 'udp://127.0.0.1:9060'], { HEPBPF_HEP_ID: '-1' });
    expect([env.status, env.stderr]).toEqual([1, 'hepbpf: HEPBPF_HEP_ID=-1: --hep-id must be an integer from 0 to 4294967295, got "-1"\n']);

    const config = join(dir, 'bad.yaml');
    writeFileSync(config, 'hep: [udp://127.0.0.1:9060]\ntls-ip-proto: 17\n');
    const file = hepbpf(['run', '--config', config]);
    expect([file.status, file.stderr]).toEqual([1, `hepbpf: --config ${config}: tls-ip-proto: --tls-ip-proto must be 22 (as Kamailio siptrace marks TLS) or 6 (TCP)\n`]);

    // The flag wins over the file: the file's bad value is never read.
    const fixed = hepbpf(['run', '--config', config, '--tls-ip-proto', '6', '--hep', 'http://x']);
    expect([fixed.status, fixed.stderr]).toEqual([1, 'hepbpf: bad HEP collector "http://x": expected udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (IPv6 as [::1])\n']);
    // The environment wins over the file too.
    const viaEnv = hepbpf(['run', '--config', config], { HEPBPF_TLS_IP_PROTO: '6', HEPBPF_HEP: 'http://y' });
    expect([viaEnv.status, viaEnv.stderr]).toEqual([1, 'hepbpf: bad HEP collector "http://y": expected udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (IPv6 as [::1])\n']);

    const listen = hepbpf(['run', '--hep', 'udp://127.0.0.1:9060', '--metrics-listen', 'localhost:9464']);
    expect(listen.status).toBe(1);
    expect(listen.stderr).toMatch(/--metrics-listen "localhost:9464": expected IP:PORT, e\.g\. 127\.0\.0\.1:9464 or \[::1\]:9464/);
  });

  it('doctor --json prints the same checks as one JSON document', () => {
    const human = hepbpf(['doctor']);
    const r = hepbpf(['doctor', '--json']);
    expect(r.status).toBe(human.status);
    const doc = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; ok: boolean; required: boolean; detail: string }> };
    expect(doc.ok).toBe(true);
    expect(doc.checks.map((c) => c.name)).toEqual(human.stdout.split('\n').filter((l) => /^(ok|warn|FAIL) /.test(l)).map((l) => l.slice(6, 26).trim()));
    for (const c of doc.checks) expect(typeof c.detail).toBe('string');
    for (const name of ['privileges', 'kernel', 'BTF', 'lockdown', 'tracefs', 'build']) expect(doc.checks.find((c) => c.name === name)).toMatchObject({ ok: true, required: true });
  });
});
