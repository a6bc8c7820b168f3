"""Do the report's verdicts (too low / good / too high / diverged / at chance) hold on seeds they
did not see?

For every study in the given stores with at least 2 seeds, the seeds are split into two halves
(the first half rounded up, and the rest). Each half is diagnosed on its own, by the report's own
code (`trial_metrics` -> `config_table` -> `diagnose`), and every configuration's verdict on one
half is compared with its verdict on the other (both directions, so each configuration counts
twice). A verdict that is a property of the LR, not of the seeds, comes out the same on both
halves; the confusion matrix says where it does not. Also reported per study: how often the two
halves crown the same best configuration, and the largest ratio between their best LRs.

Stores: the catalogue (`make catalogue`: reports/catalogue/mlflow.db) and the held-out range-test
evaluation tasks (bench/rangetest_rules.py: reports/rangetest_eval/mlflow.db: other data sets,
models and optimizers than the catalogue's MNIST-1D MLP).

Usage: python bench/diagnosis_calibration.py [STORE.db ...]
Writes reports/diagnosis_calibration.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrstudy.errors import UserInputError  # noqa: E402
from lrstudy.report.analyze import config_table  # noqa: E402
from lrstudy.report.diagnose import VERDICTS, diagnose  # noqa: E402

DEFAULT_STORES = [
    ROOT / "reports" / "catalogue" / "mlflow.db",
    ROOT / "reports" / "rangetest_eval" / "mlflow.db",
]


def studies_in(uri: str) -> list[str]:
    from lrstudy import names
    from lrstudy.track.runs import search_all
    from lrstudy.track.store import open_client

    client = open_client(uri, create=False)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = search_all(client, exps, f"tags.`{names.TAG_KIND}` = '{names.KIND_STUDY}'")
    return sorted({r.data.tags[names.TAG_STUDY] for r in parents if names.TAG_STUDY in r.data.tags})


def study_trials(uri: str, study: str) -> pd.DataFrame:
    """The report's per-trial frame (curve metrics included) of one study."""
    from lrstudy.report.read import find_study
    from lrstudy.report.results import collect
    from lrstudy.track.store import open_client

    client = open_client(uri, create=False)
    return collect(client, find_study(client, study=study)).trials


def verdicts(trials: pd.DataFrame) -> pd.DataFrame:
    return diagnose(config_table(trials)).set_index("config")


def split_seeds(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    seeds = sorted(trials["seed"].dropna().unique())
    if len(seeds) < 2:
        return None
    first = set(seeds[: (len(seeds) + 1) // 2])
    mask = trials["seed"].isin(first)
    return trials[mask], trials[~mask]


def family_best_lrs(configs: pd.DataFrame) -> dict[str, float]:
    """family -> the LR the diagnosis compares its configurations with (the family's best)."""
    return {
        str(f): float(g["best_lr"].iloc[0])
        for f, g in configs.groupby("family")
        if g["best_lr"].notna().any()
    }


def calibrate(study: str, trials: pd.DataFrame) -> dict | None:
    halves = split_seeds(trials)
    if halves is None:
        return None
    a, b = (verdicts(h) for h in halves)
    common = a.index.intersection(b.index)
    pairs = Counter()
    for one, other in ((a, b), (b, a)):
        for config in common:
            pairs[(one.loc[config, "verdict"], other.loc[config, "verdict"])] += 1
    best_a, best_b = family_best_lrs(a), family_best_lrs(b)
    ratios = [
        max(best_a[f], best_b[f]) / min(best_a[f], best_b[f]) for f in best_a.keys() & best_b.keys()
    ]
    return {
        "study": study,
        "configs": len(common),
        "seeds": f"{halves[0]['seed'].nunique()}+{halves[1]['seed'].nunique()}",
        "pairs": pairs,
        "families": len(ratios),
        "same_best": sum(r == 1 for r in ratios),
        "worst_ratio": max(ratios, default=None),
    }


def agreement(pairs: Counter) -> float:
    total = sum(pairs.values())
    return sum(n for (x, y), n in pairs.items() if x == y) / total if total else float("nan")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| study | configs | seeds (half + half) | same verdict on both halves | families with the same best LR | best LRs apart (worst family) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['worst_ratio']:.2g}x" if r["worst_ratio"] else "-"
        lines.append(
            f"| {r['study']} | {r['configs']} | {r['seeds']} | {agreement(r['pairs']):.0%} | "
            f"{r['same_best']}/{r['families']} | {ratio} |"
        )
    total = sum((r["pairs"] for r in rows), Counter())
    lines += [
        "",
        "Verdict on one half (rows) vs the other half (columns), all studies, both ways:",
        "",
    ]
    lines.append("| on one half ↓ / other half → | " + " | ".join(VERDICTS) + " | n | same |")
    lines.append("|---|" + "---|" * (len(VERDICTS) + 2))
    for x in VERDICTS:
        n = sum(total[(x, y)] for y in VERDICTS)
        if not n:
            continue
        cells = " | ".join(str(total[(x, y)]) for y in VERDICTS)
        lines.append(f"| {x} | {cells} | {n} | {total[(x, x)] / n:.0%} |")
    lines.append(
        f"\nOverall: the same verdict in {agreement(total):.0%} of {sum(total.values())} comparisons."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="*", type=Path, default=DEFAULT_STORES)
    args = p.parse_args()
    rows = []
    for store in args.stores:
        if not store.exists():
            print(f"skipping {store}: not there (run make catalogue / bench/rangetest_rules.py)")
            continue
        uri = f"sqlite:///{store}"
        for study in studies_in(uri):
            try:
                trials = study_trials(uri, study)
            except UserInputError as e:  # e.g. a study still running, nothing finished yet
                print(f"skipping {study}: {e}")
                continue
            row = calibrate(study, trials)
            if row:
                rows.append(row)
                print(f"{study}: {agreement(row['pairs']):.0%} agree", flush=True)
    table = markdown(rows)
    out = ROOT / "reports" / "diagnosis_calibration.md"
    out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
