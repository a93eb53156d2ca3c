/**
 * Real HEP consumers from Debian: Kamailio sipcapture (a Homer-5 capture node storing into sqlite)
 * and sngrep's HEP listener. Both run on 127.0.0.1 and are stopped by PID.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
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

/** Whether process `pid` holds a socket bound to `port` (UDP) or listening on it (TCP), in its own network namespace. */
function holdsSocket(pid: number, port: number, transport: 'udp' | 'tcp'): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const state = transport === 'tcp' ? '0A' : '07'; // TCP_LISTEN; TCP_CLOSE is how an unconnected UDP socket shows
  try {
    const inodes = new Set(
      [transport, `${transport}6`]
        .flatMap((f) => readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1))
        .map((line) => line.trim().split(/\s+/))
        .filter((f) => f[1]?.endsWith(`:${hexPort}`) && f[3] === state)
        .map((f) => `socket:[${f[9]}]`),
    );
    return inodes.size > 0 && readdirSync(`/proc/${pid}/fd`).some((fd) => inodes.has(safeReadlink(`/proc/${pid}/fd/${fd}`)));
  } catch {
    return false; // not started yet, or gone
  }
}

const safeReadlink = (path: string) => {
  try {
    return readlinkSync(path);
  } catch {
    return ''; // closed while we looked
  }
};

/** Resolves once `proc` is bound to `port`, for peers that print nothing when they are ready (sipp, sngrep). */
export async function waitForSocket(proc: ChildProcess, port: number, transport: 'udp' | 'tcp', timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!holdsSocket(proc.pid!, port, transport)) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${proc.spawnfile} exited (${proc.exitCode ?? proc.signalCode}) before binding ${transport} port ${port}`);
    if (Date.now() > deadline) throw new Error(`${proc.spawnfile} did not bind ${transport} port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
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
  // WAL: the test reads the table while Kamailio inserts. In the default rollback journal a reader's
  // lock makes an insert fail at once (Kamailio's db_sqlite sets no busy timeout: the row is lost) and
  // an insert makes the reader fail ("database is locked"); in WAL neither blocks the other.
  execFileSync('sqlite3', [db, `PRAGMA journal_mode=WAL; CREATE TABLE sip_capture (${SIP_CAPTURE_COLUMNS.join(', ')});`]);
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
  // Kamailio lists its sockets on stdout, logs on stderr.
  proc.stdout!.on('data', (d: Buffer) => (log += d));
  proc.stderr!.on('data', (d: Buffer) => (log += d));
  // Ready once the socket is bound (datagrams then queue for the worker), whatever the log says.
  await waitForSocket(proc, port, 'udp', 15_000).catch(async (err) => {
    await stopByPid(proc);
    throw new Error(`sipcapture did not start (${err.message}):\n${log}`);
  });
  return {
    port,
    rows: () => {
      // The busy timeout covers the brief moments WAL still locks a reader out (recovery, the last connection closing).
      const out = execFileSync('sqlite3', ['-json', '-cmd', '.timeout 10000', db, 'SELECT callid, correlation_id, source_ip, source_port, destination_ip, destination_port, proto, msg FROM sip_capture'], { encoding: 'utf8' });
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
  await waitForSocket(proc, port, 'udp').catch(async (err) => {
    await stopByPid(proc);
    throw err;
  });
  return {
    port,
    stop: async () => {
      await stopByPid(proc);
      return sipMessagesFromPcap(readFileSync(pcap));
    },
  };
}
