"""Shared fixtures: every test gets its own sqlite MLflow store and a clean environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    # One data cache per test session (MNIST-1D generation is the slow part of loading), and no
    # tracking URI leaking in from the developer's shell.
    os.environ["LRSTUDY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # One process per study unless a test asks for workers (tests/test_execution.py does): a
    # worker process costs seconds of imports, and most tests are about something else.
    os.environ["LRSTUDY_WORKERS"] = "1"


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose arguments contain `text` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd and state != "Z":
            found.append(cmd)
    return found


def wait_until_gone(text: str, timeout: float = 30.0) -> list[str]:
    """Poll until no live process mentions `text`; return what is still there at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def smoke_study(tmp_path: Path, name: str, epochs: int = 2, seeds: str = "[0, 1]") -> Path:
    """studies/smoke.yaml under another name (its own experiment), with other epochs and seeds."""
    text = SMOKE.read_text().replace("name: smoke", f"name: {name}")
    text = text.replace("experiment: smoke", f"experiment: {name}")
    text = text.replace("epochs: 2", f"epochs: {epochs}").replace(
        "seeds: [0, 1]", f"seeds: {seeds}"
    )
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


# Tests that must run under CI (a skip fails there): the marker, the registry and the hooks.
from tests.required_tests import (  # noqa: E402, F401 - conftest hooks are found by name
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_make_collect_report,
    pytest_runtest_makereport,
)
