"""The wheel works on its own: built from the repo, installed, run outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("lrstudy-*.whl")
    return whl


def test_wheel_carries_every_subpackage_and_the_template(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lrstudy/templates/report.html.j2" in names
    packages = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("lrstudy/**/__init__.py")}
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"{pkg} is missing from the wheel"
    assert not any(n.startswith(("tests/", "templates/")) for n in names)


def test_installed_wheel_runs_a_study_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    study = work / "tiny.yaml"
    smoke = (ROOT / "studies" / "smoke.yaml").read_text()
    study.write_text(
        smoke.replace("name: smoke", "name: tiny").replace("seeds: [0, 1]", "seeds: [0]")
    )
    # The wheel's copy first on the path; the source tree nowhere on it.
    path = [str(site)] + [p for p in sys.path if p and Path(p).resolve() != ROOT]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "LRSTUDY_WORKERS": "2"}
    where = subprocess.run(
        [sys.executable, "-c", "import lrstudy; print(lrstudy.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout
    run = subprocess.run(
        [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri"]
        + [f"sqlite:///{work}/mlflow.db", "--report-dir", str(work / "reports")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    page = work / "reports" / "tiny" / "index.html"
    assert page.is_file() and "<html" in page.read_text()[:500].lower()
