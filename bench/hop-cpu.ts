/**
 * `--only=hopcpu`: where the CPU goes per call through the Kamailio edge -> TLS -> core hop of the
 * tests (test/helpers/kamailio-tls.ts, without its siptrace ground truth) at a fixed call rate, a
 * steadier figure than the highest call rate (bench/tls.ts) on a busy machine. Per call: the agent's CPU (its main thread, and its other
 * threads: V8's compiler and GC, the ring-buffer reader), less what it takes idle; the two Kamailio
 * instances' CPU without and with the agent; and the agent's BPF programs' run time in every process
 * (kernel.bpf_stats_enabled, set back to 0). The agent first carries WARM_SECS of calls: what V8
 * compiles for the first traffic is not what a running agent costs. Rounds alternate without and
 * with the agent; medians.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startKamailioTlsHop } from '../test/helpers/kamailio-tls.js';
import { sleep } from '../test/helpers/wait.js';
import { median } from './median.js';
import { threadsCpuNs } from './thread-cpu.js';

export interface HopCpuInput {
  say(line?: string): void;
  table(rows: string[][]): void;
  summary: string[][];
  startAgent(hep: string): Promise<{ pid: number; stop(): Promise<Record<string, any>> }>;
  startCollector(): Promise<{ port: number; stop(): Promise<number> }>;
  dir: string;
}

const RATE = 250;
const SECS = 15;
const WARM_SECS = 8;
const IDLE_SECS = 3;
const ROUNDS = 3;

const totalCpuNs = (pids: number[]) =>
  pids.reduce((sum, pid) => {
    const cpu = threadsCpuNs(pid);
    return sum + cpu.main + cpu.others;
  }, 0);

/** Run time (ns) and runs of every loaded BPF program, by id. */
function bpfRunTimes(): Map<number, { name: string; ns: number; runs: number }> {
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as { id: number; name: string; run_time_ns?: number; run_cnt?: number }[];
  return new Map(progs.map((p) => [p.id, { name: p.name, ns: p.run_time_ns ?? 0, runs: p.run_cnt ?? 0 }]));
}

export async function hopCpuBench(r: HopCpuInput): Promise<Record<string, unknown>> {
  r.say(`\n(hopcpu) Kamailio edge -> TLS -> core hop at ${RATE} calls/s for ${SECS} s: CPU per call (the agent after ${WARM_SECS} s of calls; ${ROUNDS} rounds, without and with the agent alternating; median)`);
  const dir = join(r.dir, 'hop-cpu');
  mkdirSync(dir);
  const collector = await r.startCollector();
  const hop = await startKamailioTlsHop(dir, { siptrace: false });
  const calls = RATE * SECS;
  const kamailio = [...hop.pids.edge, ...hop.pids.core];
  const runCalls = async (n: number) => {
    const code = await hop.runCalls(n, RATE);
    if (code !== 0) throw new Error(`hopcpu: sipp exited ${code}: calls failed at ${RATE} calls/s`);
  };
  const rows: Record<string, number[]> = { kamailioNone: [], kamailioAgent: [], agentMain: [], agentOthers: [], bpf: [], recordsPerCall: [], messagesPerCall: [] };
  const programs: Record<string, number[]> = {};
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const withAgent of round % 2 ? [true, false] : [false, true]) {
        if (!withAgent) {
          const k0 = totalCpuNs(kamailio);
          await runCalls(calls);
          rows.kamailioNone.push((totalCpuNs(kamailio) - k0) / calls / 1000);
          continue;
        }
        const others = bpfRunTimes(); // programs not the agent's
        const agent = await r.startAgent(`udp://127.0.0.1:${collector.port}`);
        try {
          await runCalls(RATE * WARM_SECS);
          const i0 = threadsCpuNs(agent.pid);
          await sleep(IDLE_SECS * 1000);
          const i1 = threadsCpuNs(agent.pid);
          execFileSync('sysctl', ['-qw', 'kernel.bpf_stats_enabled=1']);
          try {
            const b0 = bpfRunTimes();
            const [a0, k0, t0] = [threadsCpuNs(agent.pid), totalCpuNs(kamailio), performance.now()];
            await runCalls(calls);
            const [a1, k1, secs] = [threadsCpuNs(agent.pid), totalCpuNs(kamailio), (performance.now() - t0) / 1000];
            const b1 = bpfRunTimes();
            // The agent's CPU at this rate less what it takes idle over as long.
            const perCall = (k: 'main' | 'others') => (a1[k] - a0[k] - ((i1[k] - i0[k]) / IDLE_SECS) * secs) / calls / 1000;
            rows.agentMain.push(perCall('main'));
            rows.agentOthers.push(perCall('others'));
            rows.kamailioAgent.push((k1 - k0) / calls / 1000);
            let bpfNs = 0;
            const byName: Record<string, number> = {};
            for (const [id, p] of b1) {
              const ns = p.ns - (b0.get(id)?.ns ?? 0);
              if (others.has(id) || ns <= 0) continue;
              bpfNs += ns;
              byName[p.name] = (byName[p.name] ?? 0) + ns;
            }
            rows.bpf.push(bpfNs / calls / 1000);
            for (const [name, ns] of Object.entries(byName)) (programs[name] ??= []).push(ns / calls / 1000);
          } finally {
            execFileSync('sysctl', ['-qw', 'kernel.bpf_stats_enabled=0']);
          }
        } finally {
          const stats = await agent.stop();
          const total = RATE * (WARM_SECS + SECS);
          rows.recordsPerCall.push((stats.capture?.kernel?.emitted ?? NaN) / total);
          rows.messagesPerCall.push((stats.capture?.forwarded ?? NaN) / total);
        }
      }
    }
  } finally {
    await hop.stop();
    await collector.stop();
  }
  const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)]));
  const us = (k: string) => `${m[k].toFixed(0)} µs`;
  const spread = (k: string) => rows[k].map((v) => v.toFixed(0)).join(' ');
  const agent = m.agentMain + m.agentOthers;
  r.table([
    ['per call', 'median', 'rounds'],
    ['agent, main thread', us('agentMain'), spread('agentMain')],
    ['agent, other threads', us('agentOthers'), spread('agentOthers')],
    [`agent, per record (${m.recordsPerCall.toFixed(1)} a call) / per message (${m.messagesPerCall.toFixed(1)})`, `${(agent / m.recordsPerCall).toFixed(1)} / ${(agent / m.messagesPerCall).toFixed(1)} µs`, ''],
    ['Kamailio (both), no agent', us('kamailioNone'), spread('kamailioNone')],
    ['Kamailio (both), agent running (BPF statistics on)', us('kamailioAgent'), spread('kamailioAgent')],
    ["the agent's BPF programs, all processes", us('bpf'), spread('bpf')],
    ...Object.entries(programs)
      .map(([name, v]) => [name, median(v)] as const)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([name, v]) => [`  ${name}`, `${v.toFixed(1)} µs`, '']),
  ]);
  r.summary.push([`Kamailio TLS hop at ${RATE} cps: agent CPU per call (Kamailio's, agent's BPF)`, `${us('kamailioNone')}`, `${agent.toFixed(0)} µs (${us('kamailioAgent')}, ${us('bpf')})`, '-']);
  return { perCall: m, rounds: rows, bpfProgramsPerCall: programs };
}
