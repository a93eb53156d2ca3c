import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stopByPid, waitForSocket } from './receivers.js';

/** Starts a sipp UAS (Debian's sip-tester) on 127.0.0.1:port, resolving once it listens there; stop() ends it by PID. `scenario`: sipp's arguments naming it (and its keys). */
export async function sippUas(port: number, transport: 'u1' | 't1', cwd: string, scenario = ['-sn', 'uas']): Promise<{ proc: ChildProcess; stop(): Promise<void> }> {
  const proc = spawn('sipp', [...scenario, '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-nostdin'], { cwd, stdio: 'ignore' });
  const stop = () => stopByPid(proc);
  await waitForSocket(proc, port, transport === 'u1' ? 'udp' : 'tcp').catch(async (err) => {
    await stop();
    throw err;
  });
  return { proc, stop };
}

/** Runs a sipp UAC for `calls` calls to 127.0.0.1:uasPort, `rate` new calls per second; resolves with its exit code (0: every call succeeded). */
export function sippUac(uasPort: number, port: number, transport: 'u1' | 't1', calls: number, cwd: string, rate = 50, scenario = ['-sn', 'uac']): Promise<number | null> {
  const proc = spawn(
    'sipp',
    [...scenario, `127.0.0.1:${uasPort}`, '-i', '127.0.0.1', '-p', String(port), '-t', transport, '-m', String(calls), '-r', String(rate), '-nostdin', '-timeout', '60', '-timeout_error'],
    { cwd, stdio: 'ignore' },
  );
  return new Promise((r) => proc.once('exit', (code) => r(code)));
}

/**
 * Writes a sipp UAC scenario `name`.xml in `cwd` and returns its path: an INVITE with these extra
 * header lines (sipp keywords such as [call_number] allowed), then ACK and BYE without them.
 */
export function uacScenarioWith(cwd: string, name: string, inviteHeaders: string[]): string {
  const request = (method: string, cseq: number, extra: string[], toTag: string) => `
${method} sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: sut <sip:service@[remote_ip]:[remote_port]>${toTag}
Call-ID: [call_id]
CSeq: ${cseq} ${method}
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
${extra.map((h) => `${h}\n`).join('')}Content-Length: 0

`;
  const file = join(cwd, `${name}.xml`);
  writeFileSync(
    file,
    `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="${name}">
  <send retrans="500"><![CDATA[${request('INVITE', 1, inviteHeaders, '')}]]></send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="200" rtd="true"></recv>
  <send><![CDATA[${request('ACK', 1, [], '[peer_tag_param]')}]]></send>
  <send retrans="500"><![CDATA[${request('BYE', 2, [], '[peer_tag_param]')}]]></send>
  <recv response="200"></recv>
</scenario>
`,
  );
  return file;
}
