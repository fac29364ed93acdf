#!/usr/bin/env bash
# The performance benchmarks (issue 7), in release mode: critical path, throughput and cost, ARM
# write budget, memory at scale, cold start. Prints one block of figures per benchmark with its
# goal and PASS/MISS, and writes the table to docs/benchmarks.md. Figures, not tests: timings on
# a shared machine are noisy, so nothing here fails a build on a number.
#
#   scripts/bench.sh                  every benchmark, full sizes (6-8 minutes on 2 cores)
#   scripts/bench.sh --quick          smaller runs (about 1.5 minutes)
#   scripts/bench.sh memory           one benchmark (critical-path, throughput, arm-budget, cluster-burst,
#                                     memory, cold-start); docs/benchmarks.md is left alone
#   scripts/bench.sh all --no-docs    everything, without rewriting docs/benchmarks.md
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
case "${1:-}" in
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
esac
args=("$@")
have_name=0
for a in "${args[@]}"; do
  case "$a" in --*) ;; *) have_name=1 ;; esac
done
[ "$have_name" = 1 ] || args=(all "${args[@]}")

echo "== building the worker and the benchmarks (release; the first build takes a while)"
# The cold-start benchmark spawns the real worker binary built beside the bench binary. One
# invocation for both: cargo unifies dependency features over the packages it builds, and
# building `-p worker` on its own would compile every dependency a second time.
cargo build --release --quiet -p worker -p e2e --bin worker --bin bench
exec cargo run --release --quiet -p e2e --bin bench -- "${args[@]}"
