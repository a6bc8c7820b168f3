"""Issue: local workers. One study of 24 trials with --workers 1 vs --workers 2 (trial engine, so
the comparison is of the executor alone), each in a fresh process on a fresh sqlite store, the two
interleaved n times. Goal on a 2-core machine: >= 1.8x faster with 2 workers (never below 1.5x).

    python bench/bench_workers.py [--repeat 3] [--study studies/quickstart.yaml]

--study: another study file instead of the built-in 24 short trials (e.g. the quickstart: 48
trials of 400 steps, where the fixed start-up weighs less).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import ROOT, ratio_spread, spread, timed

STUDY = """
name: bench-workers
task: {dataset: mnist1d, model: mlp, data_args: {num_samples: 2000}}
train: {epochs: 15, batch_size: 50}
optimizers:
  - {name: sgd, lr: [0.01, 0.03, 0.1], momentum: 0.9}
  - {name: adam, lr: [0.0003, 0.001, 0.003]}
schedules: [{name: constant}, {name: cosine, warmup: 0.05}]
seeds: [0, 1]
report: {enabled: false}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--study", type=Path, help="a study file (default: 24 short built-in trials)")
    args = ap.parse_args()
    n = args.repeat
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        study = args.study.resolve() if args.study else Path(tmp) / "study.yaml"
        if not args.study:
            study.write_text(STUDY)
        for i in range(n):
            for workers in (1, 2):
                db = Path(tmp) / f"w{workers}-{i}.db"
                cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--no-report"]
                cmd += ["--tracking-uri", f"sqlite:///{db}", "--workers", str(workers)]
                cmd += ["--engine", "trial"]
                times[workers].append(timed(cmd, cwd=ROOT))
                print(f"run {i + 1}/{n}, workers={workers}: {times[workers][-1]:.1f} s", flush=True)
    what = study.name if args.study else "24 trials"
    print(f"{what}, --workers 1: {spread(times[1])}")
    print(f"{what}, --workers 2: {spread(times[2])}")
    print(f"speed-up (workers 1 / workers 2, paired): {ratio_spread(times[1], times[2])}")


if __name__ == "__main__":
    main()
