"""Successive halving against the full grid (and random search at halving's budget), per task.

For every study in studies/rangetest_eval/ (and held_out/: 13 tasks, each a constant-LR grid of 17
LRs x 3 seeds whose best is known by running it) this runs, as whole `python -m lrstudy run`
processes into one store (reports/halving_bench/mlflow.db; finished trials are reused on a rerun,
so pass --fresh to time everything):
1. the full grid: its trial-steps, its wall time, and its best configuration (the report's rule:
   highest seed-mean final val accuracy, no diverged seed);
2. the same study with `search: {method: halving, eta: 3, min_epochs: N}`: the trial-steps it
   trained (stopped trials count the steps up to their stop), its wall time, and the
   configuration it returns (its best trained to the end). That configuration's quality is its
   seed-mean final accuracy *in the full grid*, where it was trained to the end on the same
   seeds: the same computation, so no second run is needed;
3. random search at halving's budget: as many whole configurations (all seeds, every epoch) as
   halving's trial-steps buy, drawn from the grid's LRs without replacement, 200 draws; its
   quality is the best drawn configuration's grid accuracy (mean over the draws, and the share
   of draws within 1 point of the grid's best).
Goal (issue 14): >= 3x less compute than the grid on every task, within 1 point of the grid's best.

Usage: python bench/bench_halving.py [--only TASK ...] [--fresh] [--eta 3] [--min-epochs 1]
                                     [--engine auto]
Writes reports/halving_bench/table.md (the README's table) for --min-epochs 1; another N is its
own study (name suffix _halving_me{N}, so its runs never mix with min_epochs 1's in the store)
and writes table_me{N}.md. A task whose train.epochs is not above N (no rung before the end) is
a row of n/a.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._timing import timed  # noqa: E402

TASKS = ROOT / "studies" / "rangetest_eval"
OUT = ROOT / "reports" / "halving_bench"
DRAWS = 200


def _tasks(only: list[str]) -> list[Path]:
    paths = sorted(TASKS.glob("*.yaml")) + sorted((TASKS / "held_out").glob("*.yaml"))
    return [p for p in paths if not only or p.stem in only]


def _variant(path: Path, suffix: str, search: dict | None, folder: Path) -> Path:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["name"] = f"{spec['name']}{suffix}"
    spec.setdefault("tracking", {})["experiment"] = spec["name"]
    if search:
        spec["search"] = search
    out = folder / f"{path.stem}{suffix}.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return out


def _run(study: Path, uri: str, engine: str) -> float:
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri,
           "--no-report", "--workers", "1", "--engine", engine]  # fmt: skip
    return timed(cmd, cwd=ROOT)


def _trials(client, experiment: str) -> list:
    from lrstudy import names

    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL
            and r.info.status == "FINISHED"]  # fmt: skip


def _grid_by_lr(runs: list) -> dict[float, float]:
    """LR -> seed-mean final val acc (NaN when a seed diverged or has no value)."""
    from lrstudy import names

    by: dict[float, list[float]] = {}
    for r in runs:
        lr = float(r.data.params["lr"])
        ok = r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_OK
        acc = r.data.metrics.get(names.FINAL_VAL_ACC, math.nan)
        by.setdefault(lr, []).append(acc if ok else math.nan)
    return {lr: statistics.fmean(v) for lr, v in by.items()}


def _steps(runs: list) -> float:
    """Trial-steps trained: a stopped trial up to its stop, any other to its end."""
    from lrstudy import names

    total = 0.0
    for r in runs:
        stop = r.data.tags.get(names.TAG_PRUNED_STEP)
        total += float(stop) if stop else float(r.data.params["total_steps"])
    return total


def _returned(runs: list) -> float | None:
    """The LR halving returns: the best seed-mean final val acc among configurations trained to
    the end on every seed (the report's and the CLI's best)."""
    from lrstudy import names

    full: dict[float, list[float]] = {}
    stopped: set[float] = set()
    for r in runs:
        lr = float(r.data.params["lr"])
        if r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_OK:
            full.setdefault(lr, []).append(r.data.metrics.get(names.FINAL_VAL_ACC, math.nan))
        else:
            stopped.add(lr)
    means = {lr: statistics.fmean(v) for lr, v in full.items() if lr not in stopped}
    means = {lr: m for lr, m in means.items() if math.isfinite(m)}
    return max(means, key=means.get) if means else None


def _nearest(grid: dict[float, float], lr: float) -> float:
    return grid[min(grid, key=lambda g: abs(math.log(g / lr)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--eta", type=float, default=3.0)
    ap.add_argument("--min-epochs", type=int, default=1)
    ap.add_argument("--engine", default="auto")
    args = ap.parse_args()
    if args.min_epochs < 1:
        ap.error("--min-epochs must be >= 1")
    me = args.min_epochs
    suffix = "_halving" if me == 1 else f"_halving_me{me}"
    table_name = "table.md" if me == 1 else f"table_me{me}.md"
    from mlflow.tracking import MlflowClient

    from lrstudy.quiet import quiet_libraries

    quiet_libraries()
    if args.fresh and OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{OUT / 'mlflow.db'}"
    rows, header = [], ("task", "grid best", "grid s", "halving s", "time ×", "compute ×",
                        "halving acc", "gap (pts)", "random acc", "random ≤1 pt")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for path in _tasks(args.only):
            epochs = yaml.safe_load(path.read_text(encoding="utf-8"))["train"]["epochs"]
            if me >= epochs:  # the spec refuses it: no rung would come before the end
                rows.append((path.stem, *["n/a"] * (len(header) - 2), f"n/a (epochs {epochs})"))
                print(" | ".join(rows[-1]), flush=True)
                continue
            grid_spec = _variant(path, "", None, Path(tmp))
            halving = {"method": "halving", "eta": args.eta, "min_epochs": me}
            halving_spec = _variant(path, suffix, halving, Path(tmp))
            t_grid = _run(grid_spec, uri, args.engine)
            t_halving = _run(halving_spec, uri, args.engine)
            client = MlflowClient(uri)
            spec = yaml.safe_load(grid_spec.read_text(encoding="utf-8"))
            grid_runs = _trials(client, spec["tracking"]["experiment"])
            halving_runs = _trials(client, spec["tracking"]["experiment"] + suffix)
            grid = _grid_by_lr(grid_runs)
            finite = {lr: a for lr, a in grid.items() if math.isfinite(a)}
            best = max(finite.values())
            full, used = _steps(grid_runs), _steps(halving_runs)
            lr = _returned(halving_runs)
            got = _nearest(grid, lr) if lr is not None else math.nan
            # random search: whole configurations for halving's budget, from the grid's LRs
            per_config = full / len(grid)
            k = max(1, int(used // per_config))
            rng = random.Random(0)
            draws = [max((grid[x] if math.isfinite(grid[x]) else -1.0)
                         for x in rng.sample(sorted(grid), min(k, len(grid))))
                     for _ in range(DRAWS)]  # fmt: skip
            rows.append((
                path.stem, f"{best:.3f}", f"{t_grid:.1f}", f"{t_halving:.1f}",
                f"{t_grid / t_halving:.2f}", f"{full / used:.1f}", f"{got:.3f}",
                f"{100 * (best - got):+.1f}", f"{statistics.fmean(draws):.3f} (k={k})",
                f"{sum(best - d <= 0.01 for d in draws) / DRAWS:.0%}",
            ))  # fmt: skip
            print(" | ".join(rows[-1]), flush=True)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    (OUT / table_name).write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))
    print(f"\n{len(rows)} tasks; eta {args.eta:g}; min_epochs {me}; engine {args.engine}; "
          f"one timed run each (n=1 per task: the spread is across tasks); "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip


if __name__ == "__main__":
    main()
