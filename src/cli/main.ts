#!/usr/bin/env node
import { Command, Option } from 'commander';
import { doctor } from './doctor.js';
import { runCommand } from './run.js';
import { tailCommand } from './tail.js';
import { containersCommand } from './containers.js';
import { addContainerOptions } from './container-options.js';
import { DEFAULT_NODE_NAME } from '../output/node-name.js';

const program = new Command('hepbpf')
  .description('eBPF host-wide SIP and Diameter tracing agent: forwards every message once as HEPv3')
  .showHelpAfterError();

const collect = (v: string, prev: string[]) => [...prev, v];
const ports = (v: string) =>
  v.split(',').map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`bad port "${p}" in --sip-ports`);
    return n;
  });

addContainerOptions(program
  .command('run')
  .description('capture and forward as HEPv3')
  .option('--hep <url>', 'collector: udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (repeatable)', collect, [])
  .option('--hep-ca <file>', 'PEM CA certificates a tls:// collector\'s certificate must chain to (default: the system\'s)')
  .option('--hep-insecure', 'do not verify tls:// collectors\' certificates')
  .option('--hep-id <n>', 'HEP capture agent id (chunk 0x0c)', (v) => Number(v), 2001)
  .option('--node-name <template>', 'HEP node name (chunk 0x13): {container} {service} {project} {pod} {namespace} {runtime} {id} {image} {host}', DEFAULT_NODE_NAME)
  .option('--auth-key <key>', 'HEP auth key (chunk 0x0e)')
  .option('--sip-ports <list>', 'only sockets with one of these ports (comma separated); default: SIP on any port', ports)
  .addOption(new Option('--diameter-payload <form>', 'HEP payload of Diameter messages: decoded JSON or the exact bytes').choices(['json', 'raw']).default('json'))
  .option('--tls-ip-proto <n>', 'HEP IP protocol (chunk 0x02) of messages that travelled in TLS: 22 as Kamailio siptrace, or 6', (v) => Number(v), 22)
  .option('--no-redact', 'forward authentication secrets (AKA vectors and keys, SDP a=crypto keys, MIKEY) unmasked')
  .option('--connection-events', 'also send TCP connect/accept/close and TLS handshake failures of SIP/Diameter connections (HEP type 100)')
  .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info')))
  .action(runCommand);

addContainerOptions(program
  .command('tail')
  .description('print live SIP and Diameter messages')
  .option('--json', 'one NDJSON record per message on stdout')
  .option('--full', 'include the payload')
  .option('--call-id <id>', 'only this Call-ID')
  .option('--session-id <id>', 'only Diameter messages with this Session-Id')
  .option('--method <method>', 'only requests with this method and their responses')
  .option('--port <n>', 'only messages with this source or destination port', (v) => Number(v))
  .option('--sip-ports <list>', 'capture only sockets with one of these ports', ports)
  .option('--no-redact', 'show authentication secrets unmasked (when tail captures by itself)'))
  .action(tailCommand);

program
  .command('containers')
  .description('the containers a running agent has seen: runtime, name, compose service or pod, message counts')
  .option('--json', 'one JSON object per container')
  .action(containersCommand);

program
  .command('doctor')
  .description('what this host supports, what is missing and how to fix it')
  .action(() => {
    process.exitCode = doctor();
  });

program.parseAsync().catch((err: Error) => {
  process.stderr.write(`hepbpf: ${err.message}\n`);
  process.exit(1);
});
