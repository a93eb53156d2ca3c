import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { applyConfig, collect, integer } from '../../src/cli/config.js';

const dir = mkdtempSync(join(tmpdir(), 'hepbpf-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
const configFile = (yaml: string) => {
  const path = join(dir, `${files++}.yaml`);
  writeFileSync(path, yaml);
  return path;
};

/** Options of every kind `run` has: repeatable, integer, list, choice, negated flag, flag, string. */
function parse(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let got: Record<string, unknown> | undefined;
  const cmd = new Command('run')
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
    .option('--hep <url>', 'collector', collect, [])
    .option('--hold-ms <ms>', 'hold', integer('--hold-ms', 0, 60_000), 500)
    .option('--sip-ports <list>', 'ports', (v) => v.split(',').map(integer('--sip-ports', 1, 65535)))
    .addOption(new Option('--log-level <level>', 'level').choices(['debug', 'info']).default('info'))
    .option('--no-redact', 'unmasked')
    .option('--hep-insecure', 'no verification')
    .option('--node-name <template>', 'name', '{container}')
    .option('--config <file>', 'YAML')
    .hook('preAction', (c) => applyConfig(c, env))
    .action((opts) => {
      got = opts;
    });
  cmd.parse(argv, { from: 'user' });
  return got!;
}

describe('configuration: flag over environment over file over default', () => {
  it('takes each option from the strongest source that has it', () => {
    const file = configFile('hep: [udp://10.0.0.1:9060, tcp://10.0.0.2:9061]\nhold-ms: 100\nsip-ports: [5060, 5061]\nlog-level: debug\nredact: false\nnode-name: from-file\n');
    expect(parse(['--config', file])).toEqual({
      config: file, hep: ['udp://10.0.0.1:9060', 'tcp://10.0.0.2:9061'], holdMs: 100, sipPorts: [5060, 5061], logLevel: 'debug', redact: false, nodeName: 'from-file',
    });
    const env = { HEPBPF_HOLD_MS: '200', HEPBPF_REDACT: 'true', HEPBPF_HEP: 'udp://10.0.0.3:9060,tcp://10.0.0.4:9061', HEPBPF_HEP_INSECURE: 'yes' };
    expect(parse(['--config', file], env)).toMatchObject({ hep: ['udp://10.0.0.3:9060', 'tcp://10.0.0.4:9061'], holdMs: 200, redact: true, hepInsecure: true, nodeName: 'from-file' });
    expect(parse(['--config', file, '--hold-ms', '300', '--hep', 'udp://10.0.0.5:9060', '--no-redact'], env)).toMatchObject({
      hep: ['udp://10.0.0.5:9060'], holdMs: 300, redact: false, logLevel: 'debug',
    });
    expect(parse([], {})).toEqual({ hep: [], holdMs: 500, logLevel: 'info', redact: true, nodeName: '{container}' });
    expect(parse([], { HEPBPF_SIP_PORTS: '5060', HEPBPF_HEP_INSECURE: 'false' })).toMatchObject({ sipPorts: [5060], hepInsecure: false });
  });

  it('validates every value as the flag would, naming the option and where the value came from', () => {
    expect(() => parse(['--hold-ms', 'NaN'])).toThrow('--hold-ms must be an integer from 0 to 60000, got "NaN"');
    expect(() => parse(['--hold-ms', '1.5'])).toThrow('--hold-ms must be an integer from 0 to 60000, got "1.5"');
    expect(() => parse(['--hold-ms', ''])).toThrow('--hold-ms must be an integer from 0 to 60000, got ""');
    expect(() => parse(['--hold-ms', '60001'])).toThrow('--hold-ms must be an integer from 0 to 60000, got "60001"');
    expect(() => parse([], { HEPBPF_HOLD_MS: 'abc' })).toThrow('HEPBPF_HOLD_MS=abc: --hold-ms must be an integer from 0 to 60000, got "abc"');
    expect(() => parse([], { HEPBPF_REDACT: 'maybe' })).toThrow('HEPBPF_REDACT=maybe: expected true or false, got "maybe"');
    expect(() => parse([], { HEPBPF_LOG_LEVEL: 'loud' })).toThrow(/^HEPBPF_LOG_LEVEL=loud: Allowed choices are debug, info\.$/);
    const bad = configFile('hold-ms: -1\n');
    expect(() => parse(['--config', bad])).toThrow(`--config ${bad}: hold-ms: --hold-ms must be an integer from 0 to 60000, got "-1"`);
    const ports = configFile('sip-ports: [5060, 70000]\n');
    expect(() => parse(['--config', ports])).toThrow(`--config ${ports}: sip-ports: --sip-ports must be an integer from 1 to 65535, got "70000"`);
    const unknown = configFile('hep: udp://10.0.0.1:9060\nhold_ms: 3\n');
    expect(() => parse(['--config', unknown])).toThrow(`--config ${unknown}: unknown option "hold_ms" (known: hep, hold-ms, sip-ports, log-level, redact, hep-insecure, node-name)`);
    const nested = configFile('hep:\n  url: udp://10.0.0.1:9060\n');
    expect(() => parse(['--config', nested])).toThrow(`--config ${nested}: hep: expected a value or a list of values`);
    const notYaml = configFile('hep: [udp://10.0.0.1:9060\n');
    expect(() => parse(['--config', notYaml])).toThrow(new RegExp(`^--config ${notYaml}: `));
    const list = configFile('- hep\n');
    expect(() => parse(['--config', list])).toThrow(`--config ${list}: expected a mapping of option: value`);
    expect(() => parse(['--config', join(dir, 'missing.yaml')])).toThrow(`--config ${join(dir, 'missing.yaml')}: ENOENT`);
  });

  it('an empty file sets nothing', () => {
    expect(parse(['--config', configFile('')])).toMatchObject({ hep: [], holdMs: 500 });
  });
});
