"""`lr: auto` checked by successive halving, against the full grid, per task.

For every study in studies/rangetest_eval/ (and held_out/) this runs, into the same store as
bench/bench_halving.py (reports/halving_bench/mlflow.db: the full grids are reused from there):
1. the full grid (skipped when already finished), for its best and its trial-steps;
2. the study with `lr: auto` and `search: {method: halving}`: a range test per seed, then 8
   candidates x0.1..x21.5 of its recommendation, halving picking among them. Its compute is the
   trial-steps trained plus the range tests' steps; the LR it returns (its best trained to the
   end) is scored by the full grid's seed-mean final accuracy at the nearest grid LR (the grid
   has 4 LRs per decade, so the nearest is within x1.33).
Goal (issue 14): within 1 point of the grid's best on every task, at <= 1/3 of the grid's compute.

Usage: python bench/bench_auto_lr.py [--only TASK ...]
Writes reports/halving_bench/auto_table.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_halving import (  # noqa: E402
    OUT,
    _grid_by_lr,
    _nearest,
    _returned,
    _run,
    _steps,
    _tasks,
    _trials,
    _variant,
)


def _range_test_steps(client, experiment: str) -> float:
    from lrstudy import names

    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    tests = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_RANGE_TEST]
    return sum(float(r.data.params.get("steps", 0) or 0) for r in tests)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=[])
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    from lrstudy.quiet import quiet_libraries

    quiet_libraries()
    OUT.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{OUT / 'mlflow.db'}"
    header = ("task", "grid best (LR)", "auto LR", "auto acc", "gap (pts)", "compute ×",
              "grid s", "auto s")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in _tasks(args.only):
            grid_spec = _variant(path, "", None, Path(tmp))
            auto_spec = _variant(path, "_auto", {"method": "halving"}, Path(tmp))
            spec = yaml.safe_load(auto_spec.read_text(encoding="utf-8"))
            spec["optimizers"][0]["lr"] = "auto"
            auto_spec.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
            t_grid = _run(grid_spec, uri, "auto")  # reused from bench_halving when finished
            t_auto = _run(auto_spec, uri, "auto")
            client = MlflowClient(uri)
            base = yaml.safe_load(grid_spec.read_text(encoding="utf-8"))["tracking"]["experiment"]
            grid_runs, auto_runs = _trials(client, base), _trials(client, f"{base}_auto")
            grid = _grid_by_lr(grid_runs)
            finite = {lr: a for lr, a in grid.items() if math.isfinite(a)}
            best_lr = max(finite, key=finite.get)
            used = _steps(auto_runs) + _range_test_steps(client, f"{base}_auto")
            lr = _returned(auto_runs)
            got = _nearest(grid, lr) if lr is not None else math.nan
            rows.append((
                path.stem, f"{finite[best_lr]:.3f} ({best_lr:.3g})",
                f"{lr:.3g}" if lr else "none", f"{got:.3f}",
                f"{100 * (finite[best_lr] - got):+.1f}", f"{_steps(grid_runs) / used:.1f}",
                f"{t_grid:.1f}", f"{t_auto:.1f}",
            ))  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    (OUT / "auto_table.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))
    print(f"\n{len(rows)} tasks, n=1 run each; {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
