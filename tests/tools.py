"""The real ops tools the tests run (installed by scripts/install-ops-tools.sh)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: run scripts/install-ops-tools.sh (make test does)")
    return path


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
