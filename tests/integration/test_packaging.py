"""The wheel a non-editable ``pip install .`` builds holds the whole package.

The tests run on an editable install, which imports from the source tree and so would never
notice a package missing from ``pyproject.toml``'s list (``vault.ops`` once was: every ``dvault``
command but ``migrate`` failed from a wheel). This builds the real wheel and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check"]


def _source_files() -> set[str]:
    """What the wheel must hold: every module and data file of ``vault/``, and the migrations
    as ``vault/_migrations``."""
    found = set()
    for base, prefix in ((ROOT / "vault", "vault"), (ROOT / "migrations", "vault/_migrations")):
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(f"{prefix}/{path.relative_to(base).as_posix()}")
    return found


def _clean_copy(dest: Path) -> Path:
    """The sources a build reads, without the ``build/`` folder an earlier build left (setuptools
    would ship what is in it)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for name in ("vault", "migrations"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    source = _clean_copy(tmp_path / "src")
    built = subprocess.run(
        [*PIP_WHEEL, "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("vault/")}
    missing = sorted(_source_files() - shipped)
    assert not missing, f"not in the wheel: {missing}"
    assert "vault/ops/runtime.py" in shipped  # the check itself sees subpackages
