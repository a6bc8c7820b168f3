"""Issue: population engine. (a) The quickstart end to end, report included, vs an untracked
plain-PyTorch loop over the same 48 trials (bench/plain_loop.py); (b) the same study with the
population engine vs the trial engine. Every command is a fresh process on a fresh sqlite store;
the commands are interleaved n times so machine drift hits them alike.

    python bench/bench_quickstart.py [--repeat 3] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import ROOT, ratio_spread, spread, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", default="1", help="lrstudy's --workers (default 1)")
    args = ap.parse_args()
    quickstart = ROOT / "studies" / "quickstart.yaml"
    times: dict[str, list[float]] = {"plain": [], "population": [], "trial": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            times["plain"].append(timed([sys.executable, str(ROOT / "bench" / "plain_loop.py")]))
            for engine in ("population", "trial"):
                d = Path(tmp) / f"{engine}-{i}"
                d.mkdir()
                cmd = [sys.executable, "-m", "lrstudy", "run", str(quickstart)]
                cmd += ["--tracking-uri", f"sqlite:///{d}/mlflow.db", "--report-dir", str(d)]
                cmd += ["--engine", engine, "--workers", args.workers]
                times[engine].append(timed(cmd, cwd=ROOT))
            print(
                f"run {i + 1}/{args.repeat}: "
                + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                flush=True,
            )
    for k, v in times.items():
        print(f"{k:>10}: {spread(v)}")
    print(f"(a) lrstudy (population, report included) / plain loop: "
          f"{ratio_spread(times['population'], times['plain'])}  goal <= 1.5x")  # fmt: skip
    print(f"(b) trial engine / population engine: "
          f"{ratio_spread(times['trial'], times['population'])}  goal >= 3x")  # fmt: skip


if __name__ == "__main__":
    main()
