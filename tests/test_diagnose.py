"""Verdict rules on hand-built configuration tables and curves with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lrstudy import names as N
from lrstudy.report.analyze import config_table, trial_metrics, trial_table
from lrstudy.report.best import best_config
from lrstudy.report.diagnose import (
    CHANCE_MIN_MARGIN,
    CHANCE_STDS,
    CLEAR_MARGIN,
    CLEAR_STDS,
    OSC_MAX,
    SPREAD_MAX,
    TRAIN_ACC_SATURATED,
    VERDICTS,
    diagnose,
    rules_text,
    run_verdicts,
)
from lrstudy.report.history import clean_history
from tests.report_fixtures import STEPS, good_loss, raw, slow_loss, study_frames


def configs(*rows: dict) -> pd.DataFrame:
    """A config table with just the columns the rules read; defaults = a stable, finished config."""
    base = {"family": "sgd", "n": 2, "n_diverged": 0, "score_std": 0.005, "osc_index": 0.1,
            "still_falling": False, "first_diverged_at": np.nan}  # fmt: skip
    out = []
    for r in rows:
        row = {**base, **r}
        row.setdefault("final_val_acc", row["score"])
        row.setdefault("config", f"{row['family']} lr={row['lr']}")
        row.setdefault("run_ids", [f"{row['config']}#0", f"{row['config']}#1"])
        out.append(row)
    return pd.DataFrame(out)


def verdicts(df: pd.DataFrame) -> dict[float, str]:
    return dict(zip(df["lr"], df["verdict"], strict=True))


def test_the_four_textbook_cases_from_real_curves():
    """Slow run = too low, good run = good, oscillating run = too high, diverging run = diverged."""
    runs, hist = study_frames()
    out = diagnose(config_table(trial_metrics(trial_table(runs), hist)))
    assert verdicts(out) == {1e-3: "too_low", 1e-2: "good", 1e-1: "too_high", 1.0: "diverged"}
    slow = out.set_index("lr").loc[1e-3]
    assert "still falling" in slow["reason"] and "below the best" in slow["reason"]
    assert "oscillation index" in out.set_index("lr").loc[1e-1, "reason"]
    assert "2/2 seeds" in out.set_index("lr").loc[1.0, "reason"]


def test_clearly_worse_needs_both_the_absolute_margin_and_twice_the_best_seed_std():
    noisy_best = 0.02  # margin = max(0.02, 2 * 0.02) = 0.04
    out = diagnose(
        configs(
            {"lr": 0.01, "score": 0.90},
            {"lr": 0.03, "score": 0.93, "score_std": noisy_best},  # best
            {"lr": 0.1, "score": 0.93 - 0.035},  # within 2 std of the noisy best: good
            {"lr": 0.3, "score": 0.93 - 0.045},  # beyond: too high
        )
    )
    assert verdicts(out) == {0.01: "good", 0.03: "good", 0.1: "good", 0.3: "too_high"}
    assert CLEAR_STDS * noisy_best > CLEAR_MARGIN  # the case above exercises the std term


def test_any_diverged_seed_makes_the_configuration_diverged_and_it_is_never_the_best():
    out = diagnose(
        configs(
            {"lr": 0.1, "score": 0.90},
            {"lr": 0.3, "score": 0.99, "n_diverged": 1, "first_diverged_at": 40.0},  # 1 of 2 seeds
        )
    )
    assert verdicts(out) == {0.1: "good", 0.3: "diverged"}
    assert (out["best_lr"] == 0.1).all()
    assert "1/2 seeds, first at step 40" in out.set_index("lr").loc[0.3, "reason"]


def test_instability_means_too_high_only_at_or_above_the_best_lr():
    out = diagnose(
        configs(
            {"lr": 0.001, "score": 0.925, "osc_index": OSC_MAX + 1},  # unstable but low LR: good
            {"lr": 0.01, "score": 0.93},  # best
            {"lr": 0.02, "score": 0.925, "score_std": SPREAD_MAX + 0.01},  # seeds disagree
        )
    )
    assert verdicts(out) == {0.001: "good", 0.01: "good", 0.02: "too_high"}
    assert "seed std" in out.set_index("lr").loc[0.02, "reason"]
    assert "unstable" in out.set_index("lr").loc[0.001, "reason"]


def test_families_are_judged_separately():
    out = diagnose(
        configs(
            {"family": "sgd", "lr": 0.1, "score": 0.95},
            {"family": "adam", "lr": 0.1, "score": 0.70},  # bad for sgd, but adam's best
            {"family": "adam", "lr": 0.001, "score": 0.60},
        )
    )
    assert out["verdict"].tolist() == ["good", "good", "too_low"]


def test_all_diverged_family_and_verdicts_per_run():
    out = diagnose(configs({"lr": 1.0, "score": np.nan, "n_diverged": 2}))
    assert out["verdict"].tolist() == ["diverged"]
    assert run_verdicts(out) == {"sgd lr=1.0#0": "diverged", "sgd lr=1.0#1": "diverged"}
    assert set(out["verdict"]) <= set(VERDICTS)


def test_rules_text_states_the_thresholds_the_code_uses():
    text = " ".join(rules_text())
    for value in (CLEAR_MARGIN, CLEAR_STDS, OSC_MAX, SPREAD_MAX, CHANCE_MIN_MARGIN, CHANCE_STDS,
                  TRAIN_ACC_SATURATED):  # fmt: skip
        assert f"{value:g}" in text
    assert "never 'too high'" in text  # the rule that keeps the crown and the diagnosis consistent


# --- the best LR and the crowned configuration -------------------------------------------------


def test_the_best_lr_is_never_too_high_even_when_unstable():
    """The best-performing LR used to be 'too high' when it oscillated: the page then crowned a
    configuration its own diagnosis rejected."""
    out = diagnose(
        configs(
            {"lr": 0.01, "score": 0.90},
            {"lr": 0.03, "score": 0.95, "osc_index": OSC_MAX + 1},  # best, oscillating
            {"lr": 0.1, "score": 0.94, "osc_index": OSC_MAX + 1},  # above it and unstable
            {"family": "adam", "lr": 1e-3, "score": 0.9, "score_std": SPREAD_MAX + 0.03},
            {"family": "adam", "lr": 1e-4, "score": 0.7},
        )
    )
    by = out.set_index("config")["verdict"].to_dict()
    assert by == {"sgd lr=0.01": "too_low", "sgd lr=0.03": "good", "sgd lr=0.1": "too_high",
                  "adam lr=0.001": "good", "adam lr=0.0001": "too_low"}  # fmt: skip
    best = out.set_index("config").loc["sgd lr=0.03", "reason"]
    assert best.startswith("best LR of its family") and "oscillation index" in best
    assert "seed std" in out.set_index("config").loc["adam lr=0.001", "reason"]


def test_a_best_lr_at_the_edge_of_the_grid_says_the_optimum_may_lie_beyond():
    out = diagnose(configs({"lr": 0.01, "score": 0.80}, {"lr": 0.1, "score": 0.90}))
    assert "the highest LR tried: the optimum may lie higher" in out["reason"].iloc[1]
    out = diagnose(configs({"lr": 0.01, "score": 0.90}, {"lr": 0.1, "score": 0.80}))
    assert "the lowest LR tried: the optimum may lie lower" in out["reason"].iloc[0]


def test_an_lr_that_successive_halving_stopped_still_counts_as_tried():
    """Halving stopped 0.001 and 1.0 early: 0.01 and 0.1 are not the ends of what was tried."""
    table = configs({"lr": 0.01, "score": 0.90}, {"lr": 0.1, "score": 0.80})
    out = diagnose(table, {"sgd": pd.Series([0.001, 1.0])})
    assert out["reason"].iloc[0] == "best LR of its family"
    out = diagnose(table, {"sgd": pd.Series([0.05])})  # stopped inside: the end stays the end
    assert "the lowest LR tried" in out["reason"].iloc[0]


def test_no_family_best_is_ever_called_too_high_or_diverged():
    """Over many random tables: the configuration the report crowns is judged good (or at
    chance), never too high or diverged."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = [
            {"family": fam, "lr": lr, "score": rng.uniform(0.3, 0.95),
             "score_std": rng.uniform(0, 0.1), "osc_index": rng.uniform(0, 3),
             "n_diverged": int(rng.random() < 0.2), "num_classes": 10, "n_val": 500}
            for fam in ("sgd", "adam") for lr in (1e-3, 1e-2, 1e-1, 1.0)
        ]  # fmt: skip
        out = diagnose(configs(*rows))
        alive = out[out["n_diverged"] == 0]
        for _, g in alive.groupby("family"):
            assert g.loc[g["score"].idxmax(), "verdict"] in ("good", "at_chance")


