#!/usr/bin/env -S node --max-semi-space-size=4
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { doctor } from './doctor.js';
import { runCommand } from './run.js';
import { tailCommand } from './tail.js';
import { containersCommand } from './containers.js';
import { addContainerOptions } from './container-options.js';
import { addSelectionOptions } from './selection-options.js';
import { DEFAULT_NODE_NAME } from '../output/node-name.js';
import { parseListenAddress } from '../output/metrics.js';
import { applyConfig, collect, integer } from './config.js';
import { correlationHeader, correlationRegex, REGEX_SCAN_BYTES } from '../enrich/correlation.js';

const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('hepbpf')
  .description('eBPF host-wide SIP and Diameter tracing agent: forwards every message once as HEPv3')
  .version(version)
  .showHelpAfterError();

const ports = (v: string) =>
  v.split(',').map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`bad port "${p}" in --sip-ports`);
    return n;
  });

addSelectionOptions(addContainerOptions(program
  .command('run')
  .description('capture and forward as HEPv3')
  .option('--hep <url>', 'collector: udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (repeatable: each gets every message); a failover group: \'tcp://PRIMARY:PORT|tcp://BACKUP:PORT\'', collect, [])
  .option('--spool-dir <dir>', 'TCP/TLS collectors: keep what they cannot take now on disk here (created 0700), sent in order once they are back, also after a restart')
  .option('--spool-max-mb <n>', 'bound of the spool, all collectors together; when full the oldest is dropped (counted)', integer('--spool-max-mb', 1, 1_048_576), 1024)
  .option('--hep-ca <file>', 'PEM CA certificates a tls:// collector\'s certificate must chain to (default: the system\'s)')
  .option('--hep-insecure', 'do not verify tls:// collectors\' certificates')
  .option('--hep-id <n>', 'HEP capture agent id (chunk 0x0c)', integer('--hep-id', 0, 0xffffffff), 2001)
  .option('--node-name <template>', 'HEP node name (chunk 0x13): {container} {service} {project} {pod} {namespace} {runtime} {id} {image} {host}', DEFAULT_NODE_NAME)
  .option('--auth-key <key>', 'HEP auth key (chunk 0x0e)')
  .option('--sip-ports <list>', 'only sockets with one of these ports (comma separated); default: SIP on any port', ports)
  .addOption(new Option('--diameter-payload <form>', 'HEP payload of Diameter messages: decoded JSON or the exact bytes').choices(['json', 'raw']).default('json'))
  .option('--tls-ip-proto <n>', 'HEP IP protocol (chunk 0x02) of messages that travelled in TLS: 22 as Kamailio siptrace, or 6', tlsIpProto, 22)
  .option('--no-redact', 'forward authentication secrets (AKA vectors and keys, SDP a=crypto keys, MIKEY) unmasked')
  .option('--correlation-header <name>', 'HEP correlation id (0x11) from this SIP header, e.g. X-CID: of each message carrying it, the rest of its Call-ID and the Diameter tied to that call', optionParser(correlationHeader))
  .option('--correlation-regex <regex>', `as --correlation-header, from a capture group of this regex over the first ${REGEX_SCAN_BYTES} bytes of each SIP message (case-sensitive; no backreferences or lookaround, so that its time is bounded)`, optionParser(correlationRegex))
  .option('--connection-events', 'also send TCP connect/accept/close and TLS handshake failures of SIP/Diameter connections (HEP type 100)')
  .option('--metrics-listen <ip:port>', 'serve Prometheus /metrics, /healthz and /readyz over HTTP, e.g. 127.0.0.1:9464', listenAddress)
  .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
  .option('--config <file>', 'YAML file of options (keys are the long flag names); flags, then HEPBPF_* environment variables, take precedence')))
  .hook('preAction', (cmd) => applyConfig(cmd))
  .action(runCommand);

addSelectionOptions(addContainerOptions(program
  .command('tail')
  .description('print live SIP and Diameter messages')
  .option('--json', 'one NDJSON record per message on stdout')
  .option('--full', 'include the payload')
  .option('--session-id <id>', 'only Diameter messages with this Session-Id')
  .option('--sip-ports <list>', 'capture only sockets with one of these ports', ports)
  .option('--no-redact', 'show authentication secrets unmasked (when tail captures by itself)')
  .option('--pcap <file>', 'also write the messages as pcapng (IP/UDP/TCP synthesized from the captured tuple; TLS as TCP); "-": to stdout instead of the lines')
  .option('--flow', 'draw the messages as a ladder, one column per endpoint (with --call-id: one call), colour on a terminal')))
  .action(tailCommand);

program
  .command('containers')
  .description('the containers a running agent has seen: runtime, name, compose service or pod, message counts')
  .option('--json', 'one JSON object per container')
  .action(containersCommand);

program
  .command('doctor')
  .description('what this host supports, what is missing and how to fix it')
  .option('--json', 'one JSON document: {ok, checks: [{name, ok, required, detail, fix}]}')
  .action((opts: { json?: boolean }) => {
    process.exitCode = doctor(process.stdout, opts.json);
  });

function tlsIpProto(v: string): number {
  const n = integer('--tls-ip-proto', 0, 255)(v);
  if (n !== 22 && n !== 6) throw new InvalidArgumentError('--tls-ip-proto must be 22 (as Kamailio siptrace marks TLS) or 6 (TCP)');
  return n;
}

/** A validator that throws Error as commander's InvalidArgumentError, so the message is shown as an option error. */
function optionParser<T>(validate: (v: string) => T): (v: string) => T {
  return (v) => {
    try {
      return validate(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

function listenAddress(v: string): string {
  return optionParser((address) => {
    parseListenAddress(address);
    return address;
  })(v);
}

program.parseAsync().catch((err: Error) => {
  process.stderr.write(`hepbpf: ${err.message}\n`);
  process.exit(1);
});
