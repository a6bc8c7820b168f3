"""The population engine against the trial engine, through the CLI into real sqlite stores."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
PER_STEP = (names.LR, names.TRAIN_LOSS, names.GRAD_NORM, names.MOMENTUM, names.VAL_ACC)


def _trials(uri: str) -> dict[str, object]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {
        r.data.tags[names.TAG_TRIAL_KEY]: r
        for r in runs
        if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL
    }


def _steps(uri: str, run_id: str) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    out = defaultdict(list)
    for key in PER_STEP:
        out[key] = sorted(m.step for m in client.get_metric_history(run_id, key))
    return out


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The smoke study (2 optimizers x LRs incl. a diverging one x 2 schedules x 2 seeds) twice."""
    d = tmp_path_factory.mktemp("engines")
    uris = []
    for engine in ("trial", "population"):
        uri = f"sqlite:///{d}/{engine}.db"
        assert (
            main(["run", str(SMOKE), "--tracking-uri", uri, "--no-report", "--engine", engine]) == 0
        )
        uris.append(uri)
    return uris[0], uris[1]


def test_population_engine_matches_the_trial_engine(both_engines: tuple[str, str]) -> None:
    solo, pop = (_trials(u) for u in both_engines)
    assert solo.keys() == pop.keys() and len(solo) == 12
    for key, s in solo.items():
        p = pop[key]
        assert s.data.tags[names.TAG_ENGINE] == "trial"
        assert p.data.tags[names.TAG_ENGINE] == "population"
        assert s.info.run_name == p.info.run_name
        assert s.data.tags[names.TAG_OUTCOME] == p.data.tags[names.TAG_OUTCOME]
        assert s.data.params == p.data.params  # every resolved setting, identical
        for tag in (names.TAG_DIVERGED_AT, names.TAG_PARAM_GROUPS, names.TAG_CONFIG_KEY):
            assert s.data.tags.get(tag) == p.data.tags.get(tag), tag
        assert set(s.data.metrics) == set(p.data.metrics)
        for m in (names.FINAL_VAL_ACC, names.BEST_VAL_ACC, names.FINAL_TRAIN_LOSS):
            a, b = s.data.metrics[m], p.data.metrics[m]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_every_member_has_complete_per_step_metrics(both_engines: tuple[str, str]) -> None:
    solo, pop = (_trials(u) for u in both_engines)
    for key, s in solo.items():
        assert _steps(both_engines[0], s.info.run_id) == _steps(
            both_engines[1], pop[key].info.run_id
        )


def test_plan_shows_populations_and_why_a_trial_runs_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path}/none.db"
    assert main(["plan", str(SMOKE), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "populations (trained as one model each): P1 (8), P2 (4)" in out
    dropout = tmp_path / "dropout.yaml"
    dropout.write_text(SMOKE.read_text().replace("hidden: [32]", "hidden: [32], dropout: 0.1"))
    assert main(["plan", str(dropout), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "populations (" not in out and "does not vectorise" in out
    assert out.count("alone: ") == 1 and "alone: 12 trials: " in out  # one line per reason
    assert not (tmp_path / "none.db").exists()


def test_a_model_that_does_not_vectorise_falls_back_to_the_trial_engine(tmp_path: Path) -> None:
    study = tmp_path / "dropout.yaml"
    text = SMOKE.read_text().replace("hidden: [32]", "hidden: [32], dropout: 0.1")
    study.write_text(text.replace("seeds: [0, 1]", "seeds: [0]"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert (
        main(["run", str(study), "--tracking-uri", uri, "--no-report", "--engine", "population"])
        == 0
    )
    runs = _trials(uri).values()
    assert len(runs) == 6 and {r.data.tags[names.TAG_ENGINE] for r in runs} == {"trial"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--engine", "vmap"],
            "--engine: 'vmap' is not an engine; allowed: auto, trial, population",
        ),
        (["--population-size", "0"], "--population-size: 0 is not allowed"),
        (["--population-size", "many"], "--population-size: 'many' is not allowed"),
    ],
)
def test_bad_engine_flags_are_one_line(tmp_path: Path, capsys, args, message) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for command in ("run", "plan"):
        assert main([command, str(SMOKE), "--tracking-uri", uri, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err
    assert not (tmp_path / "mlflow.db").exists()
