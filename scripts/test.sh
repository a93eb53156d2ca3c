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

# Every test file that captures TLS.
tls_tests=(test/e2e/tls.test.ts test/e2e/kamailio-tls-harness.test.ts test/e2e/diameter.test.ts test/e2e/tls-hostile-files.test.ts test/e2e/tls-first-call.test.ts test/e2e/websocket.test.ts)

progs_before=$(bpftool prog show 2>/dev/null | grep -cE '^[0-9]+: ' || true)
status=0
# The tests and benches are TypeScript too: type-check them with the sources (vitest does not).
npx tsc -p tsconfig.test.json || status=$?
npx vitest run "$@" || status=$?
# The whole suite runs the TLS tests a second time with every TLS function probed at its entry and
# return (HEPBPF_TLS_PROBES=entry), so that the fallback for libraries without an emulated site stays tested.
if [ "$#" -eq 0 ]; then
  HEPBPF_TLS_PROBES=entry npx vitest run "${tls_tests[@]}" || status=$?
fi

# Nothing a test attached may outlive the suite.
progs_after=$(bpftool prog show 2>/dev/null | grep -cE '^[0-9]+: ' || true)
if [ "$progs_after" -gt "$progs_before" ]; then
  echo "hepbpf test: $((progs_after - progs_before)) BPF programs left loaded after the suite" >&2
  bpftool prog show >&2
  status=1
fi
exit "$status"
