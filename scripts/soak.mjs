// The soak run behind scripts/soak.sh: mixed load through a real agent for a long time, then RSS
// slope after warm-up, CPU, and loss by cause. Load and collector live in this process; the agent
// is a child (`hepbpf run`), measured from /proc.
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');
const { decodeHep } = await import(join(REPO, 'dist/src/hep/decode.js'));

const SECONDS = Number(process.env.SOAK_SECONDS ?? 1800);
const RATE = Number(process.env.SOAK_RATE ?? 5000);
const WARMUP = Number(process.env.SOAK_WARMUP_SECONDS ?? Math.min(120, Math.round(SECONDS / 5)));
const SAMPLE_MS = 5000;
for (const [name, v] of [['SOAK_SECONDS', SECONDS], ['SOAK_RATE', RATE], ['SOAK_WARMUP_SECONDS', WARMUP]])
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
if (WARMUP >= SECONDS) throw new Error('SOAK_WARMUP_SECONDS must be shorter than SOAK_SECONDS');

const KINDS = ['sip/udp', 'sip/tcp', 'sip/tls', 'diameter/tcp'];
const sent = Object.fromEntries(KINDS.map((k) => [k, 0]));
const received = Object.fromEntries(KINDS.map((k) => [k, 0]));
const dir = mkdtempSync(join(tmpdir(), 'hepbpf-soak-'));
const listen = (server, ...args) => new Promise((r) => server.listen(0, '127.0.0.1', ...args, () => r(server.address().port)));

// ---- the collector: HEP over TCP, each packet counted by protocol and transport
const kindOf = (p) => `${p.protoType === 56 ? 'diameter' : 'sip'}/${p.ipProto === 17 ? 'udp' : p.ipProto === 6 ? 'tcp' : 'tls'}`;
const collector = createServer((conn) => {
  drain(conn, 'collector');
  let pending = Buffer.alloc(0);
  conn.on('data', (d) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    let at = 0;
    while (pending.length - at >= 6) {
      const len = pending.readUInt16BE(at + 4);
      if (pending.length - at < len) break;
      received[kindOf(decodeHep(pending.subarray(at, at + len)))]++;
      at += len;
    }
    pending = pending.subarray(at);
  });
});
const collectorPort = await listen(collector);

// ---- the traffic: both ends in this process, so the agent sees each message leave and arrive;
// Diameter requests are answered, SIP requests are not (nothing in the agent waits for them)
let seq = 0;
const sip = (transport) => {
  const id = `soak-${transport}-${seq++}`;
  return Buffer.from(
    `MESSAGE sip:soak@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/${transport.toUpperCase()} 127.0.0.1;branch=z9hG4bK-${id}\r\n` +
      `From: <sip:load@127.0.0.1>;tag=${id}\r\nTo: <sip:soak@127.0.0.1>\r\nCall-ID: ${id}\r\nCSeq: 1 MESSAGE\r\n` +
      `Content-Type: text/plain\r\nContent-Length: 32\r\n\r\nsoak soak soak soak soak soak ok`,
  );
};
const avp = (code, value) => {
  const len = 8 + value.length;
  const b = Buffer.alloc(len + ((4 - (len % 4)) % 4));
  b.writeUInt32BE(code, 0);
  b.writeUInt32BE((0x40 << 24) | len, 4);
  value.copy(b, 8);
  return b;
};
/** A Credit-Control request, or the answer to the last one (as a real peer answers: the agent pairs them). */
let lastRequest = 0;
const diameter = (request) => {
  const n = request ? (lastRequest = seq++) : lastRequest;
  const avps = Buffer.concat([
    avp(263, Buffer.from(`soak.test;cc;${n}`)), avp(264, Buffer.from(request ? 'load.soak.test' : 'server.soak.test')), avp(296, Buffer.from('soak.test')),
    avp(258, Buffer.from([0, 0, 0, 4])), ...(request ? [] : [avp(268, Buffer.from([0, 0, 0x07, 0xd1]))]),
  ]);
  const h = Buffer.alloc(20);
  h.writeUInt32BE((1 << 24) | (20 + avps.length), 0);
  h.writeUInt32BE((request ? 0x80000000 : 0) + 272, 4); // Credit-Control
  h.writeUInt32BE(4, 8);
  h.writeUInt32BE(n >>> 0, 12);
  h.writeUInt32BE(n >>> 0, 16);
  return Buffer.concat([h, avps]);
};

