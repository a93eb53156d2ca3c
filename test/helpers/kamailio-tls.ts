/**
 * SIP over TLS between two real Kamailio 5.6 proxies, with Kamailio's own siptrace as ground truth:
 *
 *   sipp UAC --UDP--> edge (udp:E) --TLS--> core (tls:C) --UDP--> sipp UAS
 *
 * Both proxies mirror every message they receive or send as HEPv3 to one test-owned UDP collector
 * (siptrace trace_mode 1: the core's net-data receive event, raised on each framed, decrypted message
 * before any module or the script can rewrite it, and its send event). tlsMessages() keeps the messages received over TLS: requests as
 * the core received them, replies as the edge received them, so each TLS wire message appears once.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KAMAILIO_MODULES, siptraceHep } from '../../bench/kamailio.js';
import { decodeHep } from '../../src/hep/decode.js';
import { freePort, udpCollector, type HepCollector } from './collector.js';
import { stopByPid } from './receivers.js';
import { sippUac, sippUas } from './sipp.js';

export interface TlsHopMessage {
  /** Which proxy received it over TLS: the core receives the requests, the edge the replies. */
  receiver: 'edge' | 'core';
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  /** HEP IP protocol as siptrace sets it: 22 (IPPROTO_IDP) stands for TLS. */
  ipProto: number;
  payload: Buffer;
}

export interface KamailioTlsHop {
  /** UDP port the sipp UAC sends to. */
  edgePort: number;
  /** TLS port of the core. */
  corePort: number;
  /** UDP port of the sipp UAS. */
  uasPort: number;
  /** Kamailio main pid (from its -P pid file) first, then its children. */
  pids: { edge: number[]; core: number[] };
  /** Messages received over TLS by either proxy, as siptrace reported them (ground truth), in arrival order. */
  tlsMessages(): TlsHopMessage[];
  /** Resolves once `count` TLS messages were reported, then waits `settleMs` more so extra ones would be seen too. */
  waitForTlsMessages(count: number, timeoutMs?: number, settleMs?: number): Promise<TlsHopMessage[]>;
  /** Runs `calls` calls of sipp's default uac scenario through the hop, 50 (or `rate`) a second; resolves with sipp's exit code (0: all succeeded). */
  runCalls(calls: number, rate?: number): Promise<number | null>;
  /** Stops both Kamailio instances (SIGTERM, SIGKILL after a timeout), the UAS and the collector. */
  stop(): Promise<void>;
}

/** HEP capture ids telling the two proxies' reports apart (chunk 0x0c). */
const EDGE_CAPTURE_ID = 1;
const CORE_CAPTURE_ID = 2;
/** siptrace's HEP IP protocol for TLS. */
const HEP_PROTO_TLS = 22;


export interface KamailioProcess {
  proc: ChildProcess;
  cfg: string;
  pids: number[];
}

/** hepPort: where siptrace reports, or undefined for no siptrace. */
function kamailioConfig(opts: { captureId: number; listen: string[]; hepPort?: number; tlsCfg: string; route: string }): string {
  // One UDP worker: sipp sends back to back (the UAS its 180 and 200, the UAC its ACK and BYE), and two
  // workers, each taking one datagram, race to forward them over TLS; sipp fails a call on a message
  // that arrives after the one it was sent before. Each proxy's TLS connection is still used by two
  // processes: the UDP worker writes it, a TCP reader reads it.
  return `#!KAMAILIO
children=1
tcp_children=2
enable_tls=yes
${opts.listen.map((l) => `listen=${l}`).join('\n')}
mpath="${KAMAILIO_MODULES}"
loadmodule "pv.so"
loadmodule "tls.so"
modparam("tls","config","${opts.tlsCfg}")
${opts.hepPort === undefined ? '' : siptraceHep(opts.hepPort, opts.captureId)}request_route { ${opts.route} }
`;
}

/** Direct children of `pid`, from every thread's /proc children list. */
function childrenOf(pid: number): number[] {
  const tasks = join('/proc', String(pid), 'task');
  if (!existsSync(tasks)) return [];
  return readdirSync(tasks).flatMap((t) =>
    readFileSync(join(tasks, t, 'children'), 'utf8').split(/\s+/).filter(Boolean).map(Number),
  );
}

