"""The code-quality gates, part of the test command: ruff, mypy (strict on contracts/ and
services/kit/) and import-linter's architecture contracts, all configured in pyproject.toml.

Each runs from the venv the tests run in, at the repository root, and must exit 0; on failure
the tool's own report is the assertion message.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GATES = {
    # caches off: a fresh run each time, nothing written into the work tree but mypy's own cache
    "ruff": ["check", "--no-cache", "."],
    "mypy": ["--config-file", "pyproject.toml"],
    "lint-imports": ["--no-cache", "--no-logo", "--config", "pyproject.toml"],
}


@pytest.mark.parametrize("tool", list(GATES))
def test_gate_passes(tool: str) -> None:
    exe = BIN / tool  # the venv's own, at the version pyproject.toml asks for
    if not exe.exists():
        pytest.skip(f"{tool} is not installed in {BIN}: run `pip install -e '.[test]'` (scripts/bootstrap does)")
    proc = subprocess.run([exe, *GATES[tool]], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, (
        f"`{tool} {' '.join(GATES[tool])}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
