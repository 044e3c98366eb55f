"""``dvault openwebui serve`` refuses to start without what it needs: one line on stderr, exit 1.

The first test runs with the project's own venv, where open-webui is not installed; the others
with the Open WebUI venv (skipped without it, unless ``DVAULT_REQUIRE_E2E=1``). Neither starts a
server: the checks come before Open WebUI is imported.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import owui_env
from tests.support import free_port

COMPLETE = {
    "VAULT_URL": "http://127.0.0.1:9",
    "VAULT_VERIFIER_CREDENTIAL": "dv_not-a-real-credential",
    "WEBUI_SECRET_KEY": "e2e-launcher-secret",
}


def serve(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [*command, "openwebui", "serve", "--host", "127.0.0.1", "--port", str(free_port())]
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.skipif(
    importlib.util.find_spec("open_webui") is not None,
    reason="open-webui is installed in the project's venv",
)
def test_without_open_webui_installed_it_says_so(tmp_path: Path) -> None:
    env = owui_env(DATA_DIR=str(tmp_path / "data"), **COMPLETE)

    result = serve([sys.executable, "-m", "vault"], env, tmp_path)

    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert line.startswith("dvault: error: open-webui is not installed"), line
    assert not (tmp_path / "data").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "missing",
    ["VAULT_URL", "VAULT_VERIFIER_CREDENTIAL", "WEBUI_SECRET_KEY"],
)
def test_a_missing_setting_is_one_line_and_exit_1(
    owui_venv: Path, tmp_path: Path, missing: str
) -> None:
    present = {k: v for k, v in COMPLETE.items() if k != missing}
    env = owui_env(DATA_DIR=str(tmp_path / "data"), **present)
    env.pop(missing, None)

    result = serve([str(owui_venv / "bin" / "dvault")], env, tmp_path)

    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert line.startswith("dvault: error: set "), line
    assert missing in line
    assert "Traceback" not in result.stderr
