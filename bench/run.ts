/**
 * `npm run bench`: what the running agent costs and how much it forwards. A report, not a test.
 * Every figure is printed next to its baseline measured in the same run: the machines are
 * noisy, so baseline and agent runs alternate and medians are reported.
 *   --json          print the figures as JSON instead of tables
 *   --only=a,b,c    sections: (a) zero-loss rates, (b) syscall costs, (c) footprint
 *   --no-agent      baselines only (also when dist/src/cli/main.js is not built)
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const CLI = resolve(REPO, 'dist/src/cli/main.js');
const args = process.argv.slice(2);
const json = args.includes('--json');
const only = args.find((a) => a.startsWith('--only='))?.slice(7).split(',') ?? ['a', 'b', 'c'];
const withAgent = !args.includes('--no-agent') && existsSync(CLI);
const say = (line = '') => json || process.stdout.write(line + '\n');

if (process.getuid?.() !== 0) {
  process.stderr.write('hepbpf bench: must run as root (it loads the agent\'s BPF programs): sudo npm run bench\n');
  process.exit(1);
}

const TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
const dir = mkdtempSync(join(tmpdir(), 'hepbpf-bench-'));
const UDP_LOAD = join(dir, 'udp_load');
const SYSCALL_COST = join(dir, 'syscall_cost');
const children = new Set<ChildProcess>();
let nextPort = 46000 + Math.floor(Math.random() * 1000) * 10;
const port = () => nextPort++;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmtRate = (r: number) => (r >= 1000 ? `${+(r / 1000).toFixed(1)}k/s` : `${r}/s`);
const table = (rows: string[][]) => {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  // text in the first and last columns reads left to right; figures line up on the right
  const left = (i: number) => i === 0 || i === widths.length - 1;
  for (const r of rows) say('  ' + r.map((c, i) => (left(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('   ').trimEnd());
};

/** Runs a C helper to completion without blocking the event loop (the agent's log pipe must keep draining). */
const runC = async (bin: string, ...argv: string[]) => (await promisify(execFile)(bin, argv, { encoding: 'utf8' })).stdout.trim();

function spawnTracked(cmd: string, argv: string[], stdio: ('ignore' | 'pipe')[]): ChildProcess {
  const proc = spawn(cmd, argv, { stdio });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

function stopProc(proc: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return r();
    proc.once('exit', () => r());
    proc.kill('SIGTERM');
  });
}

interface Agent {
  pid: number;
  /** SIGTERM, wait for the exit; resolves with the stats of the final "stopped" log line. */
  stop(): Promise<Record<string, any>>;
}

function startAgent(hep: string): Promise<Agent> {
  const proc = spawnTracked(process.execPath, [CLI, 'run', '--hep', hep], ['ignore', 'ignore', 'pipe']);
  let log = '';
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      void stopProc(proc);
      rej(new Error(`agent not ready after 60 s: ${log.slice(-500)}`));
    }, 60_000);
    proc.once('exit', (code) => rej(new Error(`agent exited with ${code}: ${log.slice(-500)}`)));
    proc.stderr!.on('data', (d) => {
      log += d;
      if (!log.includes('"msg":"ready"')) return;
      clearTimeout(timer);
      res({
        pid: proc.pid!,
        stop: async () => {
          await stopProc(proc);
          const line = log.split('\n').find((l) => l.includes('"msg":"stopped"'));
          return line ? JSON.parse(line) : {};
        },
      });
    });
  });
}

/** A HEP collector counting packets; `count()` is the latest running count it printed. */
async function startCounter(transport: 'udp' | 'tcp', p: number) {
  const proc = spawnTracked(UDP_LOAD, ['hepcount', transport, String(p)], ['ignore', 'pipe', 'pipe']);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => process.stderr.write(`hepcount: ${d}`));
  while (!out.includes('ready')) {
    if (proc.exitCode !== null) throw new Error(`hepcount exited with ${proc.exitCode}`);
    await sleep(20);
  }
  const count = () => Number(out.trim().split('\n').pop()) || 0;
  return {
    count,
    /** Waits until the count has not moved for `quietMs`; forwarding lags the load a little. */
    async settle(quietMs = 1000, maxMs = 30_000) {
      const t0 = Date.now();
      for (let last = -1; count() !== last && Date.now() - t0 < maxMs; ) {
        last = count();
        await sleep(quietMs);
      }
      return count();
    },
    async stop() {
      await stopProc(proc);
      return count();
    },
  };
}

interface Flood {
  sent: number;
  received: number;
  failed: number;
  seconds: number;
}

async function flood(rate: number, secs: number): Promise<Flood> {
  const out = await runC(UDP_LOAD, 'flood', String(rate), String(secs), String(port()));
  const m = /sent (\d+) received (-?\d+) failed (\d+) seconds ([\d.]+)/.exec(out);
  if (!m) throw new Error(`udp_load flood: unexpected output ${out}`);
  return { sent: +m[1], received: +m[2], failed: +m[3], seconds: +m[4] };
}

