#!/usr/bin/env bash
# The main job on the embedded default, one command, zero set-up: a REAL Kubernetes control plane
# on loopback (built from the upstream sources by scripts/kube.sh on first use, ~12 minutes on 2
# cores; the simulator stands in, labelled as such, where it cannot be built), simulated Azure
# Resource Manager (its node pools register real Nodes), the worker on the embedded SQLite queue
# and journal (.local/), authorized in the cluster by exactly the RBAC in k8s/, and one sample
# tenant onboarded end to end, step by step.
#
#   scripts/local-run.sh                       onboard tenant "demo" with its workload
#   scripts/local-run.sh --fail-op role_assignments.put
#                                              make the simulated ARM refuse one operation
#                                              permanently and watch the saga compensate
#   TENANT=acme scripts/local-run.sh           another tenant id
#   KEEP=1 scripts/local-run.sh                leave simulators and worker running afterwards
#   KUBE=sim scripts/local-run.sh              use the Kubernetes simulator instead of the real one
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenant-onboarding-worker/target}"
tenant="${TENANT:-demo}"
fail_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fail-op) fail_args+=(--fail-op "$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

echo "== building (first run compiles dependencies: a few minutes)"
cargo build --quiet -p sim -p worker -p producer -p e2e --bin kube-worker-identity
bin="$CARGO_TARGET_DIR/debug"
mkdir -p .local

# The Kubernetes side: the real control plane unless it cannot be had here.
kube_mode=sim
if [ "${KUBE:-real}" != sim ]; then
  echo "== real Kubernetes control plane (scripts/kube.sh; the first run builds it, with progress)"
  if bash scripts/kube.sh start; then
    eval "$(bash scripts/kube.sh env)"
    if "$bin/kube-worker-identity" .local/worker.kubeconfig >/dev/null; then
      kube_mode=real
    else
      echo "could not install the worker's identity in the cluster (above); falling back to the Kubernetes SIMULATOR" >&2
    fi
  else
    echo "the real control plane could not be built or started (above); falling back to the Kubernetes SIMULATOR" >&2
  fi
fi
sim_kube_args=()
# The defaults as a file (the embedded default, simulated ARM), then the cluster patched in.
env -u ONBOARD_CONFIG "$bin/worker" config check >.local/config.toml
export ONBOARD_CONFIG=.local/config.toml
if [ "$kube_mode" = real ]; then
  # The worker reaches the cluster as its own ServiceAccount; the ARM simulator registers each
  # node pool's Nodes there with the admin's certificate, as AKS would.
  python3 - "$PWD/.local/worker.kubeconfig" <<'PY'
import sys, re
path = ".local/config.toml"
text = open(path).read()
text = re.sub(r'(\[targets\.default\.kubernetes\]\n(?:[^\[]*\n)?)server = "[^"]*"\n',
              lambda m: m.group(1) + 'kubeconfig = "%s"\n' % sys.argv[1], text)
open(path, "w").write(text)
PY
  sim_kube_args=(--kube-server "$ONBOARD_KUBE_SERVER" --kube-ca "$ONBOARD_KUBE_CA"
                 --kube-client-cert "$ONBOARD_KUBE_ADMIN_CERT" --kube-client-key "$ONBOARD_KUBE_ADMIN_KEY")
fi
# The simulators keep their state in memory, so the queue and journal start afresh too.
rm -f .local/queue.db* .local/journal.db*

pids=()
cleanup() {
  if [ -z "${KEEP:-}" ]; then
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$bin/sim" --latency realistic --latency-scale 0.01 "${fail_args[@]}" "${sim_kube_args[@]}" >.local/sim.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8780) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8781) 2>/dev/null && break
  sleep 0.1
done
if ! (exec 3<>/dev/tcp/127.0.0.1/8780) 2>/dev/null; then
  echo "the simulators did not start; see .local/sim.log (is something else on ports 8780/8781?)" >&2
  exit 1
fi
"$bin/worker" run >.local/worker.log 2>&1 &
pids+=($!)

cat <<MSG
== running locally, nothing in Azure is touched
   SIMULATED Azure Resource Manager : http://127.0.0.1:8780  (node pools take ~2.4 s: real minutes x 0.01)
   Kubernetes                       : $(if [ "$kube_mode" = real ]; then echo "REAL control plane $ONBOARD_KUBE_SERVER (kube-apiserver, scheduler, controllers v1.34; no kubelet: pods are scheduled, not run), the worker as its ServiceAccount"; else echo "SIMULATED Kubernetes API server http://127.0.0.1:8781"; fi)
   worker                           : embedded SQLite queue .local/queue.db, journal .local/journal.db
   logs                             : .local/worker.log, .local/sim.log
== onboarding tenant "$tenant" (producer send --wait shows each step as it completes)
MSG
status=0
"$bin/producer" send --tenant "$tenant" --workload 1 --wait --timeout 120 || status=$?

if [ "$kube_mode" = real ]; then
  echo "== in the REAL cluster: the tenant's nodes (registered by the simulated AKS) and where its pods were scheduled"
  sleep 2
  for what in nodes "namespaces/tenant-$tenant/pods"; do
    curl -s --cacert "$ONBOARD_KUBE_CA" --cert "$ONBOARD_KUBE_ADMIN_CERT" --key "$ONBOARD_KUBE_ADMIN_KEY" \
      "$ONBOARD_KUBE_SERVER/api/v1/$what" | python3 -c '
import json, sys
for o in json.load(sys.stdin).get("items", []):
    m, spec = o["metadata"], o.get("spec", {})
    if o.get("kind", "") == "Node" or "nodeName" not in spec and "taints" in spec or m.get("labels", {}).get("kubernetes.azure.com/agentpool"):
        if m.get("labels", {}).get("tenant") == sys.argv[1]:
            print("   node %-42s taints %s" % (m["name"], ",".join("%s=%s:%s" % (t["key"], t.get("value", ""), t["effect"]) for t in spec.get("taints", []))))
    else:
        print("   pod  %-42s on node %s (%s; no kubelet runs it)" % (m["name"], spec.get("nodeName") or "-", o.get("status", {}).get("phase")))
' "$tenant"
  done
fi
echo "== the journal's view: producer status $tenant"
"$bin/producer" status "$tenant" || true
cat <<MSG

== next
   watch a tenant:          $bin/producer status $tenant
   see a compensation:      scripts/local-run.sh --fail-op role_assignments.put   (TENANT=other)
   offboard (keeps data):   $bin/producer offboard --tenant $tenant --wait      (needs KEEP=1 running)
   dead letters:            $bin/producer dlq list
MSG
exit $status
