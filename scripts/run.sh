#!/usr/bin/env bash
# The README's run command: set up, build a 3-host lab on this machine (network
# namespaces; a control plane replica, a node agent and a netproxy on each host),
# deploy the example application and show the cluster. The lab stays up for you
# to explore; `.venv/bin/corral lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

lab=${CORRAL_LAB_NAME:-lab}
if [[ -e "${CORRAL_LAB_ROOT:-/var/lib/corral-lab}/$lab" ]]; then
  echo "== removing the previous lab '$lab'"
  corral lab down --name "$lab"
fi

echo "== corral lab up"
corral lab up --name "$lab"
echo
echo "== corral apply -f examples/"
corral apply -f examples/
corral rollout status deployment web -n demo --timeout 2m
echo
echo "== corral get all -A"
corral get all -A
echo
echo "== corral lab status"
corral lab status --name "$lab"
cat <<'MSG'

The lab is running. Try, with .venv/bin on your PATH:
  corral get pods -A -o wide            corral describe deployment web -n demo
  corral lab exec h1 -- busybox nc ...  corral lab kill h2 ; corral get nodes -w
  corral cluster status                 corral lab down      (removes everything)
MSG
