"""Benchmark the report stage: a synthetic store of 100 runs x 2000 steps x 3 per-step metrics
(+ epoch metrics), then `build_report` end to end. Goal: <= 5 s.

    python bench/bench_report.py                 # builds the store in a temp dir (~1.5 min), then times
    python bench/bench_report.py --store DIR     # keeps/reuses the store in DIR (build once)

Prints the build time (not part of the goal), then per timed run (each in a fresh interpreter)
the wall time of build_report with its stages (mlflow/matplotlib are imported lazily inside it, and
opening the store is counted), the time of `import lrstudy.report.build` before it, and the process
wall time; then the number of metric points read from MLflow and plotted, and the page size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_S = 5.0


def build_store(directory: Path, n_lr: int, epochs: int, steps_per_epoch: int) -> tuple[str, float]:
    from tests.report_fixtures import SyntheticStudy, write_study

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    marker = directory / "bench.json"
    want = {"n_lr": n_lr, "epochs": epochs, "steps_per_epoch": steps_per_epoch}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return uri, 0.0
    spec = SyntheticStudy(
        study="bench",
        lrs={"adam": tuple(np.logspace(-5, 0, n_lr)), "sgd": tuple(np.logspace(-3, 1.5, n_lr))},
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        killed_duplicate=False,
        resumed_duplicates=False,
        old_parent=False,
    )
    t = time.perf_counter()
    written = write_study(uri, spec, directory / "artifacts")
    took = time.perf_counter() - t
    marker.write_text(json.dumps(want))
    print(f"store: {len(written.trial_run_ids)} runs, {written.n_metric_points:,} metric points "
          f"written in {took:.1f} s (not timed below)")  # fmt: skip
    return uri, took


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", type=Path, help="directory to keep the synthetic store in")
    ap.add_argument(
        "--lrs", type=int, default=25, help="LRs per optimizer (2 optimizers x 2 seeds)"
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs (the best one counts)")
    args = ap.parse_args()

    tmp = None
    if args.store is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrstudy-bench-")
        args.store = Path(tmp.name)
    args.store.mkdir(parents=True, exist_ok=True)
    uri, _ = build_store(args.store, args.lrs, args.epochs, args.steps_per_epoch)
    out = args.store / "reports"

    # Each measurement in a fresh interpreter: the store build above leaves a big heap and warm
    # caches behind, which skews an in-process timing either way.
    code = (
        "import json, resource, time; t0 = time.perf_counter()\n"
        "from lrstudy.report.build import generate_report\n"
        "t1 = time.perf_counter(); c1 = time.process_time()\n"
        f"r = generate_report({uri!r}, study='bench', out_dir=r'{out}', log_artifact=False, write_verdicts=False)\n"
        "t2 = time.perf_counter(); kids = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "cpu = time.process_time() - c1 + kids.ru_utime + kids.ru_stime\n"
        "print(json.dumps({'import': t1 - t0, 'build': t2 - t1, 'cpu': cpu, 'stages': r.seconds, 'runs': r.n_runs,\n"
        "    'read': r.n_points_read, 'plotted': r.n_points_plotted, 'bytes': len(r.html), 'path': str(r.path)}))\n"
    )
    best = None
    for i in range(args.repeat):
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - t
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in m["stages"].items())
        print(f"run {i + 1}: build_report {m['build']:.2f} s wall, {m['cpu']:.2f} s CPU incl. render "
              f"workers ({stages}); + `import lrstudy.report.build` {m['import']:.2f} s; process wall "
              f"{wall:.2f} s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        best = m["build"] if best is None else min(best, m["build"])
    print(f"{m['runs']} runs: {m['read']:,} metric points read, {m['plotted']:,} points plotted, "
          f"page {m['bytes'] / 1e6:.2f} MB -> {m['path']}")  # fmt: skip
    print(
        f"goal: build_report <= {GOAL_S:.0f} s -> best {best:.2f} s: {'met' if best <= GOAL_S else 'missed'}"
    )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
