#!/usr/bin/env bash
# `npm start -- ARGS`: install and build what is missing, then `hepbpf run ARGS`.
# npm execs this (.npmrc script-shell=bash, `exec` in package.json) and this execs node: npm passes
# SIGTERM/SIGINT to its child, the agent itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node --max-semi-space-size=4 dist/src/cli/main.js run "$@"
