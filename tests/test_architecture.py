"""Guard: imports flow one way, ``app → schema → resolvers → db → domain``.

Every module of ours is parsed (never imported), and each import, including those under
``if TYPE_CHECKING:``, inside functions, relative ones and literal ``importlib.import_module``
calls, is checked against the table in STYLE.md.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("app", "schema", "resolvers", "db", "domain")
OURS = frozenset({*LAYERS, "tests"})

# Which of our packages each layer may import (itself always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "db": frozenset({"domain"}),
    "resolvers": frozenset({"db", "domain"}),
    "schema": frozenset({"resolvers", "domain"}),
    "app": frozenset({"schema", "resolvers", "db", "domain"}),
}
STDLIB = frozenset(sys.stdlib_module_names)


def imported_modules(source: str, module: str, *, is_package: bool) -> Iterator[str]:
    """Absolute names of the modules ``source`` (the text of ``module``) imports."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                yield node.module
                continue
            base = package_parts[: len(package_parts) - (node.level - 1)]
            if node.level - 1 > len(package_parts) or not base:
                yield "." * node.level + (node.module or "")  # escapes our packages
                continue
            yield ".".join([*base, node.module] if node.module else base)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``imports X`` for each import that breaks the layering, for the module ``module``."""
    layer = module.split(".")[0]
    found = []
    for name in imported_modules(source, module, is_package=is_package):
        top = name.split(".")[0]
        if top == layer:
            continue
        if layer == "domain":
            ok = top in STDLIB and top not in OURS
        elif top in OURS:
            ok = top in ALLOWED[layer]
        else:  # third-party (or stdlib): fine outside domain
            ok = bool(top)
        if not ok:
            found.append(f"imports {name}")
    return sorted(set(found))


def our_modules(root: Path) -> Iterator[tuple[Path, str, bool]]:
    """Every ``.py`` file of the layers under ``root``: path, module name, is a package."""
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            yield path, ".".join(parts[:-1] if is_package else parts), is_package


def layering_problems(root: Path) -> list[str]:
    """``file: imports X`` for every import under ``root`` that breaks the layering."""
    return [
        f"{path.relative_to(root).as_posix()}: {problem}"
        for path, module, is_package in our_modules(root)
        for problem in violations(path.read_text(encoding="utf-8"), module, is_package=is_package)
    ]


def test_import_direction() -> None:
    modules = [module for _, module, _ in our_modules(ROOT)]
    assert {m.split(".")[0] for m in modules} == set(LAYERS)
    assert any(m.startswith("db.migrations.versions.") for m in modules)
    problems = layering_problems(ROOT)
    assert problems == [], "layering violations:\n" + "\n".join(problems)


# --- The checker itself must catch violations --------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("domain.orders", "import sqlalchemy", ["imports sqlalchemy"]),
        ("domain.orders", "from strawberry import type", ["imports strawberry"]),
        ("domain.orders", "from db.models import Order", ["imports db.models"]),
        ("domain.orders", "import app.settings", ["imports app.settings"]),
        ("domain.orders", "from tests import factories", ["imports tests"]),
        # Relative imports above a top-level package are reported as written.
        ("domain.orders", "from ..db import models", ["imports ..db"]),
        ("db.models", "from resolvers.orders import place_order", ["imports resolvers.orders"]),
        ("db.models", "from schema import build_schema", ["imports schema"]),
        ("db.migrations.env", "from app.settings import Settings", ["imports app.settings"]),
        ("resolvers.orders", "import schema.orders", ["imports schema.orders"]),
        ("resolvers.orders", "from app.context import Context", ["imports app.context"]),
        ("schema.orders", "from db.models import Order", ["imports db.models"]),
        ("schema.orders", "from ..db.models import Order", ["imports ..db.models"]),
        ("schema.orders", "from app import main", ["imports app"]),
        (
            "schema.orders",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from db.models import Order",
            ["imports db.models"],
        ),
        ("schema.orders", "def f():\n    import db.uow\n", ["imports db.uow"]),
        (
            "schema.orders",
            "import importlib\nimportlib.import_module('db.models')",
            ["imports db.models"],
        ),
        ("resolvers", "from ..app import cli", ["imports ..app"]),
        ("schema", "from .orders import x\nfrom app import y", ["imports app"]),
    ],
)
def test_violations_are_reported(module: str, source: str, expected: list[str]) -> None:
    is_package = module in LAYERS
    assert violations(source, module, is_package=is_package) == expected


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("domain.orders", "from __future__ import annotations\nimport re, decimal"),
        ("domain.orders", "from collections.abc import Mapping\nfrom domain.errors import X"),
        ("domain.orders", "from .errors import DomainError\nfrom . import money"),
        ("db.models", "from sqlalchemy.orm import Mapped\nfrom domain.money import Money"),
        ("db.migrations.env", "from alembic import context\nfrom db.models import Base"),
        ("resolvers.orders", "from db.uow import UnitOfWork\nfrom domain import validation"),
        ("resolvers.orders", "from .common import caller"),
        ("schema.orders", "import strawberry\nfrom resolvers import orders\nfrom domain import x"),
        ("app.main", "from schema import build_schema\nfrom db import database\nimport uvicorn"),
        ("app.main", "from resolvers.events import x\nfrom domain.orders import y"),
    ],
)
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert violations(source, module) == []


def test_relative_imports_resolve_against_the_package() -> None:
    found = list(imported_modules("from . import a\nfrom .b import c", "db", is_package=True))
    assert found == ["db", "db.b"]
    found = list(imported_modules("from .. import a", "db.migrations.env", is_package=False))
    assert found == ["db"]


def test_layering_problems_walks_every_layer(tmp_path: Path) -> None:
    files = {
        "domain/__init__.py": "",
        "domain/money.py": "import decimal\nimport pydantic\n",
        "db/__init__.py": "from domain import money\n",
        "db/migrations/versions/0002_x.py": "from resolvers import orders\nimport alembic\n",
        "resolvers/orders.py": "from db import models\nfrom schema.types import T\n",
        "schema/__init__.py": "from .orders import x\nfrom db.uow import UnitOfWork\n",
        "app/main.py": "import schema, resolvers, db, domain, starlette\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert layering_problems(tmp_path) == [
        "schema/__init__.py: imports db.uow",
        "resolvers/orders.py: imports schema.types",
        "db/migrations/versions/0002_x.py: imports resolvers",
        "domain/money.py: imports pydantic",
    ]
