"""Under CI a skipped required test (PostgreSQL, Ray, namespaces, Chromium) fails, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = """
import pytest

@pytest.mark.required
def test_needs_a_service():
    pytest.skip("PostgreSQL binaries not installed")

@pytest.mark.required
@pytest.mark.skipif(True, reason="`chromium` is not on PATH")
def test_needs_a_browser():
    pass

def test_optional():
    pytest.skip("fine to skip anywhere")
"""


def _pytest(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "LRSTUDY_REQUIRE_ALL")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.required_tests", "-p", "no:cacheprovider"]
        + list(args),
        cwd=where,
        env={**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "400", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_skipped_required_test_fails_under_ci_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "test_demo.py").write_text(DEMO)
    laptop = _pytest(tmp_path, "-q", "test_demo.py")
    assert laptop.returncode == 0, laptop.stdout
    assert "3 skipped" in laptop.stdout
    for env in ({"CI": "true"}, {"LRSTUDY_REQUIRE_ALL": "1"}):
        ci = _pytest(tmp_path, "-q", "test_demo.py", **env)
        assert ci.returncode == 1, ci.stdout
        assert "1 skipped" in ci.stdout
        # A skip in the test body reads as FAILED, one from a skipif mark (setup) as ERROR.
        lines = [
            ln.split(" ", 1)[1]
            for ln in ci.stdout.splitlines()
            if ln.startswith(("FAILED test_demo.py", "ERROR test_demo.py"))
        ]
        assert lines == [
            "test_demo.py::test_needs_a_service - required test did not run "
            "(LRSTUDY_REQUIRE_ALL=1): PostgreSQL binaries not installed",
            "test_demo.py::test_needs_a_browser - required test did not run "
            "(LRSTUDY_REQUIRE_ALL=1): `chromium` is not on PATH",
        ]
    off = _pytest(tmp_path, "-q", "test_demo.py", CI="true", LRSTUDY_REQUIRE_ALL="0")
    assert off.returncode == 0, off.stdout


def test_the_service_tests_are_required() -> None:
    files = [
        "tests/test_server.py",
        "tests/test_ray.py",
        "tests/test_ray_own_model.py",
        "tests/test_report_browser.py",
        "tests/test_bulk_metrics.py",
        "tests/test_execution.py",
        "tests/test_liveness.py",
        "tests/test_ui_view.py",
        "tests/test_ci_scripts.py",
    ]
    # (-o addopts=: one node id a line; the repo's -q plus this -q would count per file)
    done = _pytest(ROOT, "-o", "addopts=", "--collect-only", "-q", "-m", "required", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [ln for ln in done.stdout.splitlines() if "::" in ln]
    by_file = {f: [i for i in ids if i.startswith(f + "::")] for f in files}
    assert all(by_file.values()), {f: n for f, n in by_file.items() if not n}
    assert by_file["tests/test_execution.py"] == [
        "tests/test_execution.py::test_dead_worker_on_another_machine_is_taken_over_after_its_lease"
    ]
    assert any("postgresql" in i for i in by_file["tests/test_bulk_metrics.py"])


def test_an_exception_in_a_thread_fails_the_test(tmp_path: Path) -> None:
    # The repo's own pytest settings (pyproject.toml), on a test whose thread dies.
    (tmp_path / "test_thread.py").write_text(
        "import threading\n\n"
        "def test_thread_dies():\n"
        "    t = threading.Thread(target=lambda: 1 / 0)\n"
        "    t.start()\n"
        "    t.join()\n"
    )
    done = _pytest(tmp_path, "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_thread.py"))
    assert done.returncode == 1, done.stdout
    assert "PytestUnhandledThreadExceptionWarning" in done.stdout
    assert "ZeroDivisionError" in done.stdout