export async function startKamailio(dir: string, name: string, cfgText: string, readyLine: string): Promise<KamailioProcess> {
  const cfg = join(dir, `${name}.cfg`);
  writeFileSync(cfg, cfgText);
  const run = join(dir, `${name}-run`);
  mkdirSync(run, { recursive: true });
  const pidFile = join(run, 'kamailio.pid');
  const proc = spawn('kamailio', ['-f', cfg, '-DD', '-E', '-Y', run, '-P', pidFile, '-m', '64', '-M', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const onOutput = (d: Buffer) => (log += d);
  // Kamailio lists its sockets on stdout, logs on stderr.
  proc.stdout!.on('data', onOutput);
  proc.stderr!.on('data', onOutput);
  try {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        clearInterval(poll);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => done(new Error(`kamailio ${name} did not start:\n${log}`)), 15_000);
      const poll = setInterval(() => log.includes(readyLine) && existsSync(pidFile) && done(), 50);
      proc.once('exit', (code) => done(new Error(`kamailio ${name} exited ${code}:\n${log}`)));
    });
    const main = Number(readFileSync(pidFile, 'utf8').trim());
    if (main !== proc.pid) throw new Error(`kamailio ${name}: pid file says ${main}, spawned ${proc.pid}`);
    // The main process forks its workers after binding: wait until their number stops changing.
    let children = childrenOf(main);
    for (let stable = 0, tries = 0; stable < 3; tries++) {
      if (tries === 50) throw new Error(`kamailio ${name}: workers did not settle (${children.length}):\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
      const now = childrenOf(main);
      stable = now.length > 0 && now.length === children.length ? stable + 1 : 0;
      children = now;
    }
    return { proc, cfg, pids: [main, ...children] };
  } catch (err) {
    await stopByPid(proc);
    throw err;
  }
}

/** Whether `pid` is still a process of the Kamailio instance run with `cfg` (a pid may be reused). */
function runsConfig(pid: number, cfg: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').includes(cfg);
  } catch {
    return false;
  }
}

/** Stops a Kamailio instance by its main pid; a worker still alive afterwards is killed by its own pid. */
export async function stopKamailio(k: KamailioProcess): Promise<void> {
  await stopByPid(k.proc);
  const left = () => k.pids.slice(1).filter((pid) => runsConfig(pid, k.cfg));
  for (const pid of left()) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && left().length; i++) await new Promise((r) => setTimeout(r, 50));
}

function reportedOverTls(raw: Buffer, corePort: number): TlsHopMessage | undefined {
  const p = decodeHep(raw);
  if (p.ipProto !== HEP_PROTO_TLS) return undefined;
  const msg = { srcIp: p.srcIp!, srcPort: p.srcPort!, dstIp: p.dstIp!, dstPort: p.dstPort!, ipProto: p.ipProto, payload: p.payload! };
  // siptrace reports a receive with the connection's real ends (peer -> local). A send it reports from
  // the listening socket's address (the edge's TLS listen port, not the connection's ephemeral port)
  // and the core's send of a reply has the same tuple as the edge's receive of it: the capture id
  // tells the proxies apart, the TLS port tells receive from send.
  if (p.captureId === CORE_CAPTURE_ID && p.dstPort === corePort) return { receiver: 'core', ...msg };
  if (p.captureId === EDGE_CAPTURE_ID && p.srcPort === corePort) return { receiver: 'edge', ...msg };
  return undefined;
}

/**
 * siptrace: false for a bench, which measures the hop as an operator runs it: without the ground
 * truth's siptrace (about 30 HEP datagrams a call), tlsMessages() then stays empty.
 */
export async function startKamailioTlsHop(dir: string, { siptrace = true } = {}): Promise<KamailioTlsHop> {
  const [edgePort, edgeTlsPort, corePort, coreUdpPort, uasPort, uacPort] = [
    await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort(),
  ];
  const key = join(dir, 'core-key.pem');
  const cert = join(dir, 'core-cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=kamailio-core.test'], {
    stdio: 'ignore',
  });
  const tlsCfg = join(dir, 'tls.cfg');
  // Kamailio 5.6 has no TLSv1.3-only method; TLSv1.2+ lets OpenSSL 3 on both ends settle on TLS 1.3.
  writeFileSync(
    tlsCfg,
    `[server:default]
method = TLSv1.2+
certificate = ${cert}
private_key = ${key}
verify_certificate = no
require_certificate = no

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
`,
  );

  const collector: HepCollector = await udpCollector();
  const uas = await sippUas(uasPort, 'u1', dir).catch(async (err) => {
    await collector.close();
    throw err;
  });
  const started: KamailioProcess[] = [];
  let stopped: Promise<void> | undefined;
  const stopAll = () =>
    (stopped ??= (async () => {
      for (const k of [...started].reverse()) await stopKamailio(k);
      await uas.stop();
      await collector.close();
    })());
  // Started once Kamailio lists its first socket, which it prints as "tls: 127.0.0.1:PORT".
  const proxy = async (name: string, captureId: number, listen: string[], route: string) => {
    const k = await startKamailio(dir, name, kamailioConfig({ captureId, listen, hepPort: siptrace ? collector.port : undefined, tlsCfg, route }), listen[0].replace(':', ': '));
    started.push(k);
    return k;
  };
  try {
    const core = await proxy(
      'core',
      CORE_CAPTURE_ID,
      [`tls:127.0.0.1:${corePort}`, `udp:127.0.0.1:${coreUdpPort}`],
      // rport on the edge's Via sends the replies back on the edge's own connection, not to its listen port.
      `force_rport(); $du = "sip:127.0.0.1:${uasPort}"; forward();`,
    );
    const edge = await proxy(
      'edge',
      EDGE_CAPTURE_ID,
      // Kamailio sends over TLS only from a TLS listen socket; nothing connects to this one.
      [`udp:127.0.0.1:${edgePort}`, `tls:127.0.0.1:${edgeTlsPort}`],
      `$du = "sip:127.0.0.1:${corePort};transport=tls"; forward();`,
    );

    const tlsMessages = () => collector.packets.flatMap((raw) => reportedOverTls(raw, corePort) ?? []);
    return {
      edgePort,
      corePort,
      uasPort,
      pids: { edge: edge.pids, core: core.pids },
      tlsMessages,
      async waitForTlsMessages(count, timeoutMs = 20_000, settleMs = 1000) {
        const deadline = Date.now() + timeoutMs;
        while (tlsMessages().length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        await new Promise((r) => setTimeout(r, settleMs));
        return tlsMessages();
      },
      runCalls: (calls, rate) => sippUac(edgePort, uacPort, 'u1', calls, dir, rate),
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
