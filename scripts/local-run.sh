#!/usr/bin/env bash
# The main job on the embedded default, one command, zero set-up: simulated Azure Resource
# Manager and a simulated Kubernetes API on loopback, the worker on the embedded SQLite queue
# and journal (.local/), and one sample tenant onboarded end to end, step by step.
#
#   scripts/local-run.sh                       onboard tenant "demo" with its workload
#   scripts/local-run.sh --fail-op role_assignments.put
#                                              make the simulated ARM refuse one operation
#                                              permanently and watch the saga compensate
#   TENANT=acme scripts/local-run.sh           another tenant id
#   KEEP=1 scripts/local-run.sh                leave simulators and worker running afterwards
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenant-onboarding-worker/target}"
tenant="${TENANT:-demo}"
fail_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fail-op) fail_args+=(--fail-op "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

echo "== building (first run compiles dependencies: a few minutes)"
cargo build --quiet -p sim -p worker -p producer
bin="$CARGO_TARGET_DIR/debug"
mkdir -p .local
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

"$bin/sim" --latency realistic --latency-scale 0.01 "${fail_args[@]}" >.local/sim.log 2>&1 &
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
   SIMULATED Kubernetes API server  : http://127.0.0.1:8781
   worker                           : embedded SQLite queue .local/queue.db, journal .local/journal.db
   logs                             : .local/worker.log, .local/sim.log
== onboarding tenant "$tenant" (producer send --wait shows each step as it completes)
MSG
status=0
"$bin/producer" send --tenant "$tenant" --workload 1 --wait --timeout 120 || status=$?

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
