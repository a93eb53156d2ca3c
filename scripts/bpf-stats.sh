#!/usr/bin/env bash
# BPF run time per program of a real agent while a pair runs at 5k pairs/s: calls per pair, ns per
# call and ns per pair from kernel.bpf_stats_enabled (run_time_ns / run_cnt), and the application's
# CPU per pair (with the statistics on, which add to it). PAIR udp: the SIP/UDP pair (800 B sendto +
# recvfrom, the bench's `syscall_cost paced`); tls: the 1 KiB SSL_write + SSL_read pair (`tls_cost ssl`,
# paced). The agent sends HEP to a local counter, whose recvfrom and sock_recv_length calls show in
# the rows too (the second call per UDP pair).
#   scripts/bpf-stats.sh [AGENT_MAIN_JS] [RUNS] [PAIR]   default: this build's dist/src/cli/main.js, 3 runs, udp
# (the agent runs as its shebang says, with the V8 flags every launcher uses)
# Loads BPF programs: run it as root under the kernel lock when the machine is shared
# (flock /tmp/hepbpf-kernel.lock scripts/bpf-stats.sh ...). Sets kernel.bpf_stats_enabled back to 0.
set -euo pipefail
cd "$(dirname "$0")/.."
agent=${1:-$PWD/dist/src/cli/main.js}
runs=${2:-3}
pair=${3:-udp}
iter=25000
tmp=$(mktemp -d)
pids=()
clean_up() {
  sysctl -qw kernel.bpf_stats_enabled=0
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap clean_up EXIT
if [ "$pair" = tls ]; then
  cc -O2 -o "$tmp/tls_cost" bench/tls_cost.c -lssl -lcrypto
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 2 -subj /CN=hepbpf-bench 2> /dev/null
  run_pair() { "$tmp/tls_cost" ssl "$iter" "$tmp/cert.pem" "$tmp/key.pem" 5000; }
else
  cc -O2 -o "$tmp/syscall_cost" bench/syscall_cost.c
  run_pair() { "$tmp/syscall_cost" paced "$iter" $((port + 1 + RANDOM % 90)) 5000; }
fi
cc -O2 -o "$tmp/udp_load" bench/udp_load.c
port=$((46000 + RANDOM % 900))

"$tmp/udp_load" hepcount udp "$port" > "$tmp/count" 2>&1 &
pids+=($!)
bpftool -j prog show > "$tmp/before-agent.json"
"$agent" run --hep "udp://127.0.0.1:$port" 2> "$tmp/agent.log" > /dev/null &
pids+=($!)
until grep -q '"msg":"ready"' "$tmp/agent.log"; do
  kill -0 "${pids[1]}" 2>/dev/null || { tail -5 "$tmp/agent.log" >&2; exit 1; }
  sleep 0.1
done
sleep 1 # start-up work is not what is measured

sysctl -qw kernel.bpf_stats_enabled=1
bpftool -j prog show > "$tmp/before.json"
cpu=()
for _ in $(seq "$runs"); do cpu+=("$(run_pair)"); done
bpftool -j prog show > "$tmp/after.json"
sysctl -qw kernel.bpf_stats_enabled=0

echo "application CPU per pair (ns, statistics on): ${cpu[*]}"
# syscall_cost paced and tls_cost also run a tenth of ITER as warm-up: the counters saw 1.1 * ITER pairs a run.
python3 - "$tmp" $((runs * iter * 11 / 10)) <<'PY'
import json, sys
tmp, pairs = sys.argv[1], int(sys.argv[2])
load = lambda f: {p['id']: p for p in json.load(open(f'{tmp}/{f}'))}
others, before, after = load('before-agent.json'), load('before.json'), load('after.json')
rows = []
for pid, p in after.items():
    if pid in others:
        continue
    calls = p.get('run_cnt', 0) - before.get(pid, {}).get('run_cnt', 0)
    ns = p.get('run_time_ns', 0) - before.get(pid, {}).get('run_time_ns', 0)
    if calls:
        rows.append((ns / pairs, p['name'], calls / pairs, ns / calls))
print(f"{'program':18} {'calls/pair':>10} {'ns/call':>8} {'ns/pair':>8}")
for per_pair, name, calls, per_call in sorted(rows, reverse=True):
    print(f"{name:18} {calls:10.2f} {per_call:8.0f} {per_pair:8.0f}")
print(f"{'all':18} {'':10} {'':8} {sum(r[0] for r in rows):8.0f}")
PY
