#!/usr/bin/env bash
# Renders a kustomization of k8s to stdout: with `kubectl kustomize` when kubectl is
# installed, otherwise with infra/checks/render_k8s.py (the subset of kustomize used here) in the
# project's Python venv. `--python` or `--kubectl` forces one.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  echo "usage: scripts/render-k8s.sh [--python|--kubectl] KUSTOMIZATION_DIR" >&2
  echo "  e.g. scripts/render-k8s.sh k8s/overlays/cross-tenant" >&2
  exit 2
}

mode=auto
case "${1:-}" in
  --python) mode=python; shift ;;
  --kubectl) mode=kubectl; shift ;;
  -h|--help|"") usage ;;
esac
[ $# -eq 1 ] || usage
dir=$1
[ -f "$dir/kustomization.yaml" ] || { echo "render-k8s: $dir has no kustomization.yaml" >&2; exit 2; }

if [ "$mode" = auto ]; then
  if command -v kubectl >/dev/null 2>&1; then mode=kubectl; else mode=python; fi
fi

case "$mode" in
  kubectl)
    command -v kubectl >/dev/null 2>&1 || { echo "render-k8s: kubectl is not installed; use --python" >&2; exit 2; }
    exec kubectl kustomize "$dir"
    ;;
  python)
    bash "$root/scripts/setup-python.sh"
    exec "$root/.local/venv/bin/python" "$root/infra/checks/render_k8s.py" "$dir"
    ;;
esac
