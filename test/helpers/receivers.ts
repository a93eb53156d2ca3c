/**
 * Real HEP consumers from Debian: Kamailio sipcapture (a Homer-5 capture node storing into sqlite)
 * and sngrep's HEP listener. Both run on 127.0.0.1 and are stopped by PID.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sipMessagesFromPcap, type WireMessage } from './wire.js';

export function stopByPid(proc: ChildProcess, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const kill = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

// The Homer-5 sip_capture columns that sipcapture inserts (Debian ships no sqlite schema).
const SIP_CAPTURE_COLUMNS = [
  'id INTEGER PRIMARY KEY AUTOINCREMENT', 'date TEXT', 'micro_ts INTEGER', 'method TEXT', 'reply_reason TEXT', 'ruri TEXT',
  'ruri_user TEXT', 'ruri_domain TEXT', 'from_user TEXT', 'from_domain TEXT', 'from_tag TEXT', 'to_user TEXT', 'to_domain TEXT',
  'to_tag TEXT', 'pid_user TEXT', 'contact_user TEXT', 'auth_user TEXT', 'callid TEXT', 'callid_aleg TEXT', 'via_1 TEXT',
  'via_1_branch TEXT', 'cseq TEXT', 'diversion TEXT', 'reason TEXT', 'content_type TEXT', 'auth TEXT', 'user_agent TEXT',
  'source_ip TEXT', 'source_port INTEGER', 'destination_ip TEXT', 'destination_port INTEGER', 'contact_ip TEXT',
  'contact_port INTEGER', 'originator_ip TEXT', 'originator_port INTEGER', 'correlation_id TEXT', 'custom_field1 TEXT',
  'custom_field2 TEXT', 'custom_field3 TEXT', 'proto INTEGER', 'family INTEGER', 'rtp_stat TEXT', 'type INTEGER', 'node TEXT',
  'msg TEXT',
];

export interface SipCaptureRow {
  callid: string;
  correlation_id: string;
  source_ip: string;
  source_port: number;
  destination_ip: string;
  destination_port: number;
  proto: number;
  msg: string;
}

export interface SipCapture {
  port: number;
  rows(): SipCaptureRow[];
  stop(): Promise<void>;
}

/** Kamailio 5.6 sipcapture on udp:127.0.0.1:port, storing into dir/homer.db. */
export async function startSipCapture(dir: string, port: number): Promise<SipCapture> {
  const db = join(dir, 'homer.db');
  execFileSync('sqlite3', [db, `CREATE TABLE sip_capture (${SIP_CAPTURE_COLUMNS.join(', ')});`]);
  const cfg = join(dir, 'sipcapture.cfg');
  writeFileSync(
    cfg,
    `#!KAMAILIO
children=1
log_stderror=yes
listen=udp:127.0.0.1:${port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "db_sqlite.so"
loadmodule "sipcapture.so"
modparam("sipcapture","db_url","sqlite://${db}")
modparam("sipcapture","capture_on",1)
modparam("sipcapture","hep_capture_on",1)
request_route { sip_capture(); drop; }
onreply_route { sip_capture(); drop; }
`,
  );
  const run = join(dir, 'kamailio-run');
  mkdirSync(run, { recursive: true });
  const proc = spawn('kamailio', ['-f', cfg, '-DD', '-E', '-Y', run, '-P', join(run, 'kamailio.pid'), '-m', '64', '-M', '8'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stopByPid(proc);
      reject(new Error(`sipcapture did not start:\n${log}`));
    }, 15_000);
    const onOutput = (d: Buffer) => {
      log += d;
      // Kamailio prints its listening sockets once it is bound.
      if (log.includes(`udp: 127.0.0.1:${port}`)) {
        clearTimeout(timer);
        setTimeout(resolve, 300);
      }
    };
    // Kamailio lists its sockets on stdout, logs on stderr.
    proc.stdout!.on('data', onOutput);
    proc.stderr!.on('data', onOutput);
    proc.once('exit', (code) => reject(new Error(`kamailio exited ${code}:\n${log}`)));
  });
  return {
    port,
    rows: () => {
      // Kamailio may be writing a row right now: wait for its lock (busy timeout) instead of failing with SQLITE_BUSY.
      const out = execFileSync('sqlite3', ['-json', '-cmd', '.timeout 5000', db, 'SELECT callid, correlation_id, source_ip, source_port, destination_ip, destination_port, proto, msg FROM sip_capture'], { encoding: 'utf8' });
      return out.trim() ? (JSON.parse(out) as SipCaptureRow[]) : [];
    },
    stop: () => stopByPid(proc),
  };
}

export interface Sngrep {
  port: number;
  /** Stops sngrep and returns the SIP messages it accepted, from the pcap it wrote. */
  stop(): Promise<WireMessage[]>;
}

/** sngrep listening for HEP on udp:127.0.0.1:port, saving what it decodes to a pcap. */
export async function startSngrep(dir: string, port: number): Promise<Sngrep> {
  const pcap = join(dir, 'sngrep.pcap');
  const proc = spawn('sngrep', ['-N', '-q', '-F', '-L', `udp:127.0.0.1:${port}`, '-O', pcap], { stdio: ['ignore', 'ignore', 'pipe'] });
  // sngrep says nothing when it is ready: wait until its HEP socket is bound.
  for (let i = 0; i < 100; i++) {
    if (readFileSync('/proc/net/udp', 'utf8').includes(`:${port.toString(16).toUpperCase().padStart(4, '0')} `)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    stop: async () => {
      await stopByPid(proc);
      return sipMessagesFromPcap(readFileSync(pcap));
    },
  };
}
