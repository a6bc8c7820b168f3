"""The MNIST-1D paper table, from the store that `python bench/catalogue.py --paper` filled.

For each model of studies/mnist1d_paper/ (the paper's recipe: Adam, batch 100, 6000 steps on the
4000 / 1000 split): the paper's own setting (lr 1e-2, constant) and the best configuration
lrstudy found (the report's best: highest seed-mean final test accuracy, no diverged seed), each
as mean ± sample std over the seeds, next to the paper's figure and the authors' notebook's.

Usage: python bench/paper_table.py [--tracking-uri URI]   (default: reports/catalogue/mlflow.db)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Greydanus 2020, "Scaling down deep learning" (Table 1) and the authors' notebook.
PAPER = {"logistic": (32, 31.5), "mlp": (68, 65.1), "cnn": (94, 92.3), "gru": (91, 89.1)}
PAPER_SETTING = {"optimizer": "adam", "lr": 1e-2, "schedule": "constant"}


def _pct(values) -> str:
    v = [100 * float(x) for x in values if x == x]
    if not v:
        return "-"
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else float("nan")
    return f"{mean:.1f} ± {sd:.1f} (n={len(v)})" if sd == sd else f"{mean:.1f} (n=1)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tracking-uri", default=f"sqlite:///{ROOT / 'reports' / 'catalogue' / 'mlflow.db'}"
    )
    uri = p.parse_args().tracking_uri

    from lrstudy import load_results
    from lrstudy.report.best import best_config

    lines = [
        "| model | paper | notebook | paper's setting (lr 1e-2, constant) | best found by lrstudy | its setting |",
        "|---|---|---|---|---|---|",
    ]
    for model, (paper, notebook) in PAPER.items():
        trials = load_results(f"mnist1d_paper_{model}", uri)
        own = trials[
            (trials["optimizer"] == PAPER_SETTING["optimizer"])
            & (trials["lr"].sub(PAPER_SETTING["lr"]).abs() < 1e-12)
            & (trials["schedule"] == PAPER_SETTING["schedule"])
        ]
        best = best_config(trials)
        best_rows = trials[trials["config_key"] == best.config_key] if best else trials.iloc[:0]
        lines.append(
            f"| {model} | {paper} | {notebook} | {_pct(own['final_val_acc'])} | "
            f"**{_pct(best_rows['final_val_acc'])}** | {best.name if best else '-'} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
