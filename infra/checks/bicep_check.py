"""Offline checks of the Bicep templates, for machines without the Bicep compiler.

Every .bicep file under infra/ is parsed with pycep (a Bicep grammar in Python), which catches
syntax errors. On the parsed templates it then checks what the compiler's type checker would:
module paths exist and are called with exactly the parameters they declare; resource properties
exist in the official Azure REST API spec of that resource type (../shared/azure-rest-specs),
read-only properties are not set and literal enum values are allowed. It also checks this
project's rules: no key, connection string or secret in any output, every role assignment is for
a service principal with a deterministic guid() name, and built-in role ids are the real ones.
Every Role Based Access Control Administrator assignment must carry an ABAC delegation condition
that, on both the write (@Request) and the delete (@Resource) branch, allows only Storage Blob Data
Contributor, only for service principals, and excludes the delegate's own principal id, so the
delegate can never grant itself data access. (Conditions cannot constrain the assignment's scope;
the worker's provisioner refuses the account scope.)

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
# Roles whose holder may assign roles: each assignment of one must carry a delegation condition.
DELEGATING_ROLES = {"f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator"}
# The only roles a delegation condition may let the delegate assign.
DELEGABLE_ROLES = {"ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor"}
# Each role assignment action, and where a condition reads its attributes (Microsoft's "Authorization
# actions and attributes": request attributes for write, resource attributes for delete).
DELEGATION_ACTIONS = {
    "Microsoft.Authorization/roleAssignments/write": "Request",
    "Microsoft.Authorization/roleAssignments/delete": "Resource",
}

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


ABAC_TOKEN = re.compile(
    r"\s*(?:(?P<attr>@\w+\[[^\]]*\])|(?P<set>\{[^{}]*\})|(?P<string>'[^']*')"
    r"|(?P<op>&&|\|\||!|\(|\))|(?P<word>[\w:.\-]+))"
)


def abac_tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = ABAC_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"unexpected text at {text[pos:pos + 30]!r}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "word" and value.upper() in {"AND", "OR", "NOT"}:
            kind, value = "op", {"AND": "&&", "OR": "||", "NOT": "!"}[value.upper()]
        tokens.append((kind, value))
        pos = match.end()
    return tokens


def abac_values(token: tuple[str, str]) -> frozenset[str]:
    kind, value = token
    items = value[1:-1].split(",") if kind == "set" else [value]
    return frozenset(item.strip().strip("'") for item in items if item.strip())


def parse_abac(text: str):
    """An ABAC condition as a tree: ("or"|"and", [nodes]), ("not", node), ("action", name) or
    ("attr", "@Source[attribute]", operator, values)."""
    tokens = abac_tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("the condition ends early")
        pos += 1
        return tokens[pos - 1]

    def binary(kind: str, op: str, operand):
        nodes = [operand()]
        while peek() == ("op", op):
            take()
            nodes.append(operand())
        return nodes[0] if len(nodes) == 1 else (kind, nodes)

    def expression():
        return binary("or", "||", conjunction)

    def conjunction():
        return binary("and", "&&", unary)

    def unary():
        token = take()
        if token == ("op", "!"):
            return ("not", unary())
        if token == ("op", "("):
            node = expression()
            if take() != ("op", ")"):
                raise ValueError("a parenthesis is not closed")
            return node
        if token[0] == "word" and token[1] in {"ActionMatches", "SubOperationMatches"}:
            values = take()
            if values[0] != "set":
                raise ValueError(f"{token[1]} without {{'...'}}")
            return ("action" if token[1] == "ActionMatches" else "suboperation", *sorted(abac_values(values)))
        if token[0] == "attr":
            operator = take()
            value = take()
            if operator[0] != "word" or value[0] not in {"set", "string", "word"}:
                raise ValueError(f"{token[1]} is not followed by an operator and a value")
            return ("attr", token[1].lower(), operator[1].lower(), abac_values(value))
        raise ValueError(f"unexpected {token[1]!r}")

    tree = expression()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos][1]!r} after a complete condition")
    return tree


def flatten(node, kind: str) -> list:
    return [n for child in node[1] for n in flatten(child, kind)] if node[0] == kind else [node]


def gated_atoms(tree) -> dict[str, list]:
    """For each action, the attribute expressions every request for it must satisfy: the condition
    is an AND of clauses, and a clause `!(ActionMatches{a}) OR (x AND y ...)` requires x, y ... of
    action a. Anything else in the condition can only narrow it further, so it is not read."""
    atoms: dict[str, list] = {}
    for clause in flatten(tree, "and"):
        alternatives = flatten(clause, "or")
        gates = [a for a in alternatives if a[0] == "not" and a[1][0] == "action" and len(a[1]) == 2]
        if len(alternatives) != 2 or len(gates) != 1:
            continue
        body = alternatives[1] if alternatives[0] is gates[0] else alternatives[0]
        action = gates[0][1][1].lower()
        atoms.setdefault(action, []).extend(a for a in flatten(body, "and") if a[0] == "attr")
    return atoms


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
        for name, resource in (tree.get("resources") or {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments" and not resource.get("existing"):
                self.check_delegation(where, name, body_of(resource["config"]), tree, symbols)

    def resolve(self, expr, tree: dict):
        """expr with references to variables (and properties of them) replaced by their values."""
        variables = tree.get("variables") or {}
        if isinstance(expr, str) and expr in variables:
            return self.resolve(variables[expr]["value"], tree)
        if isinstance(expr, dict):
            accessor = (expr.get("operator") or {})
            if accessor.get("type") == "property_accessor":
                base = self.resolve(accessor["operands"]["operand_1"], tree)
                key = accessor["operands"]["operand_2"]
                if isinstance(base, dict) and isinstance(key, str) and key in base:
                    return self.resolve(base[key], tree)
            return {k: self.resolve(v, tree) for k, v in expr.items()}
        if isinstance(expr, list):
            return [self.resolve(v, tree) for v in expr]
        return expr

    def condition_text(self, expr, tree: dict, symbols: set[str]) -> tuple[str, dict[str, str]]:
        """The text of a condition, and what each replace() placeholder in it stands for (the
        JSON of the replacement expression). A multi-line Bicep string cannot interpolate, so a
        condition naming a principal is a literal put through replace()."""
        if isinstance(expr, str) and expr in (tree.get("variables") or {}):
            return self.condition_text(tree["variables"][expr]["value"], tree, symbols)
        if isinstance(expr, str) and expr not in symbols:
            return expr, {}
        function = (expr.get("function") or {}) if isinstance(expr, dict) else {}
        if function.get("type") == "replace":
            args = function["parameters"]
            text, placeholders = self.condition_text(args["original_string"], tree, symbols)
            old = args["old_string"]
            if isinstance(old, str) and old not in symbols:
                placeholders[old] = json.dumps(args["new_string"])
                return text, placeholders
        raise ValueError(f"{json.dumps(expr)} is neither a string nor replace() of one")

    def check_delegation(self, where: str, name: str, body: dict, tree: dict, symbols: set[str]) -> None:
        props = body.get("properties") or {}
        role = json.dumps(self.resolve(props.get("roleDefinitionId"), tree)).lower()
        delegating = [r for r in DELEGATING_ROLES if r in role]
        if not delegating:
            return
        what = f"role assignment {name} ({DELEGATING_ROLES[delegating[0]]})"
        if "condition" not in props:
            self.fail(where, f"{what} has no ABAC condition: it could assign any role to anyone")
            return
        try:
            text, placeholders = self.condition_text(props["condition"], tree, symbols)
            atoms = gated_atoms(parse_abac(text))
        except (ValueError, KeyError) as err:
            self.fail(where, f"{what}: cannot read its condition: {err}")
            return
        principal = json.dumps(props.get("principalId"))
        principal_name = props["principalId"] if isinstance(props.get("principalId"), str) else principal
        # (what is missing, attribute, accepted operators, accepted values, the values to write)
        requirements = [
            (
                "the role-id restriction",
                "RoleDefinitionId",
                ("ForAnyOfAnyValues:GuidEquals", "GuidEquals"),
                lambda values: bool(values) and {v.lower() for v in values} <= DELEGABLE_ROLES.keys(),
                "{" + ", ".join(sorted(DELEGABLE_ROLES)) + "}",
            ),
            (
                "the ServicePrincipal restriction",
                "PrincipalType",
                ("ForAnyOfAnyValues:StringEqualsIgnoreCase", "StringEqualsIgnoreCase"),
                lambda values: {v.lower() for v in values} == {"serviceprincipal"},
                "{'ServicePrincipal'}",
            ),
            (
                f"the exclusion of its own principal id ({principal_name}), without which it could grant "
                "itself data access",
                "PrincipalId",
                ("ForAnyOfAllValues:GuidNotEquals", "GuidNotEquals"),
                lambda values: any(placeholders.get(v, json.dumps(v)).lower() == principal.lower() for v in values),
                f"{{<{principal_name}>}}",
            ),
        ]
        for action, source in DELEGATION_ACTIONS.items():
            found = atoms.get(action.lower(), [])
            branch = action.rsplit("/", 1)[1]
            for missing, attribute, operators, accept, values in requirements:
                attr = f"@{source}[Microsoft.Authorization/roleAssignments:{attribute}]"
                accepted = {o.lower() for o in operators}
                if not any(a[1] == attr.lower() and a[2] in accepted and accept(a[3]) for a in found):
                    self.fail(
                        where,
                        f"{what}: the condition's {branch} branch lacks {missing}: "
                        f"{attr} {operators[0]} {values}",
                    )

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
