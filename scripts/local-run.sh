#!/usr/bin/env bash
# The main job on the embedded default, one command, zero set-up: a REAL Kubernetes control plane
# on loopback (built from the upstream sources by scripts/kube.sh on first use, ~12 minutes on 2
# cores; the simulator stands in, labelled as such, where it cannot be built), simulated Azure
# Resource Manager (its node pools register real Nodes) and Entra ID (the worker signs in with
# workload identity, exactly as in a pod), the worker on the embedded SQLite queue
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

# The worker signs in to (simulated) Entra ID as in a pod: workload identity, its projected
# service-account token named by AZURE_FEDERATED_TOKEN_FILE, exchanged over TLS (the simulator's
# test CA); the simulated ARM accepts only the tokens Entra issued.
worker_client=00000000-0000-0000-0000-00000000c0de
worker_tenant=00000000-0000-0000-0000-0000000000e1
worker_subject=system:serviceaccount:tenant-onboarding:onboarding-worker
mkdir -p .local/tokens
export AZURE_FEDERATED_TOKEN_FILE=$PWD/.local/tokens/azure-identity-token
if [ "$kube_mode" = real ]; then
  # The real API server issues it, as the kubelet would ask it to: audience api://AzureADTokenExchange.
  issuer=https://kubernetes.default.svc.cluster.local
  curl -sf --cacert "$ONBOARD_KUBE_CA" --cert "$ONBOARD_KUBE_ADMIN_CERT" --key "$ONBOARD_KUBE_ADMIN_KEY" \
    -H 'Content-Type: application/json' -X POST \
    -d '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["api://AzureADTokenExchange"],"expirationSeconds":3600}}' \
    "$ONBOARD_KUBE_SERVER/api/v1/namespaces/tenant-onboarding/serviceaccounts/onboarding-worker/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])' >"$AZURE_FEDERATED_TOKEN_FILE"
else
  # No API server to issue one: the same claims, unsigned (the Entra simulator checks claims only).
  issuer=https://kubernetes.local.sim
  python3 - "$issuer" "$worker_subject" >"$AZURE_FEDERATED_TOKEN_FILE" <<'PY'
import base64, json, sys, time
b = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
now = int(time.time())
print(b({"alg": "none", "typ": "JWT"}) + "." + b({"iss": sys.argv[1], "sub": sys.argv[2],
      "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600}) + ".")
PY
fi
python3 - "$worker_tenant" "$worker_client" "$PWD/.local/entra-ca.pem" <<'PY'
import sys, re
path = ".local/config.toml"
tenant, client, ca = sys.argv[1:4]
text = open(path).read()
text = re.sub(r'\[targets\.default\.credential\]\nkind = "none"\n',
              '[targets.default.credential]\nkind = "workload_identity"\ntenant_id = "%s"\nclient_id = "%s"\n'
              'cloud = { authority_host = "https://127.0.0.1:8782", ca_file = "%s", '
              'arm_scope = "https://management.azure.com/.default" }\n' % (tenant, client, ca), text)
open(path, "w").write(text)
PY
sim_entra_args=(--entra-ca-out .local/entra-ca.pem --arm-require-tokens
                --entra-app "$worker_client=$issuer|$worker_subject")
rm -f .local/entra-ca.pem

pids=()
cleanup() {
  if [ -z "${KEEP:-}" ]; then
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$bin/sim" --latency realistic --latency-scale 0.01 "${fail_args[@]}" "${sim_kube_args[@]}" "${sim_entra_args[@]}" >.local/sim.log 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8780) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8781) 2>/dev/null &&
    (exec 3<>/dev/tcp/127.0.0.1/8782) 2>/dev/null && [ -s .local/entra-ca.pem ] && break
  sleep 0.1
done
if ! (exec 3<>/dev/tcp/127.0.0.1/8780) 2>/dev/null; then
  echo "the simulators did not start; see .local/sim.log (is something else on ports 8780/8781/8782?)" >&2
  exit 1
fi
"$bin/worker" run >.local/worker.log 2>&1 &
pids+=($!)

cat <<MSG
== running locally, nothing in Azure is touched
   SIMULATED Azure Resource Manager : http://127.0.0.1:8780  (node pools take ~2.4 s: real minutes x 0.01; accepts only Entra's tokens)
   SIMULATED Entra ID               : https://127.0.0.1:8782  (the worker signs in with workload identity: AZURE_FEDERATED_TOKEN_FILE=.local/tokens/azure-identity-token)
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
echo "== the worker's tokens, as the (simulated) Entra ID logged their requests"
curl -sf --cacert .local/entra-ca.pem https://127.0.0.1:8782/_sim/entra/requests | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print("   %s  client %s  scope %-42s -> %s" % (r["time"][11:19], r["clientId"], r["scope"], r["outcome"]))
' || echo "   (the Entra simulator did not answer; see .local/sim.log)"
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
