#!/usr/bin/env bash
# CI checks of infra/ (run by tests/tests/infra_checks.rs):
#  1. every Bicep file parses (pycep) and passes infra/checks/bicep_check.py: modules called with
#     their declared parameters, resource properties as in the Azure REST specs, no secrets in
#     outputs, role assignments for service principals with the real built-in role ids;
#  2. every kustomization renders (infra/checks/render_k8s.py, and `kubectl kustomize` too when
#     kubectl is installed: both renderings must be identical);
#  3. built-in kinds pass `kubernetes-validate --strict -k 1.34.0`; KEDA objects pass their CRD
#     schemas (strict) and every cross-reference resolves (infra/checks/k8s_check.py).
# Renderings go to $ONBOARD_INFRA_CHECK_OUT (default .local/infra-check).
# Needs python3 (venv) and ../shared (the REST specs and KEDA CRDs) beside the repository.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${ONBOARD_SHARED_DIR:-$root/../shared}
specs=$shared/azure-rest-specs
crds=$shared/k8s-crds
venv=$root/.local/venv
out=${ONBOARD_INFRA_CHECK_OUT:-$root/.local/infra-check}
k8s_version=1.34.0
# Bicep grammar for the offline Bicep checks (the Bicep compiler itself downloads a binary and
# cannot be installed from a package registry).
pycep="pycep-parser==0.7.1"

for dir in "$specs" "$crds"; do
  [ -d "$dir" ] || { echo "check-infra: $dir is missing (shared/ must sit beside the repository, or set ONBOARD_SHARED_DIR)" >&2; exit 2; }
done

bash "$root/scripts/setup-python.sh"
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "$pycep"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pycep"
  echo "installed $pycep into $venv" >&2
fi
py=$venv/bin/python

mkdir -p "$out"
failed=0

if command -v shellcheck >/dev/null 2>&1; then
  echo "== shellcheck"
  shellcheck "$root/infra/deploy.sh" "$root/scripts/check-infra.sh" "$root/scripts/render-k8s.sh" || failed=1
else
  echo "(shellcheck not installed: shell scripts not linted; apt-get install shellcheck)"
fi

echo "== Bicep"
"$py" "$root/infra/checks/bicep_check.py" "$root/infra" "$specs" || failed=1

for kustomization in "$root"/k8s/base "$root"/k8s/overlays/*/; do
  kustomization=${kustomization%/}
  name=$(basename "$kustomization")
  echo "== Kubernetes: ${kustomization#"$root"/}"
  rendered=$out/$name.yaml
  if ! "$py" "$root/infra/checks/render_k8s.py" "$kustomization" >"$rendered"; then
    failed=1
    continue
  fi
  if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize "$kustomization" >"$out/$name.kubectl.yaml"; then
      "$py" "$root/infra/checks/compare_renders.py" "$rendered" "$out/$name.kubectl.yaml" || failed=1
    else
      echo "check-infra: kubectl kustomize failed on $kustomization" >&2
      failed=1
    fi
  else
    echo "(kubectl not installed: rendered with infra/checks/render_k8s.py only)"
  fi
  "$py" "$root/infra/checks/k8s_check.py" "$rendered" "$crds" "$out/$name.builtin.yaml" || failed=1
  if [ -s "$out/$name.builtin.yaml" ]; then
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$out/$name.builtin.yaml" || {
      echo "check-infra: kubernetes-validate --strict -k $k8s_version rejected $name" >&2
      failed=1
    }
  fi
done

if [ "$failed" -ne 0 ]; then
  echo "check-infra: FAILED (details above)" >&2
  exit 1
fi
echo "check-infra: all infra checks passed"