def test_best_config_agrees_with_the_diagnosis_on_real_curves():
    runs, hist = study_frames()
    trials = trial_metrics(trial_table(runs), hist)
    out = diagnose(config_table(trials))
    best = best_config(trials)
    assert best.name == "sgd · constant · lr=0.01" and best.config_key == "sgd|0.01"
    assert (best.mean, best.n) == (pytest.approx(0.932), 2)
    assert best.std == pytest.approx(0.004 / np.sqrt(2))
    assert out.set_index("config").loc[best.name, "verdict"] == "good"
    assert (out["best_lr"] == 0.01).all()
    assert best.text() == "sgd · constant · lr=0.01: final val acc 0.932 ± 0.003 (n=2)"


def test_a_configuration_with_a_diverged_seed_is_never_crowned():
    runs, hist = study_frames()
    # the 1e-1 configuration gets the highest accuracy, but one of its seeds diverged
    runs.loc[runs["run_id"] == "osc-0", f"metrics.{N.FINAL_VAL_ACC}"] = 0.99
    runs.loc[runs["run_id"] == "osc-1", f"tags.{N.TAG_OUTCOME}"] = N.OUTCOME_DIVERGED
    trials = trial_metrics(trial_table(runs), hist)
    assert best_config(trials).name == "sgd · constant · lr=0.01"
    assert best_config(trials.assign(diverged=True)) is None


