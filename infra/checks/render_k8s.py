"""A small kustomize renderer for machines without kubectl/kustomize.

It implements the subset of kustomize this repository's kustomizations use, and refuses anything
else (so it can never silently render something different from kustomize):
- `resources`: files (multi-document YAML) and directories holding a kustomization;
- `images`: name -> newName / newTag / digest, on containers and initContainers;
- `patches`: from `path` or inline `patch`, either a JSON 6902 operation list (add, replace,
  remove, with `target`) or a strategic merge patch (maps merged, lists of named items merged
  by `name`, other lists replaced; target taken from `target` or from the patch's own kind/name).
scripts/check-infra.sh renders with both this and `kubectl kustomize` when kubectl exists and
fails if they differ.

Usage: render_k8s.py KUSTOMIZATION_DIR  (writes multi-document YAML to stdout)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}

# kustomize's default ("legacy") output order; other kinds follow, then by name.
KIND_ORDER = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
    "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
KIND_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


class RenderError(Exception):
    pass


def load_docs(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise RenderError(f"{path}: not valid YAML: {err}") from err
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise RenderError(f"{path}: every document must be a Kubernetes object with kind and metadata")
    return docs


def render(directory: Path) -> list[dict]:
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise RenderError(
            f"{kfile}: uses {', '.join(sorted(unknown))}, which this renderer does not implement; "
            "render with `kubectl kustomize` or extend infra/checks/render_k8s.py"
        )
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(load_docs(target))
        else:
            raise RenderError(f"{kfile}: resource {entry} does not exist")
    seen = set()
    for obj in objects:
        key = identity(obj)
        if key in seen:
            raise RenderError(f"{kfile}: {key} appears twice")
        seen.add(key)
    for image in spec.get("images", []):
        apply_image(objects, image)
    for patch in spec.get("patches", []):
        apply_patch(directory, objects, patch)
    return objects


def identity(obj: dict) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion", ""), obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def pod_spec(obj: dict) -> dict | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return spec.get("template", {}).get("spec")


def apply_image(objects: list[dict], image: dict) -> None:
    name = image["name"]
    for obj in objects:
        spec = pod_spec(obj)
        if not spec:
            continue
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            current = container.get("image", "")
            repo, tag, digest = split_image(current)
            if repo != name:
                continue
            repo = image.get("newName", repo)
            if "digest" in image:
                container["image"] = f"{repo}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{repo}:{image['newTag']}"
            else:
                suffix = f"@{digest}" if digest else (f":{tag}" if tag else "")
                container["image"] = repo + suffix


def split_image(image: str) -> tuple[str, str, str]:
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def matches(obj: dict, target: dict) -> bool:
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    checks = {
        "kind": obj["kind"],
        "name": obj["metadata"].get("name"),
        "namespace": obj["metadata"].get("namespace"),
        "group": group,
        "version": version,
    }
    for key, want in target.items():
        if key not in checks:
            raise RenderError(f"patch target field {key!r} is not implemented (use kind, name, namespace, group, version)")
        if checks[key] != want:
            return False
    return True


def apply_patch(directory: Path, objects: list[dict], entry: dict) -> None:
    if "path" in entry:
        body = yaml.safe_load((directory / entry["path"]).read_text())
        label = entry["path"]
    elif "patch" in entry:
        body = yaml.safe_load(entry["patch"])
        label = "inline patch"
    else:
        raise RenderError(f"{directory}: a patch needs `path` or `patch`")
    target = entry.get("target")
    if isinstance(body, list):
        if not target:
            raise RenderError(f"{directory}/{label}: a JSON 6902 patch needs a target")
        hits = [o for o in objects if matches(o, target)]
        if not hits:
            raise RenderError(f"{directory}/{label}: target {target} matches no object")
        for obj in hits:
            for op in body:
                json6902(obj, op, f"{directory}/{label}")
        return
    if not isinstance(body, dict):
        raise RenderError(f"{directory}/{label}: a patch is an operation list or an object")
    if not target:
        target = {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
    hits = [o for o in objects if matches(o, target)]
    if not hits:
        raise RenderError(f"{directory}/{label}: target {target} matches no object")
    for obj in hits:
        merged = strategic_merge(obj, body)
        obj.clear()
        obj.update(merged)


def pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(obj: dict, op: dict, where: str) -> None:
    parts = pointer(op["path"])
    parent = obj
    for part in parts[:-1]:
        try:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        except (KeyError, IndexError, ValueError) as err:
            raise RenderError(f"{where}: path {op['path']} does not exist") from err
    last = parts[-1]
    kind = op["op"]
    if kind == "add":
        if isinstance(parent, list):
            if last == "-":
                parent.append(copy.deepcopy(op["value"]))
            else:
                parent.insert(int(last), copy.deepcopy(op["value"]))
        else:
            parent[last] = copy.deepcopy(op["value"])
    elif kind == "replace":
        if isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op["value"])
        elif last in parent:
            parent[last] = copy.deepcopy(op["value"])
        else:
            raise RenderError(f"{where}: cannot replace missing {op['path']}")
    elif kind == "remove":
        try:
            del parent[int(last) if isinstance(parent, list) else last]
        except (KeyError, IndexError) as err:
            raise RenderError(f"{where}: cannot remove missing {op['path']}") from err
    else:
        raise RenderError(f"{where}: JSON 6902 op {kind!r} is not implemented (add, replace, remove)")


def strategic_merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out = copy.deepcopy(base)
        for item in patch:
            for index, existing in enumerate(out):
                if existing["name"] == item["name"]:
                    out[index] = strategic_merge(existing, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def order(obj: dict) -> tuple:
    kind = obj["kind"]
    if kind in KIND_ORDER:
        rank = KIND_ORDER.index(kind)
    elif kind in KIND_LAST:
        rank = 1000 + KIND_LAST.index(kind)
    else:
        rank = len(KIND_ORDER)
    return (rank, kind, obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        objects = render(Path(sys.argv[1]).resolve())
    except RenderError as err:
        print(f"render_k8s: {err}", file=sys.stderr)
        return 1
    objects.sort(key=order)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=True, default_flow_style=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
