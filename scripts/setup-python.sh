#!/usr/bin/env bash
# Installs the Python validators the tests use (kubernetes-validate) and the official Service Bus
# SDK (the Service Bus peer's second witness) into .local/venv.
# Idempotent and quiet when already done; the tests call it, nobody needs to by hand.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.local/venv"
want="kubernetes-validate==1.34.1"
# KEDA objects are validated against KEDA's CRD schemas (scripts/check-infra.sh).
want_jsonschema="jsonschema==4.26.0"
# Microsoft's Service Bus SDK: the second witness of the Service Bus peer (sim/servicebus).
want_servicebus="azure-servicebus==7.15.0"
if [ -x "$venv/bin/kubernetes-validate" ] && frozen=$("$venv/bin/pip" freeze 2>/dev/null) &&
  grep -qx "$want" <<<"$frozen" && grep -qx "$want_jsonschema" <<<"$frozen" &&
  grep -qx "$want_servicebus" <<<"$frozen"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$want" "$want_jsonschema" "$want_servicebus"
echo "installed $want $want_jsonschema $want_servicebus into $venv" >&2
