"""Offline checks of the Bicep templates, for machines without the Bicep compiler.

Every .bicep file under infra/ is parsed with pycep (a Bicep grammar in Python), which catches
syntax errors. On the parsed templates it then checks what the compiler's type checker would:
module paths exist and are called with exactly the parameters they declare; resource properties
exist in the official Azure REST API spec of that resource type (../shared/azure-rest-specs),
read-only properties are not set and literal enum values are allowed. It also checks this
project's rules: no key, connection string or secret in any output, every role assignment is for
a service principal with a deterministic guid() name, and built-in role ids are the real ones.

Usage: bicep_check.py INFRA_DIR SPECS_DIR
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pycep import BicepParser

# Resource type -> (spec file under specification/, definition of the PUT body).
SPEC_OF = {
    "Microsoft.ServiceBus/namespaces/queues": (
        "servicebus/resource-manager/Microsoft.ServiceBus/stable/2024-01-01/Queue.json",
        "SBQueue",
    ),
    "Microsoft.ServiceBus/namespaces/topics": (
        "servicebus/resource-manager/Microsoft.ServiceBus/stable/2024-01-01/topics.json",
        "SBTopic",
    ),
    "Microsoft.Storage/storageAccounts": (
        "storage/resource-manager/Microsoft.Storage/stable/2025-08-01/storage.json",
        "StorageAccountCreateParameters",
    ),
    "Microsoft.Storage/storageAccounts/blobServices": (
        "storage/resource-manager/Microsoft.Storage/stable/2025-08-01/blob.json",
        "BlobServiceProperties",
    ),
    "Microsoft.ManagedIdentity/userAssignedIdentities": (
        "msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/ManagedIdentity.json",
        "Identity",
    ),
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials": (
        "msi/resource-manager/Microsoft.ManagedIdentity/stable/2024-11-30/ManagedIdentity.json",
        "FederatedIdentityCredential",
    ),
    "Microsoft.Authorization/roleAssignments": (
        "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleAssignmentsCalls.json",
        "RoleAssignmentCreateParameters",
    ),
    "Microsoft.Authorization/roleDefinitions": (
        "authorization/resource-manager/Microsoft.Authorization/stable/2022-04-01/authorization-RoleDefinitionsCalls.json",
        "RoleDefinition",
    ),
}

# Keys Bicep itself interprets on a resource body; they are not part of the REST body.
BICEP_KEYS = {"name", "parent", "scope", "dependsOn"}

# Built-in roles this project assigns (ids are the same in every Entra tenant).
BUILT_IN_ROLES = {
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0": "Azure Service Bus Data Receiver",
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39": "Azure Service Bus Data Sender",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59": "Managed Identity Contributor",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
}

SECRET_WORDS = re.compile(
    r"listKeys|listConnectionStrings|connectionString|primaryKey|secondaryKey|SharedAccessKey|listAuthRules|listSecrets",
    re.IGNORECASE,
)
GUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)


class Specs:
    """Resolves definitions (with $ref and allOf) in the offline REST specs."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[Path, dict] = {}

    def load(self, path: Path) -> dict:
        path = path.resolve()
        if path not in self.files:
            self.files[path] = json.loads(path.read_text())
        return self.files[path]

    def resolve(self, schema: dict, base: Path) -> tuple[dict, Path]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            file_part, _, pointer = ref.partition("#")
            if file_part:
                base = (base.parent / file_part).resolve()
            node = self.load(base)
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node
            seen += 1
            if seen > 50:
                raise RuntimeError(f"$ref loop at {ref}")
        return schema, base

    def properties(self, schema: dict, base: Path) -> dict[str, tuple[dict, Path]]:
        schema, base = self.resolve(schema, base)
        props: dict[str, tuple[dict, Path]] = {}
        for parent in schema.get("allOf", []):
            props.update(self.properties(parent, base))
        for name, sub in schema.get("properties", {}).items():
            props[name] = (sub, base)
        return props

    def definition(self, rtype: str) -> tuple[dict, Path] | None:
        if rtype not in SPEC_OF:
            return None
        rel, name = SPEC_OF[rtype]
        path = (self.root / "specification" / rel).resolve()
        return self.load(path)["definitions"][name], path


def body_of(config: dict) -> dict:
    """The resource body, unwrapped from pycep's condition/loop wrappers."""
    while isinstance(config, dict) and "config" in config and (
        "condition" in config or "loop_type" in config
    ):
        config = config["config"]
    return config