const udpRx = createSocket('udp4').on('message', () => {});
await new Promise((r) => udpRx.bind(0, '127.0.0.1', r));
udpRx.setRecvBufferSize(8 << 20);
const udpTx = createSocket('udp4');
await new Promise((r) => udpTx.bind(0, '127.0.0.1', r));
udpTx.connect(udpRx.address().port, '127.0.0.1');
await new Promise((r) => udpTx.once('connect', r));

// Every socket is read (a peer that stops reading would stall the writer, whose writes then queue in
// this process without end) and a socket error ends the run with a report, not a crash.
const socketErrors = [];
const drain = (sock, name = 'accepted') => sock.on('data', () => {}).on('error', (err) => socketErrors.push({ socket: name, code: err.code, atSeconds: Math.round(performance.now() / 1000) }));
const tcpServer = createServer(drain);
const tcpPort = await listen(tcpServer);
let diameterPeer;
const diameterAccepted = new Promise((r) => (diameterPeer = r));
const diameterServer = createServer((s) => diameterPeer(drain(s)));
const diameterPort = await listen(diameterServer);
const cert = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=soak', '-days', '2',
  '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { encoding: 'utf8' });
if (cert.status !== 0) throw new Error(`openssl: ${cert.stderr}`);
const tlsServer = createTlsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, drain);
const tlsPort = await listen(tlsServer);
const opened = (sock, event) => new Promise((r) => sock.once(event, () => r(sock)));
const tcpClient = drain(await opened(connect(tcpPort, '127.0.0.1'), 'connect'), 'sip/tcp client');
const diameterClient = drain(await opened(connect(diameterPort, '127.0.0.1'), 'connect'), 'diameter client');
const diameterServerSide = await diameterAccepted;

// ---- the agent
const probe = createServer(); // a free port for the agent's /metrics
const metricsPort = await listen(probe);
await new Promise((r) => probe.close(r));
const sipPorts = [udpRx.address().port, udpTx.address().port, tcpPort, tlsPort, diameterPort];
const agent = spawn(process.execPath, [join(REPO, 'dist/src/cli/main.js'), 'run', '--hep', `tcp://127.0.0.1:${collectorPort}`, '--sip-ports', sipPorts.join(','),
  '--metrics-listen', `127.0.0.1:${metricsPort}`], { env: { ...process.env, HEPBPF_SOCKET: join(dir, 'hepbpf.sock') }, stdio: ['ignore', 'ignore', 'pipe'] });
// Should this script fail, the agent goes with it (its probes detach on SIGTERM), and so do its files.
process.on('exit', () => {
  if (agent.exitCode === null) agent.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});
const logs = [];
let partial = '';
agent.stderr.on('data', (d) => {
  const lines = (partial + d).split('\n');
  partial = lines.pop();
  for (const l of lines) if (l.startsWith('{')) logs.push(JSON.parse(l));
});
while (!logs.some((l) => l.msg === 'ready')) {
  if (agent.exitCode !== null) throw new Error(`agent exited: ${JSON.stringify(logs)}`);
  await new Promise((r) => setTimeout(r, 100));
}
// TLS after the agent is ready: the connection's handshake is seen, and its plaintext tied to it.
const tlsClient = drain(await opened(tlsConnect({ port: tlsPort, host: '127.0.0.1', rejectUnauthorized: false }), 'secureConnect'), 'sip/tls client');

