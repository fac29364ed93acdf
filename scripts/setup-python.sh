#!/usr/bin/env bash
# Installs the Python validators the tests use (kubernetes-validate) into .local/venv.
# Idempotent and quiet when already done; the tests call it, nobody needs to by hand.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.local/venv"
want="kubernetes-validate==1.34.1"
# KEDA objects are validated against KEDA's CRD schemas (scripts/check-infra.sh).
want_jsonschema="jsonschema==4.26.0"
if [ -x "$venv/bin/kubernetes-validate" ] && frozen=$("$venv/bin/pip" freeze 2>/dev/null) &&
  grep -qx "$want" <<<"$frozen" && grep -qx "$want_jsonschema" <<<"$frozen"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$want" "$want_jsonschema"
echo "installed $want $want_jsonschema into $venv" >&2
