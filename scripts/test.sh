#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Python validators into
# .local/venv, Azurite from npm into .local/azurite), then formatting, lints and every test.
# Builds go to a target dir outside the checkout so repeated runs (and CI on the same machine)
# reuse compiled dependencies.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tenant-onboarding-worker/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== installing test tools"
bash scripts/setup-python.sh
if [ -x scripts/azurite.sh ]; then
  if bash scripts/azurite.sh start; then
    eval "$(bash scripts/azurite.sh env)"
    trap 'bash scripts/azurite.sh stop >/dev/null 2>&1 || true' EXIT
  else
    echo "Azurite could not start: the Azure Table journal tests will say they were skipped" >&2
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
