"""The data behind the report's figures (`*_data`), tested apart from drawing: each figure must
show what its caption says (seed mean, min–max band, single seeds), never, say, the seed max."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrstudy import names as N
from lrstudy.report.analyze import config_table, trial_metrics, trial_table
from lrstudy.report.best import best_config
from lrstudy.report.diagnose import diagnose
from lrstudy.report.history import clean_history
from lrstudy.report.plots.axes import axis_heatmap_data
from lrstudy.report.plots.curves import curves_data, plotted_points, schedules_data
from lrstudy.report.plots.lr import outcome_data, stability_data
from lrstudy.report.plots.sensitivity import SensitivityData, sensitivity_data
from tests.report_fixtures import diverging_loss, good_loss, raw

NO_RANGE_TESTS = pd.DataFrame(columns=["optimizer", "rule", "lr", "recommended"])
# lr -> final val acc per seed (None = that seed diverged). Seed values differ a lot, so that
# mean, min and max are three different numbers.
GRID = {0.01: [0.70, 0.80], 0.1: [0.80, 0.90, 0.97], 1.0: [0.95, None], 10.0: [None, None]}


def frames(grid: dict = GRID, wd: float = 0.0, optimizer: str = "sgd"):
    """Runs (as `read` returns them) and history for one family; each seed's val/acc curve is
    flat at its final value, its train loss a clean descent (or a blow-up when diverged)."""
    rows, hist = [], []
    for lr, accs in grid.items():
        for seed, acc in enumerate(accs):
            rid = f"{optimizer}-{lr}-{wd}-{seed}"
            diverged = acc is None
            rows.append({
                "run_id": rid, "run_name": rid, "status": "FINISHED", "start_time": 1,
                "params.optimizer": optimizer, "params.lr": str(lr), "params.seed": str(seed),
                "params.schedule_label": "constant", "params.opt.weight_decay": str(wd),
                f"tags.{N.TAG_OUTCOME}": N.OUTCOME_DIVERGED if diverged else N.OUTCOME_OK,
                f"tags.{N.TAG_CONFIG_KEY}": f"{optimizer}|{lr}|{wd}",
                f"metrics.{N.FINAL_VAL_ACC}": np.nan if diverged else acc,
                f"metrics.{N.BEST_VAL_ACC}": np.nan if diverged else acc + 0.01,
                f"metrics.{N.FINAL_TRAIN_LOSS}": np.nan if diverged else 1.0 - acc,
                "nonfinite": N.TRAIN_LOSS if diverged else "",
            })  # fmt: skip
            loss = diverging_loss() if diverged else good_loss(seed)
            hist.append(raw(rid, N.TRAIN_LOSS, loss))
            hist.append(raw(rid, N.LR, np.full(len(loss), lr)))
            if not diverged:
                hist.append(raw(rid, N.VAL_ACC, [acc] * 4, steps=[99, 199, 299, 399]))
    return pd.DataFrame(rows), clean_history(pd.concat(hist))


def analysed(runs: pd.DataFrame, hist: pd.DataFrame):
    trials = trial_metrics(trial_table(runs), hist)
    return trials, diagnose(config_table(trials))


@pytest.fixture(scope="module")
def study():
    return analysed(*frames())


def test_sensitivity_line_is_the_seed_mean_with_a_min_max_band(study):
    trials, configs = study
    data = sensitivity_data(configs, trials, NO_RANGE_TESTS)
    assert isinstance(data, SensitivityData) and len(data.families) == 1
    p = data.families[0].panels["final_val_acc"]
    # 1.0 lost a seed and 10 lost both: neither gets a mean (a survivor's value is no mean)
    assert p.lr.tolist() == [0.01, 0.1]
    assert p.mean == pytest.approx([0.75, 0.89])  # not the max (0.80, 0.97), not the min
    assert p.lo == pytest.approx([0.70, 0.80]) and p.hi == pytest.approx([0.80, 0.97])
    # every non-diverged seed is a dot, the survivor at lr=1 included
    assert sorted(map(tuple, p.dots)) == sorted(
        (lr, a) for lr, accs in GRID.items() for a in accs if a is not None
    )
    assert data.families[0].diverged_lrs == [1.0, 10.0, 10.0]  # one × per diverged seed
    best = data.families[0].panels["best_val_acc"]
    assert best.mean == pytest.approx([0.76, 0.90])
    loss = data.families[0].panels["final_train_loss"]
    assert loss.mean == pytest.approx([0.25, 0.11])


def test_sensitivity_marks_the_best_configuration_at_its_seed_mean(study):
    trials, configs = study
    data = sensitivity_data(configs, trials, NO_RANGE_TESTS)
    lr, mean, _ = data.best
    assert (lr, mean) == (0.1, pytest.approx(0.89))
    assert best_config(trials).name.endswith("lr=0.1")


def test_range_test_suggestions_keep_only_recommended_rules_of_known_optimizers(study):
    trials, configs = study
    rt = pd.DataFrame(
        [("sgd", "valley", 0.05, True), ("sgd", "steepest", 0.02, False), ("adam", "valley", 1e-3, True)],
        columns=["optimizer", "rule", "lr", "recommended"],
    )  # fmt: skip
    marks = sensitivity_data(configs, trials, rt).suggestions
    assert [(m.optimizer, m.rule, m.lr) for m in marks] == [("sgd", "valley", 0.05)]


def test_stability_data_is_per_lr_and_blank_where_every_seed_diverged(study):
    _, configs = study
    (fam,) = stability_data(configs)
    assert fam.lr.tolist() == [0.01, 0.1, 1.0, 10.0]
    assert fam.values["divergence_rate"].tolist() == [0.0, 0.0, 0.5, 1.0]
    std = fam.values["score_std"]
    assert std[0] == pytest.approx(np.std([0.70, 0.80], ddof=1))
    assert std[1] == pytest.approx(np.std([0.80, 0.90, 0.97], ddof=1))
    assert np.isnan(std[3])  # no seed left: no spread
    assert fam.values["final_best_gap"][:2] == pytest.approx([0.01, 0.01])


def test_outcome_cells_show_the_seed_mean_and_the_verdict(study):
    _, configs = study
    data = outcome_data(configs)
    cells = {c.lr: c for c in data.cells}
    assert cells[0.1].text == ".89" and cells[0.1].verdict == "good"  # mean, not .97
    assert cells[0.01].text == ".75"
    assert [c.verdict for c in data.cells] == configs["verdict"].tolist()
    assert cells[10.0].text == "×" and cells[1.0].verdict == "diverged"


def test_convergence_curves_are_seed_means_with_a_min_max_band(study):
    trials, _ = study
    history = frames()[1]
    (panel,) = curves_data(trials, history, N.VAL_ACC)
    series = {s.lr: s for s in panel.series}
    s = series[0.1]
    assert s.n == 3 and s.n_diverged == 0
    assert s.x.tolist() == [99, 199, 299, 399]
    assert s.mean == pytest.approx([0.89] * 4)  # not 0.97
    assert s.lo == pytest.approx([0.80] * 4) and s.hi == pytest.approx([0.97] * 4)
    assert series[1.0].n == 1 and series[1.0].n_diverged == 1  # the survivor's curve, flagged
    assert plotted_points([panel]) == sum(len(s.x) for s in panel.series)


def test_long_curves_are_binned_to_at_most_max_points_per_series(study):
    trials, _ = study
    history = frames()[1]
    (panel,) = curves_data(trials, history, N.TRAIN_LOSS, max_points=50)
    for s in panel.series:
        assert len(s.x) <= 50
    healthy = {s.lr: s for s in panel.series}[0.01]
    expected = np.mean([good_loss(0)[:8].mean(), good_loss(1)[:8].mean()])
    assert healthy.mean[0] == pytest.approx(expected)  # first bin: steps 0-7, seed mean


def test_schedules_show_one_representative_run_relative_to_its_peak(study):
    trials, _ = study
    history = frames()[1]
    (line,) = schedules_data(trials, history)
    # non-diverged LRs 0.01, 0.1, 1.0: the median is 0.1, its first seed
    assert line.peak == 0.1 and line.optimizer == "sgd"
    assert line.y == pytest.approx(np.ones(len(line.x)))
    assert plotted_points([line]) == len(line.x)


def test_axis_heatmap_cells_are_seed_means_and_blank_when_any_seed_diverged():
    runs_a, hist_a = frames(wd=0.0)
    runs_b, hist_b = frames({0.01: [0.50, 0.60], 0.1: [0.60, 0.70]}, wd=1e-4)
    trials, configs = analysed(pd.concat([runs_a, runs_b]), pd.concat([hist_a, hist_b]))
    (panel,) = axis_heatmap_data(configs, "weight_decay", ["weight_decay"])
    assert panel["rows"] == [0.0, 1e-4] and panel["lrs"] == [0.01, 0.1, 1.0, 10.0]
    v = panel["values"]
    assert v[0, :2] == pytest.approx([0.75, 0.89]) and v[1, :2] == pytest.approx([0.55, 0.65])
    assert np.isnan(v[0, 2]) and np.isnan(v[0, 3])  # diverged seeds: no cell value
    assert np.isnan(v[1, 2])  # never run