function procStats(pid: number) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) / 1024;
  // Fields after "(comm) ": state is [0], utime [11], stime [12].
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { rssMb: mb('VmRSS'), peakRssMb: mb('VmHWM'), cpuS: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S };
}

const results: Record<string, unknown> = { withAgent };
const summary: string[][] = [['figure', 'no agent', 'agent', 'target']];

/** (b) Each round measures every operation without and with the agent, in ABBA order across rounds. */
async function syscallCosts() {
  const ROUNDS = 3;
  say(`\n(b) ns per operation, without and with the agent running (median of ${ROUNDS} alternating rounds)`);
  const ops: Record<string, { target: string; measure: () => Promise<number> }> = {
    'SIP sendto+recvfrom pair, 800 B UDP': { target: '<= 1.3x', measure: async () => +(await runC(SYSCALL_COST, 'pair', '200000', String(port()))) },
    'unrelated 800 B write() to /dev/null': { target: '<= +300 ns', measure: async () => +(await runC(SYSCALL_COST, 'write', '1000000')) },
    'unrelated 800 B UDP sendto, non-SIP': { target: '-', measure: async () => +(await runC(SYSCALL_COST, 'junk', '300000', String(port()))) },
  };
  const samples = { base: {} as Record<string, number[]>, agent: {} as Record<string, number[]> };
  const measureAll = async (into: Record<string, number[]>) => {
    for (const [name, op] of Object.entries(ops)) (into[name] ??= []).push(await op.measure());
  };
  const sinkPort = port();
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) await measureAll(samples.base);
    if (withAgent) {
      const agent = await startAgent(`udp://127.0.0.1:${sinkPort}`);
      await sleep(1000); // start-up work (JIT, first GC) is not what is measured
      await measureAll(samples.agent);
      await agent.stop();
    }
    if (round % 2 === 1) await measureAll(samples.base);
  }
  const rows = [['operation', 'no agent', 'agent', 'added', 'ratio', 'target']];
  const figures: Record<string, object> = {};
  for (const [name, op] of Object.entries(ops)) {
    const b = median(samples.base[name]);
    const a = withAgent ? median(samples.agent[name]) : NaN;
    figures[name] = { baseNs: b, agentNs: a, addedNs: a - b, ratio: a / b, baseSamples: samples.base[name], agentSamples: samples.agent[name] ?? [] };
    rows.push([name, `${b.toFixed(0)} ns`, withAgent ? `${a.toFixed(0)} ns` : '-', withAgent ? `${(a - b).toFixed(0)} ns` : '-', withAgent ? `${(a / b).toFixed(2)}x` : '-', op.target]);
    if (op.target !== '-') summary.push([name, `${b.toFixed(0)} ns`, withAgent ? `${a.toFixed(0)} ns (+${(a - b).toFixed(0)} ns, ${(a / b).toFixed(2)}x)` : '-', op.target]);
  }
  table(rows);
  results.syscallCosts = figures;
}

/** (a) Rate steps, lowest first; at each step the baseline runs, then the agent over each HEP transport. */
async function zeroLossRates() {
  const RATES = [10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 250_000];
  const SECS = 2;
  say(`\n(a) highest zero-loss rate of 800-byte SIP messages, UDP sendto -> recvfrom between two local processes (${SECS} s per step, stop at the first loss)`);
  // A step counts only if the sender kept its pace: a rate it could not offer was not sustained.
  const paced = (f: Flood, rate: number) => f.sent / f.seconds >= rate * 0.95;
  const runs = ['no agent', ...(withAgent ? ['HEP/UDP', 'HEP/TCP'] : [])];
  const best: Record<string, number> = Object.fromEntries(runs.map((r) => [r, 0]));
  const done = new Set<string>();
  const steps: object[] = [];
  const rows = [['rate', 'run', 'sent', 'received', 'forwarded', 'result']];
  for (const rate of RATES) {
    for (const run of runs.filter((r) => !done.has(r))) {
      let f: Flood;
      let forwarded: number | undefined;
      let lossAt = '';
      if (run === 'no agent') {
        f = await flood(rate, SECS);
      } else {
        const transport = run === 'HEP/UDP' ? 'udp' : 'tcp';
        const hepPort = port();
        const counter = await startCounter(transport, hepPort);
        try {
          const agent = await startAgent(`${transport}://127.0.0.1:${hepPort}`);
          f = await flood(rate, SECS);
          await counter.settle();
          const stats = await agent.stop();
          await sleep(300);
          forwarded = await counter.stop();
          const hep = Object.values(stats.hep?.collectors ?? {})[0] as Record<string, number> | undefined;
          lossAt = `ring buffer full ${stats.capture?.kernel?.ringbufFull ?? '?'}, HEP dropped ${hep?.dropped ?? '?'}, errors ${hep?.errors ?? '?'}`;
        } finally {
          await counter.stop();
        }
      }
      const lossless = f.failed === 0 && f.received === f.sent && (forwarded === undefined || forwarded === f.sent);
      const ok = lossless && paced(f, rate);
      const result = ok ? 'zero loss' : !lossless ? `LOSS${lossAt ? ` (${lossAt})` : ''}` : `sender reached only ${fmtRate(Math.round(f.sent / f.seconds))}`;
      rows.push([fmtRate(rate), run, String(f.sent), String(f.received), forwarded === undefined ? '-' : String(forwarded), result]);
      steps.push({ rate, run, ...f, forwarded, ok });
      if (ok) best[run] = rate;
      else done.add(run);
    }
    if (done.size === runs.length) break;
  }
  table(rows);
  const top = (r: string) => (best[r] ? fmtRate(best[r]) : `< ${fmtRate(RATES[0])}`);
  const atMax = (r: string) => (!done.has(r) ? ' (the highest step)' : '');
  say(`  highest zero-loss rate: no agent ${top('no agent')}${atMax('no agent')}` + (withAgent ? `, HEP/UDP ${top('HEP/UDP')}${atMax('HEP/UDP')}, HEP/TCP ${top('HEP/TCP')}${atMax('HEP/TCP')}` : ''));
  if (withAgent) {
    summary.push(['zero-loss rate, HEP/UDP', top('no agent'), top('HEP/UDP'), '>= 100k/s']);
    summary.push(['zero-loss rate, HEP/TCP', top('no agent'), top('HEP/TCP'), '>= 150k/s']);
  }
  results.zeroLoss = { bestRate: best, steps };
}

