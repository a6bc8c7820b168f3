"""Range-test rules and figure on synthetic loss curves with known answers (no torch, no training)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrstudy.rangetest import figure, rules
from lrstudy.rangetest.result import RangeTestResult

STEP = 0.05  # decades between grid points
X = np.round(np.arange(-7, 1 + STEP / 2, STEP), 10)  # log10(lr) from 1e-7 to 10
LRS = 10**X
ONE_STEP = 10**STEP  # relative tolerance of one grid point


def at(x: float) -> float:
    return 10 ** float(x)


# --- smoothing and early stop ---------------------------------------------------------------------


def test_bias_correction_makes_a_constant_loss_flat_from_the_first_step():
    t = rules.LossTracker(smoothing=0.98, stop_factor=None)
    out = [t.update(2.5) for _ in range(20)]
    assert out == pytest.approx([2.5] * 20, rel=1e-12)


def test_smoothing_is_the_bias_corrected_ema():
    t = rules.LossTracker(smoothing=0.5, stop_factor=None)
    assert [t.update(v) for v in (4.0, 2.0)] == pytest.approx([4.0, (0.25 * 4 + 0.5 * 2) / 0.75])


def test_non_finite_losses_are_dropped_and_do_not_count():
    t = rules.LossTracker(smoothing=0.5, stop_factor=None)
    out = [t.update(v) for v in (4.0, math.nan, math.inf, 2.0)]
    assert out[0] == 4.0 and math.isnan(out[1]) and math.isnan(out[2])
    assert out[3] == pytest.approx((0.25 * 4 + 0.5 * 2) / 0.75)  # as if the NaN/inf never came
    assert not t.stopped


def test_stops_when_smoothed_loss_exceeds_k_times_best():
    t = rules.LossTracker(smoothing=0.0, stop_factor=4.0)
    for v in (2.0, 1.0, 3.9, 4.0):
        t.update(v)
        assert not t.stopped
    t.update(4.01)
    assert t.stopped and "4 x best 1" in t.stop_reason


def test_stops_after_max_nonfinite_in_a_row_only():
    t = rules.LossTracker(max_nonfinite=3)
    for v in (1.0, math.nan, math.nan, 1.0, math.nan, math.nan):
        t.update(v)
    assert not t.stopped
    t.update(math.nan)
    assert t.stopped and "3 non-finite" in t.stop_reason


def test_negative_losses_never_trigger_the_factor_rule():
    t = rules.LossTracker(smoothing=0.0, stop_factor=4.0)
    for v in (-1.0, -5.0, 3.0):
        t.update(v)
    assert not t.stopped


# --- ramp and usable curve ---------------------------------------------------------------------


def test_exp_ramp_is_geometric_from_min_to_max():
    r = rules.lr_ramp(1e-7, 10.0, 200, "exp")
    assert r[0] == pytest.approx(1e-7) and r[-1] == pytest.approx(10.0)
    assert np.allclose(r[1:] / r[:-1], (1e8) ** (1 / 199))


def test_linear_ramp_is_arithmetic():
    r = rules.lr_ramp(0.1, 1.0, 10, "linear")
    assert r[0] == pytest.approx(0.1) and r[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(r), 0.1)
    with pytest.raises(ValueError, match="exp' or 'linear"):
        rules.lr_ramp(0.1, 1.0, 10, "cosine")


def test_usable_curve_skips_start_excludes_stop_and_drops_nan():
    sm = [5.0, 4.0, math.nan, 3.0, 2.0, 9.0]
    x, y = rules.usable_curve([1, 2, 3, 4, 5, 6], sm, stop_index=5, skip=1)
    assert x.tolist() == [2, 4, 5] and y.tolist() == [4.0, 3.0, 2.0]


# --- the rules --------------------------------------------------------------------------------


def test_steepest_finds_the_inflection_of_a_tanh_drop():
    y = 2 - np.tanh((X + 3) / 0.5)  # steepest descent at log10(lr) = -3
    assert rules.steepest(LRS, y) == pytest.approx(1e-3, rel=ONE_STEP - 1)
    assert rules.steepest(LRS, X + 10.0) is None  # never decreasing: no answer


def test_steepest_ignores_dips_after_the_minimum():
    y = 2 - np.tanh((X + 3) / 0.5) + np.where(X > -1, 3 * (X + 1), 0.0)  # descent, minimum, rise
    y[X > 0.5] -= 2.0  # a cliff on the way up (recovery from a spike): not a descent
    assert rules.steepest(LRS, y) == pytest.approx(1e-3, rel=ONE_STEP - 1)


def test_min_div10_is_a_tenth_of_the_argmin():
    y = (X + 2) ** 2
    assert rules.min_div10(LRS, y) == pytest.approx(1e-3)


def test_valley_follows_fastai_arithmetic_on_a_plateau_drop_rise_curve():
    # Plateau at 2 up to x=-5 (index p), linear drop to x=-1 (index e), then a rise.
    p, e = int(np.argmin(abs(X + 5))), int(np.argmin(abs(X + 1)))
    y = np.where(X <= -5, 2.0, np.where(X <= -1, 2.0 - 0.2 * (X + 5), 1.2 + (X + 1) ** 2))
    # Longest strictly decreasing subsequence: one plateau point + the e - p drop points.
    length = e - p + 1
    start = e - length
    idx = start + int((e - start) / 3) + int((e - start) / 6)
    assert rules.valley(LRS, y) == pytest.approx(LRS[idx])
    assert -3.2 < np.log10(rules.valley(LRS, y)) < -2.8  # about halfway along the drop


def test_valley_prefers_the_longest_valley():
    short = np.exp(-(((X + 5.5) / 0.1) ** 2))  # a brief dip (negative bump) at x=-5.5
    y = 3.0 - 0.3 * short
    y = np.where(X > -4, 3.0 - 0.5 * (X + 4), y)  # a long steady drop from x=-4 to the end
    v = np.log10(rules.valley(LRS, y))
    assert -4 < v < 1


def test_valley_without_decrease_has_no_answer():
    assert rules.valley(LRS, X + 10.0) is None


def test_slide_stops_where_the_slope_becomes_uniform_again():
    # Slope -0.5 per decade up to x=-2, then a smooth quadratic rise (slope -0.5 + 4 (x+2)).
    y = np.where(X <= -2, -0.5 * (X + 2), -0.5 * (X + 2) + 2 * (X + 2) ** 2)
    # Sliding left from the end, the last window whose two ends disagree has its right end one
    # point right of x=-2; the suggestion is that window's left end.
    expected = at(-2 + STEP - rules.SLIDE_WINDOW)
    assert rules.slide(LRS, y) == pytest.approx(expected, rel=ONE_STEP - 1)


def test_slide_units_are_decades_so_the_answer_ignores_the_grid():
    fine_x = np.linspace(-7, 1, 401)
    coarse = rules.slide(LRS, np.where(X <= -2, -0.5 * (X + 2), -0.5 * (X + 2) + 2 * (X + 2) ** 2))
    y = np.where(fine_x <= -2, -0.5 * (fine_x + 2), -0.5 * (fine_x + 2) + 2 * (fine_x + 2) ** 2)
    fine = rules.slide(10**fine_x, y)
    assert fine == pytest.approx(coarse, rel=ONE_STEP - 1)


def test_slide_needs_a_curve_wider_than_its_window():
    x = np.linspace(-3, -2, 30)
    assert rules.slide(10**x, -x) is None


# --- suggestions, recommendation, explanation ---------------------------------------------------


def test_suggest_runs_every_rule_and_needs_a_few_points():
    y = 2 - np.tanh((X + 3) / 0.5) + np.where(X > -1, 5 * (X + 1) ** 2, 0)
    s = rules.suggest(LRS, y)
    assert list(s) == list(rules.RULES) and all(v is not None for v in s.values())
    assert rules.suggest(LRS[:4], y[:4]) == dict.fromkeys(rules.RULES)


def test_recommend_prefers_min_div10_and_falls_back():
    full = {"geomean": 3e-3, "steepest": 1e-2, "valley": 3e-3, "min_div10": 1e-3, "slide": 2e-3,
            "edge_div3": 5e-2}  # fmt: skip
    assert rules.recommend(full) == "min_div10"
    assert rules.recommend({**full, "min_div10": None}) == "geomean"
    assert rules.recommend({**full, "geomean": None, "min_div10": None}) == "steepest"
    assert (
        rules.recommend({**full, "geomean": None, "min_div10": None, "steepest": None}) == "valley"
    )
    assert rules.recommend(dict.fromkeys(rules.RULES)) is None


def test_a_flat_curve_recommends_a_third_of_where_the_loss_starts_to_rise():
    full = {"geomean": 3e-3, "min_div10": 1e-3, "edge_div3": 5e-2}
    assert rules.recommend(full, flat=True) == "edge_div3"
    assert rules.recommend({**full, "edge_div3": None}, flat=True) == "min_div10"


def test_geomean_is_between_steepest_and_min_div10_on_a_log_scale():
    y = 2 - np.tanh((X + 3) / 0.5) + np.where(X > -1, 5 * (X + 1) ** 2, 0)
    a, b = rules.steepest(LRS, y), rules.min_div10(LRS, y)
    assert rules.geomean(LRS, y) == pytest.approx(math.sqrt(a * b))
    assert rules.geomean(LRS, X + 10.0) is None  # never decreasing: no steepest, no geomean


def test_edge_div3_is_a_third_of_where_the_loss_first_rises_5_percent_over_its_minimum():
    # Flat at 2.3 (chance on 10 classes) with noise far below 5%, then a blow-up from x = -1.
    rng = np.random.default_rng(0)
    y = 2.3 + 0.002 * rng.standard_normal(X.size) + np.where(X > -1, 3 * (X + 1) ** 2, 0.0)
    edge = LRS[np.nonzero(y > y.min() * 1.05)[0][0]]
    assert rules.edge_div3(LRS, y) == pytest.approx(edge / 3)
    assert -1.7 < np.log10(rules.edge_div3(LRS, y)) < -1.2  # 0.12 decades above -1, over 3
    assert rules.edge_div3(LRS, 2 - 0.1 * X) is None  # falls to the end: no edge


def test_flat_means_the_loss_never_fell_half_a_percent():
    rng = np.random.default_rng(1)
    flat = 2.3 + 0.002 * rng.standard_normal(X.size) + np.where(X > -1, 3 * (X + 1) ** 2, 0.0)
    assert rules.drop(flat) < rules.FLAT_DROP and rules.is_flat(flat)
    falling = 2.3 - 0.05 * np.tanh((X + 3) / 0.5) - 0.05  # falls ~4%
    assert rules.drop(falling) == pytest.approx((falling[0] - falling.min()) / falling[0])
    assert not rules.is_flat(falling)
    assert not rules.is_flat(flat[:3])  # too few points to say anything


def test_spread_is_max_over_min():
    assert rules.spread({"a": 1e-3, "b": 4e-3, "c": None}) == pytest.approx(4.0)
    assert rules.spread({"a": None}) is None


def test_every_rule_has_a_one_sentence_explanation():
    for rule in rules.RULES:
        text = rules.explain(rule, 0.0123)
        assert text.startswith("Recommended LR 0.0123") and rule in text
        assert text.count(". ") == 0 and text.endswith(".")
    assert rules.explain("min_div10", 0.01, 0.2) == rules.explain("min_div10", 0.01)  # it fell
    flat = rules.explain("edge_div3", 0.01, 0.001)
    assert "fell by only 0.1%" in flat and "--steps" in flat


# --- the figure (data and drawing apart, as every figure) -------------------------------------------


def _result(losses: np.ndarray, stop_index: int | None) -> RangeTestResult:
    return RangeTestResult(
        lrs=list(LRS),
        losses=list(losses),
        smoothed=list(losses),
        suggestions={"valley": 1e-3, "steepest": None, "min_div10": 1e-4, "slide": None},
        recommended="valley",
        stop_index=stop_index,
        stop_reason=None,
        group_ratios=[1.0],
        lr_min=float(LRS[0]),
        lr_max=float(LRS[-1]),
        steps=len(LRS),
        mode="exp",
        seconds=0.0,
    )


def test_figure_data_ends_at_the_stop_and_keeps_the_blow_up_out_of_the_y_range():
    descent = 2 - np.tanh((X + 3) / 0.5)  # 3 -> 1 around 1e-3
    losses = np.where(X > -1, 1 + 10 ** (X + 1) * 50, descent)  # then a blow-up to ~500
    data = figure.range_test_data(_result(losses, stop_index=140))
    assert len(data.lrs) == len(data.losses) == 141 and data.lrs[-1] == LRS[140]
    assert data.title == f"LR range test (exp, {len(LRS)} of {len(LRS)} steps)"
    # From the minimum (1) to the start level (3) plus as much again (5), padded by 5% of 4;
    # the blow-up to ~500 before the stop stays out of view.
    assert data.ylim == pytest.approx((1 - 0.2, 5 + 0.2), abs=0.01)
    assert max(data.losses) > 400


def test_figure_data_without_a_finite_loss_leaves_the_y_range_to_matplotlib():
    assert figure.loss_range([math.nan, math.inf], [math.nan, math.nan]) is None


def test_draw_range_test_on_a_plain_figure(tmp_path):
    from matplotlib.figure import Figure

    y = 2 - np.tanh((X + 3) / 0.5)
    data = figure.range_test_data(_result(y, stop_index=None))
    fig = Figure()
    ax = fig.add_subplot()
    figure.draw_range_test(data, ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert "smoothed loss" in labels and "valley 0.001 (recommended)" in labels
    assert "min_div10 0.0001" in labels and not any("steepest" in label for label in labels)
    assert ax.get_xscale() == "log" and ax.get_ylim() == pytest.approx(data.ylim)
    path = tmp_path / "rt.png"
    figure.range_test_figure(_result(y, stop_index=None)).savefig(path)
    assert path.stat().st_size > 1000


def test_rules_figure_result_and_ramp_do_not_import_torch():
    # The report and the CLI parser (find-lr's defaults) read these without paying for torch.
    code = (
        "import sys; import lrstudy.rangetest.rules, lrstudy.rangetest.figure, "
        "lrstudy.rangetest.result, lrstudy.rangetest.ramp; from lrstudy import cli_parser; cli_parser.build_parser(); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
