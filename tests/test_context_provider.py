"""The MLflow run-context provider: inert outside a study, tags fluent runs inside one."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking.context import registry

from lrstudy import __version__, names
from lrstudy.context_provider import LRStudyContextProvider, current_tags, study_context

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
        "import sys, lrstudy.context_provider;"
        "bad = [m for m in ('torch', 'lightning') if m in sys.modules];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
