#!/usr/bin/env bash
# Soak: a real agent under mixed load (SIP over UDP, TCP and TLS, Diameter over TCP; both ends on
# this host) for SOAK_SECONDS (default 1800) at SOAK_RATE msg/s (default 5000); prints JSON with the
# agent's RSS (slope and growth after SOAK_WARMUP_SECONDS, default min(120, a fifth)), its CPU, and
# messages lost per kind with the agent's loss counters by cause. Exit 0 when every message arrived.
# Not part of the test suite. Needs root (the agent loads BPF) and a build (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "soak: run as root (sudo): the agent loads BPF programs" >&2
  exit 1
fi
[ -f dist/src/cli/main.js ] || bash scripts/build.sh
exec node scripts/soak.mjs
