"""Freed population slots taking new work, against populations that only shrink.

A halving study whose trials do not fit one population (`--population-size`): without freed
slots taking work, each population trains to its last member's end while successive halving
empties it, and the next population waits. With them, the slots of stopped members take the
later populations' trials at once. Both sides are whole `python -m lrstudy run` processes on a
fresh store each, interleaved (so machine drift cancels); the baseline is this repository at
`--baseline` (default: the last commit before freed slots took work), checked out in a temporary
git worktree and run with the same Python.

Also printed per side: trial-steps trained (stopped trials up to their stop) and the best
configuration, since ASHA's decisions depend on the order in which trials reach a rung.

Usage: python bench/bench_refill.py [--repeat 3] [--baseline 40146ba] [--size 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._timing import ratio_spread, spread, timed  # noqa: E402

STUDY = """
name: refill_bench
task: {dataset: mnist1d, model: mlp}
train: {epochs: 27, batch_size: 64}
optimizers: [{name: sgd, lr: {low: 1.0e-3, high: 1.0, num: 17}, momentum: 0.9}]
seeds: 3
search: {method: halving, eta: 3}
"""


def _run(tree: Path, study: Path, store: Path, size: int) -> float:
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri",
           f"sqlite:///{store}", "--no-report", "--workers", "1", "--engine", "population",
           "--population-size", str(size)]  # fmt: skip
    return timed(cmd, cwd=tree)


def _outcome(store: Path) -> tuple[float, str]:
    """(trial-steps trained, the best configuration trained to the end) from the store."""
    from mlflow.tracking import MlflowClient

    from lrstudy import names

    client = MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("refill_bench")
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL]  # fmt: skip
    steps = sum(float(r.data.tags.get(names.TAG_PRUNED_STEP) or r.data.params["total_steps"])
                for r in runs)  # fmt: skip
    full: dict[str, list[float]] = {}
    for r in runs:
        if r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_OK:
            full.setdefault(r.data.params["lr"], []).append(r.data.metrics[names.FINAL_VAL_ACC])
    best = max(full, key=lambda lr: statistics.fmean(full[lr]))
    return steps, f"lr {float(best):.3g} ({statistics.fmean(full[best]):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", default="40146ba")
    ap.add_argument("--size", type=int, default=8)
    args = ap.parse_args()
    from lrstudy.quiet import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            study = Path(tmp) / "refill_bench.yaml"
            study.write_text(STUDY, encoding="utf-8")
            times: dict[str, list[float]] = {"refill": [], "baseline": []}
            for i in range(args.repeat):
                for side, tree in (("baseline", base), ("refill", ROOT)):
                    store = Path(tmp) / f"{side}{i}.db"
                    times[side].append(_run(tree, study, store, args.size))
                    steps, best = _outcome(store)
                    print(f"{side} #{i + 1}: {times[side][-1]:.1f} s, {steps:.0f} trial-steps, "
                          f"best {best}", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip
    print(f"baseline ({args.baseline}, populations only shrink): {spread(times['baseline'])}")
    print(f"freed slots take new work: {spread(times['refill'])}")
    print(f"speed-up: {ratio_spread(times['baseline'], times['refill'])} "
          f"(51 trials, populations of {args.size}, one worker)")  # fmt: skip


if __name__ == "__main__":
    main()
