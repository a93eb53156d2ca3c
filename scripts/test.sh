#!/usr/bin/env bash
# The whole test suite: unit, BPF and end-to-end tests against real peers on the real kernel.
# Installs and builds what it needs first. Needs root (BPF, tcpdump, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "hepbpf test: the suite loads BPF programs and captures on lo: run it as root (sudo npm test)" >&2
  exit 1
fi
bash scripts/setup.sh --test

progs_before=$(bpftool prog show 2>/dev/null | grep -cE '^[0-9]+: ' || true)
status=0
npx vitest run "$@" || status=$?

# Nothing a test attached may outlive the suite.
progs_after=$(bpftool prog show 2>/dev/null | grep -cE '^[0-9]+: ' || true)
if [ "$progs_after" -gt "$progs_before" ]; then
  echo "hepbpf test: $((progs_after - progs_before)) BPF programs left loaded after the suite" >&2
  bpftool prog show >&2
  status=1
fi
exit "$status"
