import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command, type Option } from 'commander';
import { parse as parseYaml } from 'yaml';

/** Parser of a repeatable option: each use adds one value. The config file and environment recognise it by identity. */
export const collect = (v: string, prev: string[] = []) => [...prev, v];

/** Parser of an integer option in [min, max]: anything else (NaN, 1.5, "") is an error naming the option. */
export function integer(flag: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}, got "${v}"`);
    return n;
  };
}

/** `--hold-ms` -> `hold-ms`, `--no-redact` -> `redact`: the key in the config file. */
const configKey = (o: Option) => o.long!.slice(2).replace(/^no-/, '');
/** `hold-ms` -> `HEPBPF_HOLD_MS`. */
export const envName = (key: string) => `HEPBPF_${key.toUpperCase().replace(/-/g, '_')}`;

const isFlag = (o: Option) => !o.required && !o.optional;

function parseBoolean(where: string, v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(1|true|yes|on)$/i.test(v)) return true;
  if (typeof v === 'string' && /^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`${where}: expected true or false, got ${JSON.stringify(v)}`);
}

/** One option's value from the environment (a string) or the config file (YAML scalar or list), parsed as the flag would be. */
function parseValue(o: Option, where: string, v: unknown): unknown {
  if (isFlag(o)) return parseBoolean(where, v);
  const list = Array.isArray(v) ? v : o.parseArg === collect && typeof v === 'string' ? v.split(/[\s,]+/).filter(Boolean) : [v];
  if (list.some((x) => typeof x === 'object' && x !== null)) throw new Error(`${where}: expected a value or a list of values`);
  try {
    if (o.parseArg === collect) return list.map(String);
    const text = list.map(String).join(',');
    return o.parseArg ? o.parseArg(text, undefined) : text;
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`--config ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new Error(`--config ${path}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`--config ${path}: expected a mapping of option: value`);
  return doc as Record<string, unknown>;
}

/**
 * Fills the options of `cmd` not given as flags from HEPBPF_* variables, then from the YAML file
 * named by --config (keys are the long flag names: `hep`, `hold-ms`, `redact`): flag over
 * environment over file over default. Each value goes through the flag's own parser, so it is
 * validated the same way; an error names the variable or the file and key.
 */
export function applyConfig(cmd: Command, env: NodeJS.ProcessEnv = process.env): void {
  const options = cmd.options.filter((o) => o.long && o.long !== '--config');
  const path = cmd.getOptionValue('config') as string | undefined;
  const file = path === undefined ? {} : readConfigFile(path);
  const keys = new Set(options.map(configKey));
  for (const key of Object.keys(file))
    if (!keys.has(key)) throw new Error(`--config ${path}: unknown option "${key}" (known: ${[...keys].join(', ')})`);
  for (const o of options) {
    const attr = o.attributeName();
    if (cmd.getOptionValueSource(attr) === 'cli') continue;
    const key = configKey(o);
    const fromEnv = env[envName(key)];
    if (fromEnv !== undefined) cmd.setOptionValueWithSource(attr, parseValue(o, `${envName(key)}=${fromEnv}`, fromEnv), 'env');
    else if (key in file) cmd.setOptionValueWithSource(attr, parseValue(o, `--config ${path}: ${key}`, file[key]), 'config');
  }
}
