#!/usr/bin/env bash
# Builds the BPF objects, the libbpf N-API addon and the TypeScript, each only when its inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

addon=src/bpf/native/build/Release/libbpf_addon.node
if [ ! -f "$addon" ] || [ -n "$(find src/bpf/native -maxdepth 1 -newer "$addon" -type f)" ]; then
  # N-API is ABI-stable: any Node headers with node_api.h will do; never download them.
  nodedir=$(dirname "$(dirname "$(command -v node)")")
  [ -f "$nodedir/include/node/node_api.h" ] || nodedir=/usr
  npx node-gyp rebuild --silent --nodedir="$nodedir" --directory src/bpf/native
fi

npx tsc -p tsconfig.json
# The package's bin must be executable on its own: `npx hepbpf` reuses the link it cached in ~/.npm/_npx
# on an earlier run and then runs the file as it is, without npm's chmod on install.
chmod +x dist/src/cli/main.js
