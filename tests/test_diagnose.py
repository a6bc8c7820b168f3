"""Verdict rules on hand-built configuration tables and curves with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lrstudy.report.analyze import config_table, trial_metrics, trial_table
from lrstudy.report.diagnose import (
    CLEAR_MARGIN,
    CLEAR_STDS,
    OSC_MAX,
    SPREAD_MAX,
    VERDICTS,
    diagnose,
    rules_text,
    run_verdicts,
)
from tests.report_fixtures import study_frames


def configs(*rows: dict) -> pd.DataFrame:
    """A config table with just the columns the rules read; defaults = a stable, finished config."""
    base = {"family": "sgd", "n": 2, "n_diverged": 0, "score_std": 0.005, "osc_index": 0.1,
            "still_falling": False, "first_diverged_at": np.nan}  # fmt: skip
    out = []
    for r in rows:
        row = {**base, **r}
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
    for value in (CLEAR_MARGIN, CLEAR_STDS, OSC_MAX, SPREAD_MAX):
        assert f"{value:g}" in text
