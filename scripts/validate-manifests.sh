#!/usr/bin/env bash
# Validates every Kubernetes manifest (*.yaml, *.yml, *.json; multi-document YAML is fine) under a
# directory, offline and strictly (unknown fields are errors), against the OpenAPI schemas of a
# Kubernetes version, with kubernetes-validate (installed into .local/venv on first use).
#
# Usage: scripts/validate-manifests.sh DIR [KUBERNETES_VERSION]   (version default: 1.34.0)
# Exit status: 0 when every object validates, 1 when one does not, 2 on bad usage.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -d "$1" ]; then
  echo "usage: $0 DIR [KUBERNETES_VERSION]  (DIR must be a directory of manifests)" >&2
  exit 2
fi
dir=$1
version=${2:-1.34.0}
"$root/scripts/setup-python.sh"
files=()
while IFS= read -r -d '' f; do
  files+=("$f")
done < <(find "$dir" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.json' \) -print0 | sort -z)
if [ ${#files[@]} -eq 0 ]; then
  echo "no manifests (*.yaml, *.yml, *.json) under $dir" >&2
  exit 2
fi
exec "$root/.local/venv/bin/kubernetes-validate" --strict -k "$version" "${files[@]}"
