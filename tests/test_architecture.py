"""House rules as tests (STYLE habits 3–4, DESIGN §5 (4)).

1. Adapters — views, API views, consumers, tasks — never reach a tenant-owned model through
   ``Model.objects`` or ``Model._default_manager``: tenant data goes through ``visible_to``.
   The few platform-level exceptions are listed in ``ALLOWED`` with their reason.
2. ``agent/`` and ``gp/`` are plain libraries: they never import Django or the portal's apps.
3. Every org-scoped API view that writes names the action it needs before its handler runs.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTER_GLOBS = ("*/views.py", "*/views/*.py", "*/api.py", "*/api/*.py", "portal/consumers.py", "*/tasks.py")
MANAGERS = {"objects", "_default_manager"}

# (module path, enclosing function or Class.method, model name) → why the unscoped access is right.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("tenants/api.py", "ApplicationListView.get", "Organisation"): (
        "platform level: the operator's queue of pending applications, after PlatformActor(user)"
    ),
    ("tenants/api.py", "_application", "Organisation"): (
        "platform level: one application, for the operator only (PlatformActor(user) first)"
    ),
    ("tenants/api.py", "MandateListView.post", "Organisation"): (
        "naming the grantee of a new mandate: any active organisation, by its public short name"
    ),
    ("tenants/api.py", "_org_slugs", "Organisation"): (
        "slugs of the organisations named in audit events the actor may already see"
    ),
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    scope: str
    model: str
    manager: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line} in {self.scope or '<module>'}: {self.model}.{self.manager} on a "
            "tenant-owned model; use tenants.access.visible_to/get_visible (or a selector)"
        )


def tenant_owned_names() -> dict[str, str]:
    """Class name → label of every tenant-owned model (those with an access rule)."""
    from tenants.access import tenant_owned_models

    return {m.__name__: m._meta.label for m in tenant_owned_models()}


def _imported_models(tree: ast.Module, owned: dict[str, str]) -> dict[str, str]:
    """Local name → model class name, for names a module imports that are tenant-owned models.

    Resolving ``from x import Y as Z`` through the import system (instead of trusting the name)
    catches aliases and re-exports.
    """
    from tenants.access import tenant_owned_models

    models = set(tenant_owned_models())
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                try:
                    obj = getattr(importlib.import_module(node.module), alias.name)
                except (ImportError, AttributeError):
                    continue
                if obj in models:
                    names[alias.asname or alias.name] = obj.__name__
    return names


def find_unscoped_queries(source: str, path: str) -> list[Violation]:
    owned = tenant_owned_names()
    tree = ast.parse(source, filename=path)
    local = _imported_models(tree, owned)
    found: list[Violation] = []

    def model_of(node: ast.expr) -> str | None:
        # `Device.objects`, `Alias.objects`, `models.Device.objects`, `apps.get_model(…)` is not chased
        if isinstance(node, ast.Name):
            return local.get(node.id) or (node.id if node.id in owned else None)
        if isinstance(node, ast.Attribute) and node.attr in owned:
            return node.attr
        return None

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Attribute) and child.attr in MANAGERS:
                model = model_of(child.value)
                if model is not None:
                    found.append(Violation(path, child.lineno, ".".join(scope), model, child.attr))
            visit(child, scope)

    visit(tree, [])
    return found


def adapter_modules() -> list[Path]:
    seen: set[Path] = set()
    for pattern in ADAPTER_GLOBS:
        for p in ROOT.glob(pattern):
            if ".venv" not in p.parts and "tests" not in p.parts:
                seen.add(p)
    return sorted(seen)


def test_the_guard_scans_the_adapters_it_should() -> None:
    names = {str(p.relative_to(ROOT)) for p in adapter_modules()}
    assert {"tenants/api.py", "devices/api.py", "portal/consumers.py"} <= names


def test_adapters_reach_tenant_data_only_through_the_access_module() -> None:
    violations = []
    used_allowances = set()
    for path in adapter_modules():
        rel = str(path.relative_to(ROOT))
        for v in find_unscoped_queries(path.read_text(), rel):
            key = (v.path, v.scope, v.model)
            if key in ALLOWED:
                used_allowances.add(key)
            else:
                violations.append(str(v))
    assert not violations, "unscoped tenant queries:\n" + "\n".join(violations)
    stale = set(ALLOWED) - used_allowances
    assert not stale, f"allow-list entries that match nothing any more (remove them): {sorted(stale)}"


def test_every_allowance_says_why() -> None:
    for key, reason in ALLOWED.items():
        assert len(reason.split()) >= 5, key


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("from devices.models import Device\ndef v():\n    return Device.objects.all()\n", ["Device"]),
        (
            "from devices.models import Device as D\nclass V:\n    def get(self):\n        D._default_manager.get()\n",
            ["D"],
        ),
        (
            "from devices import models\ndef v():\n    return models.SecureElement.objects.all()\n",
            ["SecureElement"],
        ),
        ("from tenants.models import Membership\nx = Membership.objects.count()\n", ["Membership"]),
        (
            "from tenants.access import visible_to\nfrom devices.models import Device\n"
            "def v(a):\n    return visible_to(Device, a, 'devices.view')\n",
            [],
        ),
        ("from django.contrib.auth.models import User\ndef v():\n    return User.objects.all()\n", []),
    ],
    ids=["direct", "alias-default-manager", "module-attribute", "module-level", "scoped", "not-tenant-owned"],
)
def test_the_guard_itself_catches_unscoped_queries(snippet: str, expected: list[str]) -> None:
    found = find_unscoped_queries(snippet, "example/views.py")
    assert len(found) == len(expected), found
    owned = tenant_owned_names()
    for v in found:
        assert v.model in owned


def test_the_guard_names_the_enclosing_method() -> None:
    src = "from devices.models import Device\nclass V:\n    def get(self):\n        return Device.objects.all()\n"
    (v,) = find_unscoped_queries(src, "x/views.py")
    assert (v.scope, v.model, v.manager, v.line) == ("V.get", "Device", "objects", 4)


# --- agent/ and gp/ stay free of Django -------------------------------------------------------

FORBIDDEN_IN_LIBRARIES = (
    "django",
    "rest_framework",
    "channels",
    "celery",
    "portal",
    "tenants",
    "devices",
    "audit",
)


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_agent_and_gp_never_import_django_or_the_portal() -> None:
    offenders = []
    files = [p for d in ("agent", "gp") for p in (ROOT / d).rglob("*.py")]
    assert files, "agent/ and gp/ hold no Python files: the scan is looking in the wrong place"
    for path in files:
        for line, module in _imports(ast.parse(path.read_text(), filename=str(path))):
            if module.split(".")[0] in FORBIDDEN_IN_LIBRARIES:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)


# --- org-scoped API writes declare their action ---------------------------------------------


def test_every_org_scoped_api_view_that_writes_declares_its_write_action() -> None:
    from portal.api import OrgScopedAPIView
    from tests.support.routes import all_routes

    missing = []
    for route in all_routes():
        cls = route.view_class
        if cls is None or not issubclass(cls, OrgScopedAPIView):
            continue
        if route.methods & {"post", "put", "patch", "delete"} and cls.write_action is None:
            missing.append(f"{route} ({cls.__module__}.{cls.__name__})")
    assert not missing, "set write_action on: " + ", ".join(missing)


def test_the_provider_sdk_imports_neither_django_nor_any_portal_app() -> None:
    """``sdk/`` runs on the provider's side: it talks to the public REST API and may use ``gp``."""
    forbidden = {*FORBIDDEN_IN_LIBRARIES, "keys", "jobs", "agent", "manage"}
    files = list((ROOT / "sdk").rglob("*.py"))
    assert files, "sdk/ holds no Python files: the scan is looking in the wrong place"
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _imports(ast.parse(path.read_text(), filename=str(path)))
        if module.split(".")[0] in forbidden
    ]
    assert not offenders, "\n".join(offenders)
