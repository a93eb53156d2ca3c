#!/usr/bin/env bash
# Runs every fuzz target (test/fuzz/*.fuzz.test.ts) for 1M inputs each, with no time limit.
#   scripts/fuzz.sh                 all targets
#   scripts/fuzz.sh test/fuzz/sip   the targets whose path matches
# The test suite runs the same targets for 30 s each (FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_RUNS="${FUZZ_RUNS:-1000000}" FUZZ_SECONDS=0 exec npx vitest run "${@:-test/fuzz}"
