"""Compares two renderings of one kustomization object by object (order and formatting aside).

Usage: compare_renders.py A.yaml B.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def index(path: Path) -> dict:
    out = {}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            meta = doc.get("metadata", {})
            out[(doc.get("apiVersion"), doc.get("kind"), meta.get("namespace", ""), meta.get("name"))] = doc
    return out


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = index(Path(sys.argv[1])), index(Path(sys.argv[2]))
    problems = []
    for key in sorted(set(a) | set(b), key=str):
        if key not in a:
            problems.append(f"{key} only in {sys.argv[2]}")
        elif key not in b:
            problems.append(f"{key} only in {sys.argv[1]}")
        elif a[key] != b[key]:
            problems.append(f"{key} differs")
    if problems:
        print(f"compare_renders: {sys.argv[1]} and {sys.argv[2]} differ:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"compare_renders: {len(a)} objects identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
