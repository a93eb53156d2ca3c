#!/usr/bin/env bash
# `npm start -- ARGS`: install and build what is missing, then `hepbpf run ARGS`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node dist/src/cli/main.js run "$@"