// ---- samples of the agent: RSS and CPU time from /proc
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;
const sample = () => {
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'))[1]) / 1024;
  const f = readFileSync(`/proc/${agent.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { t: performance.now() / 1000, rss, cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK };
};
const samples = [sample()];
const sampler = setInterval(() => samples.push(sample()), SAMPLE_MS);

// ---- the load: RATE messages per second, round robin over the four kinds, sent every 10 ms
const start = performance.now();
let total = 0;
const senders = {
  'sip/udp': () => udpTx.send(sip('udp')),
  'sip/tcp': () => tcpClient.write(sip('tcp')),
  'sip/tls': () => tlsClient.write(sip('tls')),
  'diameter/tcp': () => (sent['diameter/tcp'] % 2 === 0 ? diameterClient.write(diameter(true)) : diameterServerSide.write(diameter(false))),
};
process.stderr.write(`soak: ${SECONDS} s at ${RATE} msg/s (${KINDS.join(', ')}), warm-up ${WARMUP} s, agent pid ${agent.pid}\n`);
await new Promise((done) => {
  const tick = setInterval(() => {
    const elapsed = (performance.now() - start) / 1000;
    if (elapsed >= SECONDS || socketErrors.length) {
      clearInterval(tick);
      return done();
    }
    for (const due = Math.floor(elapsed * RATE); total < due; total++) {
      const kind = KINDS[total % KINDS.length];
      senders[kind]();
      sent[kind]++;
    }
  }, 10);
});
const loadSeconds = (performance.now() - start) / 1000;
const cpuEnd = sample();

// ---- what arrived: wait until everything did, or nothing more arrives for 10 s
const count = (o) => Object.values(o).reduce((a, b) => a + b, 0);
for (let last = -1, quietSince = Date.now(); count(received) < total && Date.now() - quietSince < 10_000; await new Promise((r) => setTimeout(r, 200)))
  if (count(received) !== last) [last, quietSince] = [count(received), Date.now()];
clearInterval(sampler);
const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
agent.kill('SIGTERM');
await new Promise((r) => agent.once('exit', r));
const final = logs.findLast((l) => l.msg === 'stopped');

// ---- report
const after = samples.filter((s) => s.t - samples[0].t >= WARMUP);
const slope = (() => {
  const n = after.length;
  const mt = after.reduce((a, s) => a + s.t, 0) / n;
  const mr = after.reduce((a, s) => a + s.rss, 0) / n;
  return (after.reduce((a, s) => a + (s.t - mt) * (s.rss - mr), 0) / after.reduce((a, s) => a + (s.t - mt) ** 2, 0)) * 60;
})();
const lossCauses = {};
for (const line of metrics.split('\n')) {
  const m = /^(hepbpf_(?:kernel_lost|kernel_truncated|failures|messages_dropped|hep_dropped|container_hold_overflow|tls_unattributed|unpaired_receiver_copies|tail_bytes_dropped)_total)(\{[^}]*\})? (\d+)/.exec(line);
  if (m && Number(m[3]) > 0) lossCauses[`${m[1]}${m[2] ?? ''}`] = Number(m[3]);
}
const tables = Object.fromEntries([...metrics.matchAll(/^hepbpf_correlation_entries\{table="(\w+)"\} (\d+)/gm)].map((m) => [m[1], Number(m[2])]));
const report = {
  date: new Date().toISOString(),
  seconds: Math.round(loadSeconds),
  rate: Math.round(total / loadSeconds),
  sent,
  received,
  lost: Object.fromEntries(KINDS.map((k) => [k, sent[k] - received[k]])),
  lossCauses,
  rssMiB: { start: +samples[0].rss.toFixed(1), afterWarmup: +after[0].rss.toFixed(1), end: +after.at(-1).rss.toFixed(1), max: +Math.max(...samples.map((s) => s.rss)).toFixed(1) },
  rssGrowthAfterWarmupMiB: +(after.at(-1).rss - after[0].rss).toFixed(1),
  rssSlopeMiBPerMin: +slope.toFixed(3),
  cpuPercentOfOneCore: +((100 * (cpuEnd.cpu - samples[0].cpu)) / (cpuEnd.t - samples[0].t)).toFixed(1),
  correlationEntries: tables,
  socketErrors,
  agentExit: agent.exitCode,
  forwarded: final?.capture?.forwarded,
};
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

for (const s of [udpRx, udpTx]) s.close();
for (const s of [tcpClient, diameterClient, diameterServerSide, tlsClient]) s.destroy();
for (const s of [tcpServer, diameterServer, tlsServer, collector]) s.close();
process.exit(count(received) === total && agent.exitCode === 0 && !socketErrors.length ? 0 : 1);
