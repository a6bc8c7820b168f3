"""TPE against random search at an equal budget: the best configuration each finds, over repeats.

The search space is LR x momentum x weight decay for SGD on a digits MLP: LR log-uniform on
[1e-3, 1], momentum in {0, 0.5, 0.8, 0.9, 0.95, 0.99}, weight decay in {0, 1e-5, 1e-4, 1e-3, 1e-2}.
Each method gets the same number of configurations (`--trials`, each trained for `--epochs` on
every seed), so the same trial-steps; repeat r uses search seed r for both. Each study runs as a
whole `lrstudy` study (one worker, `--engine`: trial, one slot sampled at a time; population, the
start-up draws as one population and each later slot sampled as a freed slot takes it) into its
own sqlite store; what it found is the study's best by the report's rule (highest seed-mean final
val accuracy, no diverged seed).

Usage: python bench/bench_tpe.py [--trials 20] [--startup 6] [--epochs 4] [--repeats 3] [--seeds 1]
                                 [--engine trial]
Prints one line per study and, per method, n, the mean best and its spread (min..max, std).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDY = """
name: bench_tpe_{method}_{repeat}
task: {{dataset: digits, model: mlp}}
train: {{epochs: {epochs}, batch_size: 64}}
optimizers: [{{name: sgd, lr: {{low: 1.0e-3, high: 1.0}}}}]
sweep:
  momentum: [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
  weight_decay: [0.0, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]
seeds: {seeds}
search: {search}
"""


def run_one(folder: Path, method: str, repeat: int, args) -> tuple[float, float, str]:
    from rich.console import Console

    from lrstudy.api import run_study

    search = f"{{method: {method}, trials: {args.trials}, seed: {repeat}"
    search += f", startup: {args.startup}}}" if method == "tpe" else "}"
    path = folder / f"{method}_{repeat}.yaml"
    path.write_text(STUDY.format(method=method, repeat=repeat, epochs=args.epochs,
                                 seeds=args.seeds, search=search), encoding="utf-8")  # fmt: skip
    started = time.monotonic()
    result = run_study(path, workers=1, tracking_uri=f"sqlite:///{folder}/{method}_{repeat}.db",
                       engine=args.engine, report=False, console=Console(stderr=True, quiet=True))  # fmt: skip
    seconds = time.monotonic() - started
    best = result.best
    assert best is not None, f"{method} repeat {repeat} found nothing"
    return best.mean, seconds, best.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--startup", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--engine", default="trial", choices=["trial", "population"])
    args = parser.parse_args()
    found: dict[str, list[float]] = {"tpe": [], "random": []}
    with tempfile.TemporaryDirectory(prefix="bench_tpe_") as tmp:
        for repeat in range(args.repeats):
            for method in ("tpe", "random"):
                acc, seconds, name = run_one(Path(tmp), method, repeat, args)
                found[method].append(acc)
                print(f"{method:6s} repeat {repeat}: best val acc {acc:.4f} ({name}) "
                      f"in {seconds:.0f} s", flush=True)  # fmt: skip
    print(f"\nbudget per study: {args.trials} configurations x {args.seeds} seed(s) x "
          f"{args.epochs} epochs; TPE start-up {args.startup}; engine {args.engine}")  # fmt: skip
    for method, values in found.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{method:6s} n={len(values)}: mean best {statistics.fmean(values):.4f}, "
              f"min {min(values):.4f}, max {max(values):.4f}, std {sd:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
