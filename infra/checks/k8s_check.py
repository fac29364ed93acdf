"""Checks of rendered Kubernetes manifests that kubernetes-validate cannot do.

- Writes the built-in kinds to BUILTIN_OUT, for kubernetes-validate (which rejects unknown kinds).
- Validates KEDA objects (ScaledObject, TriggerAuthentication, ...) against the openAPIV3Schema of
  KEDA's own CRDs, strictly: like the API server's strict field validation, a field the schema
  does not declare is an error.
- Checks that the objects fit together: every reference (service account, ConfigMap, ClusterRole,
  scale target, trigger authentication, namespace) resolves; selectors select the Deployment's
  pods; the ScaledObject watches the queue the ConfigMap's config names.

Usage: k8s_check.py RENDERED.yaml CRD_DIR BUILTIN_OUT
"""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

KEDA_GROUP = "keda.sh"


def strict(schema):
    """Forbid undeclared fields wherever the schema declares its fields and does not say
    x-kubernetes-preserve-unknown-fields (what the API server does with strict validation)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # metadata is validated by the API server, not by the CRD schema.
    schema.get("properties", {}).pop("metadata", None)
    if schema.get("additionalProperties") is False:
        schema["properties"]["metadata"] = {"type": "object"}
    return schema


def load_crds(directory: Path) -> dict[tuple[str, str, str], dict]:
    schemas = {}
    for path in sorted(directory.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(group, version["name"], kind)] = strict(schema)
    return schemas


class Checks:
    def __init__(self, objects: list[dict]):
        self.objects = objects
        self.problems: list[str] = []

    def fail(self, obj: dict | None, what: str) -> None:
        where = f"{obj['kind']}/{obj['metadata'].get('name')}" if obj else "manifests"
        self.problems.append(f"{where}: {what}")

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        for obj in self.objects:
            meta = obj["metadata"]
            if obj["kind"] == kind and meta.get("name") == name and (
                namespace is None or meta.get("namespace") == namespace
            ):
                return obj
        return None

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]


def selects(selector: dict, labels: dict) -> bool:
    if set(selector) - {"matchLabels"}:
        return False  # matchExpressions are not used here; refuse rather than guess
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_keda(checks: Checks, schemas: dict) -> None:
    for obj in checks.objects:
        group, _, version = obj.get("apiVersion", "").rpartition("/")
        if group != KEDA_GROUP:
            continue
        schema = schemas.get((group, version, obj["kind"]))
        if schema is None:
            checks.fail(obj, f"no served CRD version for {obj['apiVersion']} {obj['kind']} in the KEDA CRDs")
            continue
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
            path = "/".join(str(p) for p in error.path) or "(root)"
            checks.fail(obj, f"KEDA schema: {path}: {error.message}")
        if not obj["metadata"].get("name"):
            checks.fail(obj, "metadata.name is missing")


def check_references(checks: Checks) -> None:
    namespaces = {o["metadata"]["name"] for o in checks.of_kind("Namespace")}
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in checks.objects:
        if obj["kind"] in cluster_scoped:
            continue
        ns = obj["metadata"].get("namespace")
        if not ns:
            checks.fail(obj, "has no metadata.namespace (it would land in whatever namespace kubectl points at)")
        elif ns not in namespaces:
            checks.fail(obj, f"namespace {ns} is not among the rendered Namespaces")

    for binding in checks.of_kind("ClusterRoleBinding") + checks.of_kind("RoleBinding"):
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace")
        if checks.find(ref["kind"], ref["name"], None if ref["kind"] == "ClusterRole" else ns) is None:
            checks.fail(binding, f"roleRef {ref['kind']}/{ref['name']} is not rendered")
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount" and checks.find(
                "ServiceAccount", subject["name"], subject.get("namespace")
            ) is None:
                checks.fail(binding, f"subject ServiceAccount {subject.get('namespace')}/{subject['name']} is not rendered")

    # Roles bound to a subject cluster-wide or to the worker are the worker's rights; the tenant
    # admins' ClusterRole is only ever bound inside a tenant namespace (by the worker, which may
    # `bind` it by name and nothing else).
    tenant_admin = "tenant-onboarding:tenant-admin"
    for binding in checks.of_kind("ClusterRoleBinding"):
        if binding["roleRef"]["name"] == tenant_admin:
            checks.fail(binding, f"binds {tenant_admin} cluster-wide; it is for tenant namespaces only")
    for role in checks.of_kind("ClusterRole") + checks.of_kind("Role"):
        is_tenant_admin = role["metadata"]["name"] == tenant_admin
        for rule in role.get("rules", []):
            for verb in rule.get("verbs", []):
                bind_by_name = (verb == "bind" and rule.get("resources") == ["clusterroles"]
                                and rule.get("resourceNames") == [tenant_admin])
                if verb in {"*", "escalate", "bind", "impersonate"} and not bind_by_name:
                    checks.fail(role, f"grants the verb {verb!r}")
            if "*" in rule.get("resources", []) or "*" in rule.get("apiGroups", []):
                checks.fail(role, "uses a wildcard resource or API group")
            if "secrets" in rule.get("resources", []) and not is_tenant_admin:
                checks.fail(role, "grants access to secrets")
            if is_tenant_admin and "rbac.authorization.k8s.io" in rule.get("apiGroups", []):
                checks.fail(role, "lets tenant admins touch RBAC")

    for deployment in checks.of_kind("Deployment"):
        ns = deployment["metadata"]["namespace"]
        template = deployment["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        if not selects(deployment["spec"]["selector"], labels):
            checks.fail(deployment, "selector does not select its own pod template")
        pod = template["spec"]
        sa = pod.get("serviceAccountName")
        if not sa or checks.find("ServiceAccount", sa, ns) is None:
            checks.fail(deployment, f"service account {sa!r} is not rendered in {ns}")
        for volume in pod.get("volumes", []):
            if "configMap" in volume and checks.find("ConfigMap", volume["configMap"]["name"], ns) is None:
                checks.fail(deployment, f"ConfigMap {volume['configMap']['name']} is not rendered in {ns}")
        for kind in ("PodDisruptionBudget",):
            for pdb in checks.of_kind(kind):
                if pdb["metadata"]["namespace"] == ns and not selects(pdb["spec"]["selector"], labels):
                    checks.fail(pdb, f"selects no pod of Deployment {deployment['metadata']['name']}")
        for policy in checks.of_kind("NetworkPolicy"):
            if policy["metadata"]["namespace"] == ns and not selects(policy["spec"]["podSelector"], labels):
                checks.fail(policy, f"selects no pod of Deployment {deployment['metadata']['name']}")

    for scaled in checks.of_kind("ScaledObject"):
        ns = scaled["metadata"]["namespace"]
        ref = scaled["spec"]["scaleTargetRef"]
        if checks.find(ref.get("kind", "Deployment"), ref["name"], ns) is None:
            checks.fail(scaled, f"scale target {ref.get('kind', 'Deployment')}/{ref['name']} is not rendered in {ns}")
        for trigger in scaled["spec"]["triggers"]:
            auth = trigger.get("authenticationRef")
            if auth and checks.find(auth.get("kind", "TriggerAuthentication"), auth["name"], ns) is None:
                checks.fail(scaled, f"authenticationRef {auth['name']} is not rendered in {ns}")
            if trigger["type"] == "azure-servicebus":
                check_servicebus_trigger(checks, scaled, trigger, ref["name"])


def check_servicebus_trigger(checks: Checks, scaled: dict, trigger: dict, deployment_name: str) -> None:
    meta = trigger["metadata"]
    for key in ("namespace", "queueName", "messageCount"):
        if not meta.get(key):
            checks.fail(scaled, f"azure-servicebus trigger needs metadata.{key} (workload identity needs the namespace)")
    if not trigger.get("authenticationRef"):
        checks.fail(scaled, "azure-servicebus trigger has no authenticationRef (no connection strings here)")
    ns = scaled["metadata"]["namespace"]
    deployment = checks.find("Deployment", deployment_name, ns)
    if deployment is None:
        return
    config = worker_config(checks, deployment)
    if config is None:
        return
    transport = config.get("transport", {})
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    fqdn = env.get("ONBOARD__TRANSPORT__NAMESPACE", transport.get("namespace", ""))
    queue = env.get("ONBOARD__TRANSPORT__QUEUE", transport.get("queue"))
    if meta.get("queueName") != queue:
        checks.fail(scaled, f"scales on queue {meta.get('queueName')!r} but the worker reads {queue!r}")
    if fqdn.split(".")[0] != meta.get("namespace"):
        checks.fail(scaled, f"scales on namespace {meta.get('namespace')!r} but the worker connects to {fqdn!r}")


def worker_config(checks: Checks, deployment: dict) -> dict | None:
    ns = deployment["metadata"]["namespace"]
    for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
        if "configMap" not in volume:
            continue
        cm = checks.find("ConfigMap", volume["configMap"]["name"], ns)
        if cm and "config.toml" in cm.get("data", {}):
            try:
                return tomllib.loads(cm["data"]["config.toml"])
            except tomllib.TOMLDecodeError as err:
                checks.fail(cm, f"config.toml is not valid TOML: {err}")
                return None
    checks.fail(deployment, "mounts no ConfigMap with a config.toml")
    return None


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    rendered, crd_dir, builtin_out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    if not crd_dir.is_dir():
        print(f"k8s_check: no CRD directory at {crd_dir} (expected ../shared/k8s-crds)", file=sys.stderr)
        return 2
    objects = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    if not objects:
        print(f"k8s_check: {rendered} holds no objects", file=sys.stderr)
        return 1
    schemas = load_crds(crd_dir)
    checks = Checks(objects)
    check_keda(checks, schemas)
    check_references(checks)
    builtin = [o for o in objects if o.get("apiVersion", "").rpartition("/")[0] != KEDA_GROUP]
    builtin_out.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    if checks.problems:
        print(f"k8s_check: {rendered}: {len(checks.problems)} problem(s):", file=sys.stderr)
        for problem in checks.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    keda = len(objects) - len(builtin)
    print(f"k8s_check: {rendered.name}: {keda} KEDA objects valid against their CRDs; references resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
