"""Run the claim catalogue (studies/catalogue/*.yaml) and write reports/index.html.

    python bench/catalogue.py                          # everything, into reports/catalogue/mlflow.db
    python bench/catalogue.py --only lr_regimes momentum
    python bench/catalogue.py --index-only             # rebuild the reports and the index
    python bench/catalogue.py --paper                  # also studies/mnist1d_paper/*.yaml (long)
    python bench/catalogue.py --readme README.md       # also rewrite the README's verdict table

Every study runs through `lrstudy.run_study` into one shared store (finished trials are skipped
on a rerun), a study that declares `range_test_near_grid_best` first gets an LR range test per
optimizer (`find-lr`), then every report and the index are built from the store alone. Prints the
wall time per study and in all, the verdicts as a Markdown table (the README's), and where the
index is; with --readme, the table between the README's `<!-- verdicts:begin/end -->` markers
is rewritten from the computed verdicts (`make catalogue` does this). Goal: the whole catalogue in <= 20 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CATALOGUE = ROOT / "studies" / "catalogue"
PAPER = ROOT / "studies" / "mnist1d_paper"
RANGE_TEST_CLAIM = "range_test_near_grid_best"
# Page order: the LR regimes first (the 3 x 3 table), then what moves the good LR; any other study
# file follows in name order.
ORDER = ["lr_regimes", "gradients", "schedules", "warmup", "adaptive", "momentum", "batch_size",
         "data_size", "generalization", "layer_lr", "range_test"]  # fmt: skip


def _has_range_test(uri: str, spec, optimizer: str) -> bool:
    """A finished range test of this study's optimizer with today's key (ramp, rules version, ...)
    is in the store: reuse it on a rerun; a test made under older rules is redone."""
    from mlflow.tracking import MlflowClient

    from lrstudy import names as N
    from lrstudy.keys import stable_hash
    from lrstudy.plan import plan_trials
    from lrstudy.rangetest.study import range_test_settings

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec.experiment)
    if exp is None:
        return False
    trial = next(t for t in plan_trials(spec) if t.optimizer == optimizer)
    key = stable_hash(range_test_settings(spec, trial))
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{N.TAG_RANGE_TEST_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return bool(runs)


def range_tests(path: Path, uri: str) -> None:
    """`find-lr` for each optimizer of a study that claims something about the range test."""
    from lrstudy.rangetest.study import find_lr_for_study
    from lrstudy.spec import load_spec

    spec = load_spec(path)
    if RANGE_TEST_CLAIM not in spec.claims:
        return
    for name in dict.fromkeys(o.name for o in spec.optimizers):
        if not _has_range_test(uri, spec, name):
            found = find_lr_for_study(spec, str(path), uri, optimizer=name)
            print(f"  range test {name}: recommended {found.result.recommended_lr:.3g} "
                  f"({found.result.recommended})", flush=True)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: sqlite:///<out>/catalogue/mlflow.db)")  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "reports"), help="reports folder (default reports/)")
    p.add_argument("--only", nargs="*", default=None, help="study file stems to run")
    p.add_argument("--workers", type=int, default=None, help="trials at once (default: cores)")
    p.add_argument("--index-only", action="store_true", help="run nothing; rebuild reports+index")
    p.add_argument("--paper", action="store_true", help="also the MNIST-1D paper studies")
    p.add_argument("--readme", default=None,
                   help="rewrite the verdict table between this file's markers (every "
                   "catalogue study; not with --only or --paper)")  # fmt: skip
    args = p.parse_args()
    if args.readme and (args.only is not None or args.paper):
        p.error("--readme writes the whole catalogue's verdicts: drop --only / --paper")

    from lrstudy.api import run_study
    from lrstudy.report.catalogue import (
        build_catalogue,
        markdown_table,
        readme_block,
        verdict_rows,
        with_readme_block,
    )
    from lrstudy.spec import load_spec

    out = Path(args.out)
    uri = args.tracking_uri or f"sqlite:///{(out / 'catalogue' / 'mlflow.db').resolve()}"
    (out / "catalogue").mkdir(parents=True, exist_ok=True)
    files = sorted(CATALOGUE.glob("*.yaml"), key=lambda f: (ORDER + [f.stem]).index(f.stem))
    files += sorted(PAPER.glob("*.yaml")) if args.paper else []
    if args.only is not None:
        files = [f for f in files if f.stem in args.only]
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    for path in files:
        if args.index_only:
            break
        print(f"== {path.relative_to(ROOT)}", flush=True)
        t0 = time.perf_counter()
        range_tests(path, uri)
        run = run_study(path, tracking_uri=uri, workers=args.workers, report=False)
        times[path.stem] = time.perf_counter() - t0
        print(f"   {run.outcomes} in {times[path.stem]:.0f} s", flush=True)
    t_runs = time.perf_counter() - t_all
    names = {f.stem: load_spec(f).name for f in files}
    result = build_catalogue([(uri, names[f.stem]) for f in files], out)
    total = time.perf_counter() - t_all
    print()
    print(markdown_table(result.studies))
    print()
    for stem, study in names.items():
        ran = f"run {times[stem]:5.0f} s, " if stem in times else ""
        print(f"{study:>24}: {ran}report {result.seconds[study]:4.0f} s")
    print(
        f"catalogue: {len(files)} studies, runs {t_runs:.0f} s, reports+index "
        f"{total - t_runs:.0f} s, total {total:.0f} s ({total / 60:.1f} min)"
    )
    print(f"tracking: {uri}")
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text(encoding="utf-8")
        readme.write_text(with_readme_block(text, readme_block(verdict_rows(result.studies))),
                          encoding="utf-8")  # fmt: skip
        print(f"verdict table: {readme}")
    print(f"index: {result.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