# --- at chance ------------------------------------------------------------------------------------


def test_an_lr_at_chance_is_never_good():
    chance = {"num_classes": 10, "n_val": 1000}  # chance 0.1, band max(0.02, 2 * 0.0095)
    out = diagnose(
        configs(
            {"lr": 1e-4, "score": 0.115, **chance},  # at chance, within noise of a weak best
            {"lr": 1e-3, "score": 0.13, **chance},  # best: barely, but measurably, learned
            {"lr": 1e-2, "score": 0.11, **chance},  # at chance above the best
        )
    )
    assert verdicts(out) == {1e-4: "too_low", 1e-3: "good", 1e-2: "too_high"}
    assert out["reason"].iloc[0].startswith("at chance (0.115 vs 1/10 = 0.100 ± 0.020)")


def test_a_family_that_learned_nothing_is_at_chance_throughout():
    chance = {"num_classes": 10, "n_val": 120}  # 2 binomial stds = 0.055
    out = diagnose(
        configs(
            {"lr": 1e-3, "score": 0.142, "score_std": 0.024, **chance},
            {"lr": 1e-2, "score": 0.10, **chance},
            {"family": "adam", "lr": 1e-3, "score": 0.60, **chance},
        )
    )
    assert out["verdict"].tolist() == ["at_chance", "at_chance", "good"]
    assert "no LR of this family learned" in out["reason"].iloc[0]


def test_without_the_number_of_classes_nothing_is_called_at_chance():
    out = diagnose(configs({"lr": 1e-3, "score": 0.10}, {"lr": 1e-2, "score": 0.101}))
    assert "at_chance" not in set(out["verdict"])


# --- the "loss still falling" hint -----------------------------------------------------------------


def test_still_falling_hint_needs_a_falling_loss_and_an_unsaturated_train_accuracy():
    rows = [{"lr": 1e-2, "score": 0.93},
            {"lr": 1e-3, "score": 0.80, "still_falling": True, "n_falling": 2, "final_train_acc": 1.0},
            {"lr": 1e-4, "score": 0.70, "still_falling": True, "n_falling": 2, "final_train_acc": 0.8},
            {"lr": 1e-5, "score": 0.60, "still_falling": False, "final_train_acc": 0.7}]  # fmt: skip
    out = diagnose(configs(*rows)).set_index("lr")
    assert (out["verdict"].loc[[1e-3, 1e-4, 1e-5]] == "too_low").all()
    assert "still falling" not in out.loc[1e-3, "reason"]  # train acc 1.000: saturated
    assert "loss still falling at the end (2/2 seeds)" in out.loc[1e-4, "reason"]
    assert "still falling" not in out.loc[1e-5, "reason"]


def test_a_near_chance_run_with_a_slowly_falling_loss_gets_the_hint():
    """End to end from curves: too low an LR, near chance, loss falling slowly but steadily; and
    a too-low LR whose train accuracy is saturated, whose loss also still falls."""
    rng = np.random.default_rng(1)
    kinds = {  # lr -> (loss curve per seed, final val acc, final train acc)
        1e-2: (good_loss, 0.93, 0.95),
        1e-3: (slow_loss, 0.80, 1.0),
        1e-5: (lambda s: 2.31 - 0.06 * STEPS / STEPS[-1] + 0.005 * rng.standard_normal(len(STEPS)), 0.11, 0.12),
    }  # fmt: skip
    rows, hist = [], []
    for lr, (loss, acc, train_acc) in kinds.items():
        for seed in (0, 1):
            rid = f"{lr}-{seed}"
            rows.append({"run_id": rid, "run_name": rid, "start_time": 1, "params.optimizer": "sgd",
                         "params.lr": str(lr), "params.seed": str(seed),
                         f"metrics.{N.FINAL_VAL_ACC}": acc, f"metrics.{N.FINAL_TRAIN_ACC}": train_acc})  # fmt: skip
            hist.append(raw(rid, N.TRAIN_LOSS, loss(seed)))
    runs = pd.DataFrame(rows)
    trials = trial_metrics(trial_table(runs, {"num_classes": "10", "n_test": "1000"}), clean_history(pd.concat(hist)))  # fmt: skip
    out = diagnose(config_table(trials)).set_index("lr")
    assert out["verdict"].to_dict() == {1e-5: "too_low", 1e-3: "too_low", 1e-2: "good"}
    assert "at chance" in out.loc[1e-5, "reason"]
    assert "loss still falling at the end (2/2 seeds)" in out.loc[1e-5, "reason"]
    assert out.loc[1e-3, "still_falling"] and "still falling" not in out.loc[1e-3, "reason"]
