#!/usr/bin/env bash
# Installs the Python validators the tests use (kubernetes-validate) into .local/venv.
# Idempotent and quiet when already done; the tests call it, nobody needs to by hand.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.local/venv"
want="kubernetes-validate==1.34.1"
if [ -x "$venv/bin/kubernetes-validate" ] && "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$want"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
echo "installed $want into $venv" >&2