/** (c) One agent: idle, then 5 s at 1k and at 10k SIP messages/s. */
async function footprint() {
  const SECS = 5;
  say(`\n(c) agent memory and CPU, idle and under ${SECS} s of sustained SIP load (HEP/UDP)`);
  if (!withAgent) return say('  (no agent)');
  const hepPort = port();
  const counter = await startCounter('udp', hepPort);
  try {
    const agent = await startAgent(`udp://127.0.0.1:${hepPort}`);
    await sleep(2000);
    const idle = procStats(agent.pid);
    const rows = [['load', 'RSS', 'peak RSS', 'CPU (% of one core)', 'forwarded']];
    rows.push(['idle (baseline)', `${idle.rssMb.toFixed(1)} MB`, `${idle.peakRssMb.toFixed(1)} MB`, '-', '-']);
    const figures: Record<string, object> = { idle };
    for (const rate of [1000, 10_000]) {
      const before = procStats(agent.pid);
      const counted = counter.count();
      const t0 = performance.now();
      const f = await flood(rate, SECS);
      const after = procStats(agent.pid);
      const cpuPercent = ((after.cpuS - before.cpuS) / ((performance.now() - t0) / 1000)) * 100;
      const forwarded = (await counter.settle(500)) - counted;
      figures[`${rate}/s`] = { rssMb: after.rssMb, peakRssMb: after.peakRssMb, cpuPercent, sent: f.sent, forwarded };
      rows.push([fmtRate(rate), `${after.rssMb.toFixed(1)} MB`, `${after.peakRssMb.toFixed(1)} MB`, `${cpuPercent.toFixed(1)}%`, `${forwarded}/${f.sent}`]);
      summary.push([`agent RSS at ${fmtRate(rate)} (peak)`, `${idle.rssMb.toFixed(0)} MB idle`, `${after.rssMb.toFixed(0)} MB (${after.peakRssMb.toFixed(0)} MB)`, '<= 150 MB']);
    }
    await agent.stop();
    table(rows);
    results.footprint = figures;
  } finally {
    await counter.stop();
  }
}

async function main() {
  execFileSync('cc', ['-O2', '-o', UDP_LOAD, resolve(REPO, 'bench/udp_load.c')]);
  execFileSync('cc', ['-O2', '-o', SYSCALL_COST, resolve(REPO, 'bench/syscall_cost.c')]);
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  say(`hepbpf bench: Linux ${kernel}, ${cpus().length} CPUs, ${withAgent ? 'agent ' + CLI : 'NO AGENT (baselines only)'}`);
  results.machine = { kernel, cpus: cpus().length };
  if (only.includes('b')) await syscallCosts();
  if (only.includes('a')) await zeroLossRates();
  if (only.includes('c')) await footprint();
  if (summary.length > 1) {
    say('\nsummary');
    table(summary);
  }
  if (json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}

const cleanUp = async () => {
  await Promise.all([...children].map(stopProc));
  rmSync(dir, { recursive: true, force: true });
};
process.once('SIGINT', () => void cleanUp().then(() => process.exit(130)));
try {
  await main();
} catch (e) {
  process.stderr.write(`hepbpf bench: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
