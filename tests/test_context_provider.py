"""The MLflow run-context provider: inert outside a study, tags fluent runs inside one."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking.context import registry

from lrstudy import __version__, names
from lrstudy.track.context_provider import LRStudyContextProvider, current_tags, study_context

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    """Register the provider as the entry point would (the package is not pip-installed here)."""
    reg = registry._run_context_provider_registry
    saved = list(reg._registry)
    reg.register(LRStudyContextProvider)
    yield
    reg._registry[:] = saved


def test_inert_outside_a_study():
    p = LRStudyContextProvider()
    assert p.in_context() is False
    assert p.tags() == {}
    assert current_tags() == {}


def test_tags_inside_and_restored_after_nesting():
    p = LRStudyContextProvider()
    with study_context("outer"):
        with study_context("inner", trial_key="k1") as tags:
            assert tags == {
                names.TAG_STUDY: "inner",
                names.TAG_TRIAL_KEY: "k1",
                names.TAG_VERSION: __version__,
            }
            assert p.in_context() and p.tags() == tags
        assert p.tags() == {names.TAG_STUDY: "outer", names.TAG_VERSION: __version__}
    assert not p.in_context()


def test_fluent_run_gets_the_tags(tmp_path, registered):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    try:
        with study_context("s1", trial_key="abc"), mlflow.start_run() as run:
            pass
        with mlflow.start_run() as outside:
            pass
        client = mlflow.MlflowClient()
        tags = client.get_run(run.info.run_id).data.tags
        assert tags[names.TAG_STUDY] == "s1"
        assert tags[names.TAG_TRIAL_KEY] == "abc"
        assert tags[names.TAG_VERSION] == __version__
        assert names.TAG_STUDY not in client.get_run(outside.info.run_id).data.tags
    finally:
        mlflow.set_tracking_uri(None)


def test_entry_point_resolves_to_the_class():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    target = project["project"]["entry-points"]["mlflow.run_context_provider"]["lrstudy"]
    module, _, attr = target.partition(":")
    assert getattr(importlib.import_module(module), attr) is LRStudyContextProvider


def test_import_pulls_in_neither_torch_nor_lightning():
    code = (
        "import sys, lrstudy.track.context_provider;"
        "bad = [m for m in ('torch', 'lightning') if m in sys.modules];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_import_mlflow_registers_the_entry_point_and_stays_inert(tmp_path):
    # Install just the entry point (a bare .dist-info on sys.path), as `pip install` would, and let
    # a fresh interpreter `import mlflow`: it must load our provider, and start runs untagged.
    # When lrstudy itself is pip-installed (as `make test` does), its real entry point is already
    # registered; a second, planted one would load the provider twice.
    from importlib.metadata import entry_points

    installed = any(
        ep.name == "lrstudy" for ep in entry_points(group="mlflow.run_context_provider")
    )
    if not installed:
        dist = tmp_path / "lrstudy_ep-0.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lrstudy-ep\nVersion: 0.0\n")
        (dist / "entry_points.txt").write_text(
            "[mlflow.run_context_provider]\nlrstudy = lrstudy.track.context_provider:LRStudyContextProvider\n"
        )
    code = (
        "import mlflow\n"
        "from mlflow.tracking.context import registry\n"
        "ours = [p for p in registry._run_context_provider_registry "
        "if type(p).__name__ == 'LRStudyContextProvider']\n"
        "assert len(ours) == 1, 'entry point not loaded'\n"
        "assert 'lrstudy.study' not in registry.resolve_tags()\n"
        "from lrstudy.track.context_provider import study_context\n"
        "with study_context('s'):\n"
        "    assert registry.resolve_tags()['lrstudy.study'] == 's'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