class Checker:
    def __init__(self, infra: Path, specs: Path):
        self.infra = infra
        self.specs = Specs(specs)
        self.parser = BicepParser()
        self.problems: list[str] = []
        self.parsed: dict[Path, dict] = {}

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def parse(self, path: Path) -> dict | None:
        if path in self.parsed:
            return self.parsed[path]
        try:
            tree = self.parser.parse(text=path.read_text())
        except Exception as err:  # pycep raises lark's exceptions
            self.fail(str(path), f"does not parse as Bicep: {str(err).splitlines()[0]}")
            return None
        self.parsed[path] = tree
        return tree

    def symbols(self, tree: dict) -> set[str]:
        names: set[str] = set()
        for section in ("parameters", "variables", "resources", "modules"):
            names.update((tree.get(section) or {}).keys())
        for resource in (tree.get("resources") or {}).values():
            loop = (resource.get("config") or {}).get("loop_type")
            if loop:
                names.add(loop["detail"].get("item_name", ""))
        return names

    def check_file(self, path: Path) -> None:
        tree = self.parse(path)
        if tree is None:
            return
        where = str(path.relative_to(self.infra.parent))
        symbols = self.symbols(tree)
        for name, module in (tree.get("modules") or {}).items():
            self.check_module(where, path, name, module)
        for name, resource in (tree.get("resources") or {}).items():
            self.check_resource(where, name, resource, symbols)
        for name, output in (tree.get("outputs") or {}).items():
            text = json.dumps(output)
            if SECRET_WORDS.search(text) or SECRET_WORDS.search(name):
                self.fail(where, f"output {name} exposes a key or connection string")
            if any(d.get("type") == "secure" for d in output.get("decorators", [])):
                self.fail(where, f"output {name} is @secure: outputs hold identifiers only")
        # Raw text as well: a secret could hide in an expression pycep simplifies.
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("output ") and SECRET_WORDS.search(line):
                self.fail(f"{where}:{number}", "output line mentions a key or connection string")
        for guid in GUID.findall(path.read_text()):
            if guid.lower() not in BUILT_IN_ROLES:
                self.fail(where, f"GUID {guid} is not one of the known built-in role ids")

    def check_module(self, where: str, path: Path, name: str, module: dict) -> None:
        target = (path.parent / module["detail"]["path"]).resolve()
        if not target.is_file():
            self.fail(where, f"module {name}: {module['detail']['path']} does not exist")
            return
        tree = self.parse(target)
        if tree is None:
            return
        declared = tree.get("parameters") or {}
        passed = (body_of(module["config"]).get("params") or {})
        for param in passed:
            if param not in declared:
                self.fail(where, f"module {name} passes {param}, which {target.name} does not declare")
        for param, spec in declared.items():
            if "default" not in spec and param not in passed:
                self.fail(where, f"module {name} does not pass required parameter {param} of {target.name}")

    def check_resource(self, where: str, name: str, resource: dict, symbols: set[str]) -> None:
        rtype = resource["type"]
        body = body_of(resource["config"])
        if resource.get("existing"):
            return
        if rtype == "Microsoft.Authorization/roleAssignments":
            props = body.get("properties") or {}
            if props.get("principalType") != "ServicePrincipal":
                self.fail(where, f"role assignment {name} must set principalType: 'ServicePrincipal'")
            name_expr = json.dumps(body.get("name"))
            if '"guid"' not in name_expr:
                self.fail(where, f"role assignment {name} must be named with guid(scope, principal, role)")
            if "condition" in props and props.get("conditionVersion") != "2.0":
                self.fail(where, f"role assignment {name} has a condition without conditionVersion '2.0'")
        found = self.specs.definition(rtype)
        if found is None:
            return
        schema, base = found
        self.check_object(f"{where} resource {name} ({rtype})", body, schema, base, symbols, top=True)

    def check_object(self, where, value, schema, base, symbols, top=False) -> None:
        if not isinstance(value, dict) or "operator" in value or "function" in value:
            return  # an expression: its type is only known at deployment
        props = self.specs.properties(schema, base)
        for key, sub_value in value.items():
            if top and key in BICEP_KEYS:
                continue
            if key not in props:
                self.fail(where, f"property {key!r} is not in the REST API spec (allowed: {', '.join(sorted(props))})")
                continue
            sub_schema, sub_base = self.specs.resolve(*props[key])
            if sub_schema.get("readOnly"):
                self.fail(where, f"property {key!r} is read-only")
                continue
            enum = sub_schema.get("enum")
            if (
                enum
                and isinstance(sub_value, str)
                and sub_value not in symbols
                and sub_value.lower() not in {str(e).lower() for e in enum}
            ):
                self.fail(where, f"{key}: {sub_value!r} is not one of {enum}")
            if sub_schema.get("type") == "boolean" and isinstance(sub_value, str) and sub_value not in symbols:
                self.fail(where, f"{key}: {sub_value!r} is not a boolean")
            if isinstance(sub_value, dict):
                self.check_object(f"{where}.{key}", sub_value, sub_schema, sub_base, symbols)
            elif isinstance(sub_value, list) and "items" in sub_schema:
                for item in sub_value:
                    item_schema, item_base = self.specs.resolve(sub_schema["items"], sub_base)
                    self.check_object(f"{where}.{key}[]", item, item_schema, item_base, symbols)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    infra, specs = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    if not (specs / "specification").is_dir():
        print(f"bicep_check: no REST specs at {specs} (expected ../shared/azure-rest-specs)", file=sys.stderr)
        return 2
    checker = Checker(infra, specs)
    files = sorted(infra.rglob("*.bicep"))
    if not files:
        print(f"bicep_check: no .bicep files under {infra}", file=sys.stderr)
        return 2
    for path in files:
        checker.check_file(path)
    if checker.problems:
        print(f"bicep_check: {len(checker.problems)} problem(s):", file=sys.stderr)
        for problem in checker.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"bicep_check: {len(files)} Bicep files parse; modules, properties and outputs check out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
