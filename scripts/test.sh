#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Python validators into
# .local/venv, Azurite from npm into .local/azurite, a real Kubernetes control plane built from
# the upstream Go modules into ~/.cache), then formatting, lints and every test.
# Builds go to a target dir outside the checkout so repeated runs (and CI on the same machine)
# reuse compiled dependencies.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenant-onboarding-worker/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cleanups=()
on_exit() { for c in "${cleanups[@]}"; do eval "$c" >/dev/null 2>&1 || true; done; }
trap on_exit EXIT

echo "== installing test tools"
bash scripts/setup-python.sh
if [ -x scripts/azurite.sh ]; then
  if bash scripts/azurite.sh start; then
    eval "$(bash scripts/azurite.sh env)"
    cleanups+=("bash scripts/azurite.sh stop")
  else
    echo "Azurite could not start: the Azure Table journal tests will say they were skipped" >&2
  fi
fi

echo "== real Kubernetes control plane (first run builds it from source: ~12 minutes on 2 cores)"
# A fresh cluster each run: tests leave fake nodes and namespaces behind.
bash scripts/kube.sh reset >/dev/null 2>&1 || true
if bash scripts/kube.sh start; then
  eval "$(bash scripts/kube.sh env)"
  cleanups+=("bash scripts/kube.sh stop")
elif [ -n "${CI:-}" ]; then
  echo "the Kubernetes control plane could not start (see above); CI needs it" >&2
  exit 1
else
  echo "the Kubernetes control plane could not start (see above): the tests against it will say they were skipped" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
