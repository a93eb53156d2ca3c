#!/usr/bin/env bash
# Installs what hepbpf needs on a Debian 12 host, then builds it. Idempotent: a second run only rebuilds what changed.
#   scripts/setup.sh          what the agent needs to run
#   scripts/setup.sh --test   plus the real peers the test suite drives
set -euo pipefail
cd "$(dirname "$0")/.."

run_pkgs=(clang llvm libbpf-dev libcapstone-dev libelf-dev zlib1g-dev bpftool make g++ python3 pkg-config)
test_pkgs=(sip-tester tcpdump kamailio kamailio-extra-modules kamailio-sqlite-modules kamailio-tls-modules kamailio-websocket-modules sngrep sqlite3 tshark iproute2 procps freediameterd freediameter-extensions openssl gnutls-bin libssl-dev docker.io docker-compose debootstrap systemd libcap2-bin podman runc prometheus)

want=("${run_pkgs[@]}")
[ "${1:-}" = "--test" ] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "hepbpf setup: missing Debian packages: ${missing[*]} -- run as root (sudo) so they can be installed" >&2
    exit 1
  fi
  echo "hepbpf setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

bash scripts/build.sh
