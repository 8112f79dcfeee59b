#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian 12 as root: system packages, a virtual
# environment in .venv, and Corral installed into it (editable, with the test
# tools). Both README commands start with this.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  python3 python3-venv            # the interpreter and venv (Debian splits venv out)
  podman runc                     # containers; runc because crun fails on hybrid cgroups here
  iptables iproute2 conntrack     # netproxy rules, lab namespaces, pod networks
  busybox-static                  # the offline localhost/busybox image
  etcd-server etcd-client         # the side-by-side baseline in bench/
  strace                          # the durability proof (fsync before reply)
  procps psmisc                   # ps/kill for the lab's process checks
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
stamp=.venv/.corral-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "setup: pip install failed" >&2; exit 1; }
  touch "$stamp"
fi
