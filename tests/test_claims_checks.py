"""Every claim check, fed synthetic studies built to support it, to contradict it, and to leave it
open (too few seeds, or a grid that cannot show it). The frames go through the report's own
`config_table` and `diagnose`, so a check sees exactly what it sees in a real report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrstudy import names as N
from lrstudy.report.analyze import config_table, family_label, fmt_value, swept_axes
from lrstudy.report.best import best_config
from lrstudy.report.claims import CLAIMS, Evidence, Frames, claim_names, run_claims
from lrstudy.report.claims import decide as D
from lrstudy.report.claims.measures import BAND_SHARE, SeedCurve, good_band, peak_lr
from lrstudy.report.context import FIGURE_TITLES
from lrstudy.report.diagnose import diagnose

S, NS, INC = "supported", "not_supported", "inconclusive"
SEEDS = (0, 1, 2)
DEFAULTS = dict(optimizer="sgd", schedule="constant", seed=0, final_val_acc=0.7, best_val_acc=0.7,
                final_train_loss=0.5, final_train_acc=0.8, steps_to_target=np.nan,
                train_seconds=1.0, osc_index=0.2, auc_val_acc=0.5, auc_train_loss=1.0,
                end_trend=-0.01, still_falling=False, diverged=False, diverged_at=np.nan,
                batch_size=100.0, momentum=np.nan, weight_decay=np.nan, train_fraction=np.nan,
                total_steps=100.0, num_classes=10.0, n_val=1000.0)  # fmt: skip
HISTORY_COLUMNS = ["run_id", "key", "step", "value"]


def frames(rows: list[dict], history: list[dict] | None = None, range_tests=None) -> Frames:
    """Trial rows (missing columns from DEFAULTS) → the frames a report would have."""
    df = pd.DataFrame([{**DEFAULTS, **r} for r in rows])
    df["run_id"] = [r.get("run_id", f"run{i}") for i, r in enumerate(rows)]
    df["score"] = df["final_val_acc"]
    df["gen_gap"] = df["final_train_acc"] - df["final_val_acc"]
    df["final_best_gap"] = df["best_val_acc"] - df["final_val_acc"]
    swept = swept_axes(df)
    df["family"] = df.apply(lambda r: family_label(r, swept), axis=1)
    df["config"] = df["family"] + " · lr=" + df["lr"].map(fmt_value)
    if "params.layer_lr" in df.columns:
        df["config"] += " [" + df["params.layer_lr"] + "]"
    df["config_key"] = df["config"]
    hist = pd.DataFrame(history or [], columns=HISTORY_COLUMNS)
    rt = range_tests if range_tests is not None else pd.DataFrame(columns=["optimizer", "rule", "lr", "recommended"])  # fmt: skip
    return Frames(df, diagnose(config_table(df)), hist, rt)


def bowl(lr: float, peak: float, top: float = 0.8, width: float = 0.15) -> float:
    """Accuracy that falls quadratically in log10 distance from the peak LR."""
    return max(0.1, top - width * math.log10(lr / peak) ** 2)


def check(name: str, f: Frames) -> str:
    return CLAIMS[name].check(f).verdict


# ---------------------------------------------------------------- decision rules


def test_greater_not_less_near_and_combinations() -> None:
    assert D.greater(0.05, 0.01, 0.01) == S
    assert D.greater(0.005, 0.001, 0.01) == NS  # clearly below the margin
    assert D.greater(0.02, 0.02, 0.01) == INC  # could be 0
    assert D.greater(0.05, math.nan, 0.01) == INC  # no spread: n < 2
    assert D.not_less(-0.01, 0.01, 0.05) == S and D.not_less(-0.2, 0.01, 0.05) == NS
    assert D.near(1.1, 0.05, 1.0, 0.25) == S and D.near(0.4, 0.05, 1.0, 0.25) == NS
    assert D.near(1.1, 0.3, 1.0, 0.25) == INC
    assert D.majority([S, S, NS]) == S and D.majority([S, NS, INC]) == INC
    assert D.every([S, S]) == S and D.every([S, NS]) == NS and D.every([S, INC]) == INC
    assert D.every([]) == INC and D.majority([]) == INC


def test_evidence_text_shows_n_and_spread() -> None:
    assert Evidence("a", 0.6061, 0.0164, 3).text() == "0.606 ± 0.016 sd (n=3)"
    assert Evidence("d", 0.04, 0.012, "3 vs 3", kind="se").text() == "+0.040 ± 0.012 se (n=3 vs 3)"
    assert Evidence("x", math.nan, math.nan, 0).text() == "— (n=0)"


def test_peak_and_band_on_a_parabola() -> None:
    lrs = np.logspace(-3, 1, 13)
    curve = SeedCurve(lrs, np.array([bowl(x, 0.05, width=0.2) for x in lrs]))
    lr, edge = peak_lr(curve)
    assert lr == pytest.approx(0.05, rel=1e-6) and not edge  # the vertex, between grid points
    band = good_band(curve)
    half = math.sqrt((1 - BAND_SHARE) * 0.8 / 0.2)  # decades from the peak to the band's edge
    assert band.decades == pytest.approx(2 * half, abs=0.1) and not band.censored


# ---------------------------------------------------------------- LR regimes and gradients

LRS = (0.01, 0.1, 1.0, 10.0)
GOOD = dict(acc=0.80, rate=8.0, end=0.3, osc=0.2, falling=False, gn=1.0, cv=0.05)
REGIMES_OK = {
    0.01: dict(acc=0.55, rate=1.5, end=1.0, osc=0.2, falling=False, gn=1.0, cv=0.05),
    0.1: GOOD,
    1.0: dict(acc=0.60, rate=30.0, end=0.9, osc=2.0, falling=False, gn=3.0, cv=0.5),
    10.0: dict(diverged=True),
}


def regimes_study(spec: dict, seeds=SEEDS, odd: dict | None = None) -> Frames:
    """Trials of every LR in `spec` and seed; with `odd`, the odd-indexed seeds (one half of the
    cross-fit) follow `odd` instead."""
    rows, hist, t = [], [], np.arange(100)
    for lr in spec:
        for i, seed in enumerate(seeds):
            s = (odd if odd is not None and i % 2 else spec)[lr]
            rid = f"lr{lr}-s{seed}"
            if s.get("diverged"):
                rows.append(dict(run_id=rid, lr=lr, seed=seed, diverged=True, final_val_acc=0.1,
                                 osc_index=np.nan, final_train_loss=np.nan))  # fmt: skip
                continue
            jitter = 0.004 * (seed - 1)
            rows.append(dict(run_id=rid, lr=lr, seed=seed, final_val_acc=s["acc"] + jitter,
                             osc_index=s["osc"] + jitter, still_falling=s["falling"],
                             final_train_loss=s["end"]))  # fmt: skip
            loss = s["end"] + (2.3 - s["end"]) * np.exp(-s["rate"] * t / 100)
            gn = s["gn"] * (1 + s["cv"] * np.sin(1.7 * t)) * (1 + jitter)
            hist += [
                dict(run_id=rid, key=N.TRAIN_LOSS, step=i, value=v) for i, v in enumerate(loss)
            ]
            hist += [dict(run_id=rid, key=N.GRAD_NORM, step=i, value=v) for i, v in enumerate(gn)]
    return frames(rows, hist)


def with_(lr: float, **changes) -> dict:
    return {**REGIMES_OK, lr: {**REGIMES_OK[lr], **changes}}


REGIME_CLAIMS = {  # claim -> the change to REGIMES_OK that contradicts it
    "too_high_fast_at_first": with_(1.0, rate=2.0),
    "too_high_unstable": with_(1.0, osc=0.2),
    "too_high_worse_final": with_(1.0, acc=0.797),
    "too_low_slow": with_(0.01, rate=30.0),
    "too_low_stalls": with_(0.01, falling=True),
    "appropriate_best": with_(0.1, osc=1.5),
    "grad_norm_grows_at_high_lr": with_(1.0, gn=1.0),
    "grad_norm_oscillates_at_high_lr": with_(1.0, cv=0.05),
}


@pytest.mark.parametrize("name", sorted(REGIME_CLAIMS))
def test_regime_and_gradient_claims(name: str) -> None:
    assert check(name, regimes_study(REGIMES_OK)) == S
    assert check(name, regimes_study(REGIME_CLAIMS[name])) == NS
    assert check(name, regimes_study(REGIMES_OK, seeds=(0,))) == INC  # one seed: no spread


def test_the_table_crowns_the_reports_best_and_says_when_a_regime_is_missing() -> None:
    study = regimes_study(REGIMES_OK)
    found = CLAIMS["too_high_worse_final"].check(study)
    rows = {r[0]: r for r in found.table.rows}
    best = study.configs.set_index("config").loc[best_config(study.trials).name]
    assert rows["appropriate"][1] == f"{fmt_value(best['lr'])} (good)" == "0.1 (good)"
    assert rows["too low"][1].startswith("0.01") and rows["too high"][1].startswith("1 ")
    assert all("(n=3)" in c for c in rows["appropriate"][2:])
    no_high = {lr: s for lr, s in REGIMES_OK.items() if lr < 1}
    open_ = CLAIMS["too_high_worse_final"].check(regimes_study(no_high))
    assert open_.verdict == INC and "no too high" in open_.reason


def test_a_diverged_seed_at_the_too_high_lr_is_instability_on_its_own() -> None:
    study = {**REGIMES_OK, 1.0: dict(diverged=True)}
    found = CLAIMS["too_high_unstable"].check(regimes_study(study))
    assert found.verdict == S and "3/3 seeds diverged" in found.reason


# ---------------------------------------------------------------- cross-fitted regimes
# The regimes are picked on one half of the seeds and measured on the other. In each study below
# an LR is picked *for* being worse (or best, or diverged) on one half; measured on the seeds that
# picked it (the rule before cross-fitting) each of these claims could only come out "supported".

FOUR = (0, 1, 2, 3)  # halves: seeds 0, 2 and seeds 1, 3
FLAT = dict(acc=0.75, rate=8.0, end=0.3, osc=0.2, falling=False, gn=1.0, cv=0.05)
PEAK = {**FLAT, "acc": 0.80}


def seed_luck() -> Frames:
    """Every LR is as good as the next; only the seeds make one look best: on seeds 0, 2 lr=0.1
    wins, on seeds 1, 3 lr=0.01 does. Each half picks its too low and appropriate as clearly
    apart, and the other half contradicts it."""
    lrs = (0.001, 0.01, 0.1, 1.0)
    even = {lr: PEAK if lr == 0.1 else FLAT for lr in lrs}
    odd = {lr: PEAK if lr == 0.01 else FLAT for lr in lrs}
    return regimes_study(even, seeds=FOUR, odd=odd)


@pytest.mark.parametrize("name", ["appropriate_best", "too_low_stalls", "too_high_worse_final"])
def test_a_regime_picked_for_being_worse_or_best_can_fail_on_the_other_seeds(name: str) -> None:
    study = seed_luck()
    found = CLAIMS[name].check(study)
    assert found.verdict == NS, found.reason
    # every half did pick the regimes as clearly apart, on its own seeds
    assert "0.1 (good) / 0.01 (good)" in dict((r[0], r[1]) for r in found.table.rows).values()
    # when every seed agrees on the landscape, the same claim is supported
    assert check(name, regimes_study({lr: PEAK if lr == 0.1 else FLAT
                                      for lr in (0.001, 0.01, 0.1, 1.0)}, seeds=FOUR)) == S  # fmt: skip


def test_a_too_high_lr_picked_for_a_diverged_seed_can_fail_to_be_unstable() -> None:
    """lr=1 diverges on seeds 0, 2 only: those seeds call it too high, seeds 1, 3 train it as
    well as lr=0.1. Measured on seeds 1, 3 it is neither unstable nor worse."""
    even = {0.01: {**FLAT, "acc": 0.5}, 0.1: PEAK, 1.0: dict(diverged=True)}
    odd = {0.01: {**FLAT, "acc": 0.5}, 0.1: PEAK, 1.0: {**PEAK, "acc": 0.805}}
    study = regimes_study(even, seeds=FOUR, odd=odd)
    for name in ("too_high_unstable", "too_high_worse_final"):
        found = CLAIMS[name].check(study)
        assert found.verdict == NS, (name, found.reason)
    # diverging on the held-out seeds too: supported, and the reason says where it was picked
    found = CLAIMS["too_high_unstable"].check(regimes_study(even, seeds=FOUR))
    assert found.verdict == S and "picked on the other half" in found.reason


def test_the_regimes_of_each_half_are_measured_only_on_the_other_half() -> None:
    found = CLAIMS["too_low_slow"].check(regimes_study(REGIMES_OK, seeds=FOUR))
    assert found.verdict == S
    assert "seeds 0, 2 pick, seeds 1, 3 measure; seeds 1, 3 pick, seeds 0, 2 measure" in (
        found.table.caption
    )
    assert all("(n=4)" in c for c in dict((r[0], r) for r in found.table.rows)["appropriate"][2:])


@pytest.mark.parametrize("name", sorted(REGIME_CLAIMS))
def test_one_seed_is_not_decidable_and_says_so(name: str) -> None:
    found = CLAIMS[name].check(regimes_study(REGIMES_OK, seeds=(0,)))
    assert found.verdict == INC
    assert found.reason.startswith("not decidable: needs ≥ 2 seeds per configuration")


@pytest.mark.parametrize("name", sorted(REGIME_CLAIMS))
def test_each_regime_rule_says_how_its_regimes_were_chosen(name: str) -> None:
    rule = CLAIMS[name].rule
    assert "cross-fitted" in rule and "other half" in rule and "not decidable" in rule.lower()


# ---------------------------------------------------------------- schedules


def schedule_study(tops: dict[str, float], seeds=SEEDS) -> Frames:
    return frames([dict(schedule=s, lr=lr, seed=seed, final_val_acc=bowl(lr, 0.1, top) + 0.003 * seed)
                   for s, top in tops.items() for lr in (0.03, 0.1, 0.3) for seed in seeds])  # fmt: skip


def test_schedules_beat_constant() -> None:
    name = "schedules_beat_constant"
    assert check(name, schedule_study({"constant": 0.70, "cosine": 0.75, "step": 0.74})) == S
    assert check(name, schedule_study({"constant": 0.70, "cosine": 0.70, "step": 0.69})) == NS
    assert check(name, schedule_study({"constant": 0.70, "cosine": 0.75}, seeds=(0,))) == INC
    assert check(name, schedule_study({"cosine": 0.75, "step": 0.74})) == INC  # no constant


def warmup_study(limit: dict[str, float], seeds=SEEDS) -> Frames:
    """Every LR up to `limit[schedule]` trains stably; the next is unstable, the rest diverge."""
    rows = []
    for sched, top in limit.items():
        for lr in (0.1, 0.3, 1.0, 3.0, 10.0):
            for seed in seeds:
                ok, first_bad = (
                    lr <= top,
                    lr == min((x for x in (0.3, 1.0, 3.0, 10.0) if x > top), default=None),
                )
                rows.append(dict(schedule=sched, lr=lr, seed=seed,
                                 final_val_acc=bowl(lr, 0.3) + 0.003 * seed if ok else 0.4,
                                 osc_index=0.3 if ok else 2.0,
                                 diverged=not ok and not first_bad))  # fmt: skip
    return frames(rows)


def test_warmup_allows_a_higher_lr() -> None:
    name = "warmup_allows_higher_lr"
    assert check(name, warmup_study({"constant": 1.0, "constant+warmup": 3.0})) == S
    assert check(name, warmup_study({"constant": 1.0, "constant+warmup": 1.0})) == NS
    assert check(name, warmup_study({"constant": 10.0, "constant+warmup": 10.0})) == INC
    assert check(name, warmup_study({"constant": 1.0, "cosine": 3.0})) == INC  # no pair


# ---------------------------------------------------------------- optimizers, momentum, batch size


def band_study(widths: dict[str, float], seeds=SEEDS) -> Frames:
    peaks = {"sgd": 0.1, "adam": 1e-3}
    return frames([dict(optimizer=o, lr=lr, seed=seed,
                        final_val_acc=bowl(lr, peaks[o], width=w) + 0.002 * seed)
                   for o, w in widths.items() for seed in seeds
                   for lr in np.logspace(math.log10(peaks[o]) - 2, math.log10(peaks[o]) + 2, 13)])  # fmt: skip


def test_adaptive_optimizers_wider_band() -> None:
    name = "adaptive_wider_lr_band"
    assert check(name, band_study({"sgd": 0.5, "adam": 0.05})) == S
    assert check(name, band_study({"sgd": 0.05, "adam": 0.5})) == NS
    assert check(name, band_study({"sgd": 0.5, "adam": 0.05}, seeds=(0,))) == INC
    assert check(name, band_study({"adam": 0.05})) == INC  # no SGD to compare with


def shift_study(axis: str, values, peak_of, seeds=SEEDS) -> Frames:
    return frames([{axis: v, "lr": lr, "seed": seed,
                    "final_val_acc": bowl(lr, peak_of(v) * 10 ** (0.03 * seed))}
                   for v in values for seed in seeds for lr in np.logspace(-3, 1, 13)])  # fmt: skip


def test_momentum_shifts_the_best_lr() -> None:
    name, betas = "momentum_shifts_lr", (0.0, 0.5, 0.9)
    assert check(name, shift_study("momentum", betas, lambda b: 0.5 * (1 - b))) == S
    assert check(name, shift_study("momentum", betas, lambda b: 0.5)) == NS
    assert check(name, shift_study("momentum", betas, lambda b: 0.5 * (1 - b), seeds=(0,))) == INC


def test_best_lr_and_batch_size() -> None:
    sizes = (25, 100, 400)
    linear = shift_study("batch_size", sizes, lambda b: 0.1 * b / 100)
    root = shift_study("batch_size", sizes, lambda b: 0.1 * math.sqrt(b / 100))
    flat = shift_study("batch_size", sizes, lambda b: 0.1)
    assert check("best_lr_grows_with_batch", linear) == S
    assert check("best_lr_grows_with_batch", root) == S
    assert check("best_lr_grows_with_batch", flat) == NS
    assert check("linear_scaling_rule", linear) == S
    assert check("linear_scaling_rule", root) == NS
    one = shift_study("batch_size", sizes, lambda b: 0.1 * b / 100, seeds=(0,))
    assert check("linear_scaling_rule", one) == INC
    # the best LR beyond the grid in every case: the slope says nothing
    edge = shift_study("batch_size", sizes, lambda b: 50.0)
    assert check("best_lr_grows_with_batch", edge) == INC


# ---------------------------------------------------------------- data size, generalization


def curve_study(gain: float, seeds=SEEDS) -> Frames:
    return frames([dict(train_fraction=f, lr=lr, seed=seed,
                        final_val_acc=0.5 + gain * math.log2(f * 4) + 0.05 * (lr == 0.1) + 0.003 * seed)
                   for f in (0.25, 0.5, 1.0) for lr in (0.03, 0.1, 0.3) for seed in seeds])  # fmt: skip


def test_learning_curves_rise() -> None:
    assert check("learning_curves_rise", curve_study(0.1)) == S
    assert check("learning_curves_rise", curve_study(0.0)) == NS
    assert check("learning_curves_rise", curve_study(0.1, seeds=(0,))) == INC


def generalization_study(direction: float, fit_lrs=(0.03, 0.1, 0.3, 1.0), seeds=SEEDS) -> Frames:
    rows = []
    for lr in (0.03, 0.1, 0.3, 1.0):
        for seed in seeds:
            d = math.log10(lr / 0.03) * direction
            val = 0.7 + 0.05 * d + 0.003 * seed
            rows.append(dict(lr=lr, seed=seed, final_val_acc=val,
                             final_train_acc=1.0 if lr in fit_lrs else 0.8,
                             **{"noise:1": val * (0.5 + 0.1 * d)}))  # fmt: skip
    return frames(rows)


@pytest.mark.parametrize("name", ["larger_lr_smaller_gap", "larger_lr_more_robust"])
def test_generalization_and_robustness(name: str) -> None:
    assert check(name, generalization_study(+1.0)) == S
    assert check(name, generalization_study(-1.0)) == NS
    assert check(name, generalization_study(+1.0, fit_lrs=(1.0,))) == INC  # one LR fits


# ---------------------------------------------------------------- layer-wise LRs, range test

LAYER = {"uniform": "none", "slower": '{"decay": 0.5}', "faster": '{"decay": 2.0}'}


def layer_study(tops: dict[str, float], seeds=SEEDS) -> Frames:
    return frames([{"params.layer_lr": LAYER[v], "lr": lr, "seed": seed,
                    "final_val_acc": bowl(lr, 0.1, top) + 0.003 * seed}
                   for v, top in tops.items() for lr in (0.03, 0.1, 0.3) for seed in seeds])  # fmt: skip


def test_layer_wise_lrs_both_directions() -> None:
    one_way = layer_study({"uniform": 0.70, "slower": 0.75, "faster": 0.65})
    assert check("lower_layers_slower_helps", one_way) == S
    assert check("lower_layers_faster_helps", one_way) == NS
    other_way = layer_study({"uniform": 0.70, "slower": 0.65, "faster": 0.75})
    assert check("lower_layers_slower_helps", other_way) == NS
    assert check("lower_layers_faster_helps", other_way) == S
    few = layer_study({"uniform": 0.70, "slower": 0.75}, seeds=(0,))
    assert check("lower_layers_slower_helps", few) == INC
    assert check("lower_layers_faster_helps", few) == INC  # no such variant


def range_study(recommended: float | None) -> Frames:
    rt = pd.DataFrame(
        [("sgd", "steepest", recommended, True)] if recommended else [],
        columns=["optimizer", "rule", "lr", "recommended"],
    )
    rows = [dict(lr=lr, seed=seed, final_val_acc=bowl(lr, 0.1) + 0.003 * seed)
            for lr in np.logspace(-3, 0, 7) for seed in SEEDS]  # fmt: skip
    return frames(rows, range_tests=rt)


def test_range_test_near_the_grid_best() -> None:
    name = "range_test_near_grid_best"
    assert check(name, range_study(0.15)) == S
    assert check(name, range_study(3e-3)) == NS
    assert check(name, range_study(None)) == INC


# ---------------------------------------------------------------- the registry


def test_every_registered_claim_is_tested_here_both_ways() -> None:
    tested = set(REGIME_CLAIMS) | {
        "schedules_beat_constant", "warmup_allows_higher_lr", "adaptive_wider_lr_band",
        "momentum_shifts_lr", "best_lr_grows_with_batch", "linear_scaling_rule",
        "learning_curves_rise", "larger_lr_smaller_gap", "larger_lr_more_robust",
        "lower_layers_faster_helps", "lower_layers_slower_helps", "range_test_near_grid_best",
    } | set(LR_FREE_CASES)  # tested both ways in tests/test_claims_lr_free.py  # fmt: skip
    assert tested == set(claim_names())


def _lr_free(baselines: dict, schedule: str = "constant", steps: dict | None = None) -> Frames:
    from tests.test_claims_lr_free import study  # imported late: that module imports this one

    return study(baselines, schedule, steps)


LR_FREE_CASES = {
    "lr_free_within_1pt": lambda: _lr_free({"prodigy": 0.70}),
    "schedulefree_matches_cosine": lambda: _lr_free({"schedulefree_adamw": 0.72}, "cosine"),
    "adaptive_step_near_adam_best": lambda: _lr_free({"prodigy": 0.79}, steps={"prodigy": 0.1}),
}

NOT_SUPPORTED_CASES = {  # claim -> a study that contradicts it (every registered claim has one)
    **{name: (lambda spec=spec: regimes_study(spec)) for name, spec in REGIME_CLAIMS.items()},
    "schedules_beat_constant": lambda: schedule_study({"constant": 0.70, "cosine": 0.70}),
    "warmup_allows_higher_lr": lambda: warmup_study({"constant": 1.0, "constant+warmup": 1.0}),
    "adaptive_wider_lr_band": lambda: band_study({"sgd": 0.05, "adam": 0.5}),
    "momentum_shifts_lr": lambda: shift_study("momentum", (0.0, 0.5, 0.9), lambda b: 0.5),
    "best_lr_grows_with_batch": lambda: shift_study("batch_size", (25, 100, 400), lambda b: 0.1),
    "linear_scaling_rule": lambda: shift_study("batch_size", (25, 100, 400),
                                               lambda b: 0.1 * math.sqrt(b / 100)),
    "learning_curves_rise": lambda: curve_study(0.0),
    "larger_lr_smaller_gap": lambda: generalization_study(-1.0),
    "larger_lr_more_robust": lambda: generalization_study(-1.0),
    "lower_layers_faster_helps": lambda: layer_study({"uniform": 0.70, "faster": 0.65}),
    "lower_layers_slower_helps": lambda: layer_study({"uniform": 0.70, "slower": 0.65}),
    "range_test_near_grid_best": lambda: range_study(3e-3),
    **LR_FREE_CASES,
}  # fmt: skip


@pytest.mark.parametrize("name", claim_names())
def test_every_registered_claim_can_come_out_not_supported(name: str) -> None:
    """A claim whose check cannot say "not supported" is a defect: a new claim without a
    contradicting case here fails this test."""
    assert name in NOT_SUPPORTED_CASES, f"{name}: no study that contradicts it"
    assert check(name, NOT_SUPPORTED_CASES[name]()) == NS


@pytest.mark.parametrize("name", claim_names())
def test_each_claim_states_its_rule_and_key_figure(name: str) -> None:
    c = CLAIMS[name]
    assert c.statement.endswith(".") and c.family
    assert "supported" in c.rule and "inconclusive" in c.rule
    assert c.figure in FIGURE_TITLES


def test_run_claims_keeps_order_and_tolerates_unknown_names() -> None:
    out = run_claims(["too_low_slow", "from_the_future"], regimes_study(REGIMES_OK))
    assert [r.name for r in out] == ["too_low_slow", "from_the_future"]
    assert out[0].verdict == S and out[1].verdict == INC and "not a claim" in out[1].reason
