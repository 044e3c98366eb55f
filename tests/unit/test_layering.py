"""Import layering (STYLE §13): the verifier middleware installs into Open WebUI without the
vault's server stack, the pure audit and token code runs offline without a database, and only
``vault.api`` speaks FastAPI.

Imports are checked twice: transitively, by importing the module in a fresh interpreter and
reading ``sys.modules``; and statically, by reading every ``import`` in the source with ``ast``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import vault

SOURCE = Path(vault.__file__).parent
SERVER_STACK = ("fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic")
PURE = (
    "vault.audit.chain",
    "vault.audit.entry",
    "vault.audit.checkpoint",
    "vault.audit.verify",
    "vault.tokens",
    "vault.tokens.claims",
    "vault.tokens.jws",
)


def loaded_by(module: str) -> set[str]:
    """Every module in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def top_level(names: set[str], roots: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.split(".")[0] in roots}


def imports_in(text: str, package: str) -> set[str]:
    """Every module named by an import statement, anywhere in ``text`` (relative ones resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    package = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts[:-1])
    return imports_in(path.read_text("utf-8"), package)


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_middleware_loads_no_server_stack() -> None:
    loaded = loaded_by("vault.middleware")
    assert "vault.middleware.verifier" in loaded  # the check ran against the real import
    assert top_level(loaded, SERVER_STACK) == set()
    assert {n for n in loaded if n.startswith(("vault.storage", "vault.api", "vault.ops"))} == set()


@pytest.mark.parametrize("module", PURE)
def test_pure_audit_and_token_code_loads_no_storage(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    assert top_level(loaded, ("sqlalchemy", "sqlmodel", "alembic", "fastapi", "starlette")) == set()
    assert {n for n in loaded if n == "vault.storage" or n.startswith("vault.storage.")} == set()


def test_only_vault_api_imports_fastapi() -> None:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 20
    importing = {
        module_name(path)
        for path in files
        if any(name.split(".")[0] == "fastapi" for name in imports_of(path))
    }
    assert importing, "no module imports fastapi at all: the scan is broken"
    assert {m for m in importing if m != "vault.api" and not m.startswith("vault.api.")} == set()


def test_the_import_scan_sees_nested_relative_and_from_imports() -> None:
    text = (
        "import os\n"
        "from .seen import SeenTokens\n"
        "from .. import api\n"
        "def later():\n"
        "    import fastapi.responses\n"
        "    from starlette import requests\n"
    )
    found = imports_in(text, "vault.middleware")
    assert {"os", "vault.middleware.seen", "vault", "vault.api", "fastapi.responses"} <= found
    assert "starlette.requests" in found
    assert "fastapi" in {n.split(".")[0] for n in imports_of(SOURCE / "api" / "app.py")}
