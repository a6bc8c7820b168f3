"""LR-free baselines in the report (issue 16), on figure data: a band per baseline across the LR
axis of the sensitivity figure, and the tuned best's gain over each with ± and n."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrstudy.report.baselines import baseline_mask, lr_free_notes, tuning_gains
from lrstudy.report.plots.sensitivity import sensitivity_data, sensitivity_figure
from tests.test_report_figures import GRID, NO_RANGE_TESTS, analysed, frames

PRODIGY = [0.80, 0.84, 0.86]  # three seeds at the package's defaults (lr 1.0, constant)
SF = [0.86, 0.88]  # schedule-free AdamW at its default lr 0.0025


@pytest.fixture(scope="module")
def study():
    parts = [frames(GRID), frames({1.0: PRODIGY}, optimizer="prodigy")]
    parts.append(frames({0.0025: SF}, optimizer="schedulefree_adamw"))
    runs = pd.concat([p[0] for p in parts], ignore_index=True)
    hist = pd.concat([p[1] for p in parts], ignore_index=True)
    return analysed(runs, hist)


def test_baselines_are_bands_not_families(study) -> None:
    trials, configs = study
    data = sensitivity_data(configs, trials, NO_RANGE_TESTS)
    assert [f.label for f in data.families] == [
        "sgd · constant"
    ]  # no one-point "line" for a baseline
    bands = {b.name: b for b, _ in data.baselines["final_val_acc"]}
    assert set(bands) == {"prodigy", "schedulefree_adamw"}
    p = bands["prodigy"]
    assert p.mean == pytest.approx(np.mean(PRODIGY))
    assert (p.lo, p.hi, p.n) == (pytest.approx(0.80), pytest.approx(0.86), 3)
    assert p.std == pytest.approx(np.std(PRODIGY, ddof=1))
    # the star is the tuned best (sgd lr=0.1), never a baseline
    assert data.best[0] == pytest.approx(0.1)
    fig = sensitivity_figure(data)  # draws: each band is a horizontal line across the axis
    labels = [h.get_label() for h in fig.axes[0].lines]
    assert "prodigy (defaults)" in labels and "schedulefree_adamw (defaults)" in labels


def test_gain_of_the_tuned_best_over_each_baseline_with_se_and_n(study) -> None:
    trials, _ = study
    gains = {g.baseline: g for g in tuning_gains(trials)}
    best = [0.80, 0.90, 0.97]  # sgd lr=0.1: the best grid configuration (lr=1 has a diverged seed)
    g = gains["prodigy"]
    assert g.gain == pytest.approx(100 * (np.mean(best) - np.mean(PRODIGY)))
    se = 100 * math.sqrt(np.var(best, ddof=1) / 3 + np.var(PRODIGY, ddof=1) / 3)
    assert g.se == pytest.approx(se)
    assert (g.n_tuned, g.n_baseline, g.unit) == (3, 3, "points")
    assert "lr=0.1" in g.tuned
    assert g.text().startswith(f"tuning gains {g.gain:+.1f} ± {se:.1f} (se) points over prodigy")
    assert gains["schedulefree_adamw"].gain == pytest.approx(100 * (np.mean(best) - np.mean(SF)))


def test_a_swept_lr_free_optimizer_is_a_family_on_a_multiplier_axis() -> None:
    runs, hist = frames({0.5: [0.8, 0.82], 1.0: [0.85, 0.86], 2.0: [0.6, 0.7]}, optimizer="prodigy")
    trials, configs = analysed(runs, hist)
    assert not baseline_mask(trials).any()
    assert [f.label for f in sensitivity_data(configs, trials, NO_RANGE_TESTS).families] == [
        "prodigy · constant"
    ]
    assert tuning_gains(trials) == []
    assert any("multiplier" in n for n in lr_free_notes(trials))


def test_no_star_on_the_grid_when_a_baseline_is_the_best_configuration() -> None:
    parts = [frames(GRID), frames({1.0: [0.97, 0.98, 0.99]}, optimizer="prodigy")]
    runs = pd.concat([p[0] for p in parts], ignore_index=True)
    trials, configs = analysed(runs, pd.concat([p[1] for p in parts], ignore_index=True))
    assert sensitivity_data(configs, trials, NO_RANGE_TESTS).best is None
    (gain,) = tuning_gains(trials)
    assert gain.gain < 0  # the tuned best is behind: a negative gain, said as such
