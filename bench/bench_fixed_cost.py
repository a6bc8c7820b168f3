"""Issue 15: the fixed cost of one `lrstudy run`, against `python -c "import torch"`.

A 1-trial, 1-epoch digits study on a fresh sqlite store, report included, in a fresh process;
timed with the floors it cannot go below, each also in a fresh process, all interleaved n times:
  import torch                      the baseline of the goal (run <= 2.5x this)
  import torch, lightning, mlflow   what any run must import: the Trainer and the store
  + matplotlib, pandas, jinja2      ... and what the report needs
  lrstudy run --no-report           the run without its report
  lrstudy run                       the whole command

    python bench/bench_fixed_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import ROOT, ratio_spread, spread, timed

STUDY = """
name: fixed-cost
task: {dataset: digits, model: mlp}
train: {epochs: 1, batch_size: 64}
optimizers: [{name: sgd, lr: 0.1}]
seeds: [0]
"""

IMPORTS = {
    "import torch": "import torch",
    "import torch, lightning, mlflow": "import torch, lightning, mlflow",
    "+ matplotlib, pandas, jinja2": "import torch, lightning, mlflow, matplotlib.pyplot, pandas, jinja2",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in [*IMPORTS, "run --no-report", "run"]}
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        study.write_text(STUDY)
        env = {"LRSTUDY_CACHE": str(Path(tmp) / "cache")}
        run = [sys.executable, "-m", "lrstudy", "run", str(study)]
        timed([*run, "--tracking-uri", f"sqlite:///{tmp}/warm.db"], env=env, cwd=Path(tmp))
        for i in range(args.repeat):
            for label, code in IMPORTS.items():
                times[label].append(timed([sys.executable, "-c", code]))
            for label, extra in (("run --no-report", ["--no-report"]), ("run", [])):
                uri = f"sqlite:///{tmp}/{label[-6:]}-{i}.db"  # a fresh store each time
                cmd = [*run, "--tracking-uri", uri, "--report-dir", f"{tmp}/r{i}", *extra]
                times[label].append(timed(cmd, env=env, cwd=ROOT))
            print(f"round {i + 1}/{args.repeat}: run {times['run'][-1]:.2f} s", flush=True)
    base = times["import torch"]
    for label, values in times.items():
        print(f"{label:34s} {spread(values)}   {ratio_spread(values, base)} of import torch")


if __name__ == "__main__":
    main()
