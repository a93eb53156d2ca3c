# hepbpf container image: docker build -t hepbpf:latest .
# Build stage compiles the BPF object (clang, bpftool), the libbpf N-API addon (node-gyp) and the
# TypeScript; the runtime stage keeps Node, libbpf, capstone (TLS probe sites), libelf and tini, and no compiler.
# The tests build this file with locally made bases (no image registry there):
#   --build-arg NODE_IMAGE=... (see README "Deploy").
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libcapstone-dev libelf-dev zlib1g-dev bpftool make g++ python3 pkg-config \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
WORKDIR /opt/hepbpf
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY bpf bpf
COPY src src
COPY bench bench
COPY test test
COPY scripts/build.sh scripts/build.sh
COPY tsconfig.json ./
# Only what the agent loads: dist/src, the BPF object, the addon, production node_modules.
RUN bash scripts/build.sh \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf dist/test dist/bench

FROM ${NODE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 libcapstone4 libelf1 tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
WORKDIR /opt/hepbpf
COPY --from=build /opt/hepbpf/package.json ./
COPY --from=build /opt/hepbpf/node_modules node_modules
COPY --from=build /opt/hepbpf/dist dist
COPY --from=build /opt/hepbpf/build/hepbpf.bpf.o build/
COPY --from=build /opt/hepbpf/src/bpf/native/build/Release/libbpf_addon.node src/bpf/native/build/Release/
# tini forwards SIGTERM/SIGINT to the agent (PID 2), which detaches its probes and exits.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=4", "/opt/hepbpf/dist/src/cli/main.js"]
CMD ["doctor"]
