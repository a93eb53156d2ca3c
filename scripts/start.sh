#!/usr/bin/env bash
# `npm start -- ARGS`: install and build what is missing, then `hepbpf run ARGS`.
# npm runs this through `sh -c "exec ..."` and this exec's node: npm's SIGTERM/SIGINT reach the agent itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node dist/src/cli/main.js run "$@"
