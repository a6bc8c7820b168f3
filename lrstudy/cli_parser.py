"""The command line's grammar: `lrstudy run|plan|report|find-lr|ui|schema`, their arguments and
help. Apart from the commands (`lrstudy.cli`) so that `--help`, `schema` and the tests that read
the arguments need nothing but argparse and a few torch-free names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lrstudy import __version__


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its arguments and help; `main` dispatches on `command`."""
    p = argparse.ArgumentParser(prog="lrstudy", description="Measured learning-rate studies.")
    p.add_argument("--version", action="version", version=f"lrstudy {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def engine_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--engine",
            default="auto",
            help="auto (a population wherever >= 2 trials share a shape; default), trial or "
            "population (falls back to trial, with the reason, where a trial cannot join one)",
        )
        sp.add_argument(
            "--population-size",
            metavar="K",
            help="members per population (default: from the model's parameter count)",
        )

    def uri(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--tracking-uri",
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the study's tracking.uri, "
            "else sqlite:///mlflow.db)",
        )

    r = sub.add_parser("run", help="run a study (skips finished trials), then write its report")
    r.add_argument("study", type=Path)
    r.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    r.add_argument(
        "--report-dir", type=Path, help="where reports go (default: the study's report.dir)"
    )
    r.add_argument(
        "--workers",
        metavar="N",
        help="trials trained at once (default: the usable cores; 1 = one process); "
        "with --executor ray, the Ray tasks in flight",
    )
    r.add_argument(
        "--executor",
        default="local",
        help="local (worker processes on this machine, default) or ray (needs lrstudy[ray])",
    )
    engine_flags(r)
    r.add_argument(
        "--ray-address",
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray runtime)",
    )
    uri(r)

    pl = sub.add_parser(
        "plan", help="dry run: the trials, which are done, and which train together"
    )
    pl.add_argument("study", type=Path)
    engine_flags(pl)
    uri(pl)

    rep = sub.add_parser("report", help="write the HTML report of a study from MLflow")
    rep.add_argument("study", type=Path, nargs="?")
    rep.add_argument("--experiment", help="report every trial run of this MLflow experiment")
    rep.add_argument("--run", dest="run_id", help="report the study of this parent run id")
    rep.add_argument("--out", type=Path, help="report folder (default: reports/)")
    uri(rep)

    from lrstudy.rangetest.ramp import MODES, RAMP  # torch-free: --help stays instant

    f = sub.add_parser(
        "find-lr",
        help="LR range test on the study's task",
        description="LR range test: train a few hundred steps while the LR grows from --min to "
        "--max, smooth the loss, print every rule's suggested LR and the recommended one, and "
        "log the test as a range_test run under the study.",
    )
    f.add_argument("study", type=Path, help="study file (its task, data and optimizers)")
    f.add_argument("--optimizer", help="which of the study's optimizers (default: the first)")
    f.add_argument(
        "--min",
        dest="lr_min",
        type=float,
        default=RAMP.lr_min,
        help=f"first LR of the ramp, small enough to change nothing (default: {RAMP.lr_min:g})",
    )
    f.add_argument(
        "--max",
        dest="lr_max",
        type=float,
        default=RAMP.lr_max,
        help=f"last LR of the ramp, large enough to diverge (default: {RAMP.lr_max:g}); the test "
        "stops early once the smoothed loss exceeds 4x its best",
    )
    f.add_argument(
        "--steps",
        type=int,
        default=RAMP.steps,
        help=f"optimizer steps from --min to --max (default: {RAMP.steps}); under 100 the "
        "smoothed loss has not warmed up and the recommendation comes with a warning",
    )
    f.add_argument(
        "--mode",
        choices=MODES,
        default=RAMP.mode,
        help=f"ramp spacing: exp (geometric, equal steps per decade) or linear "
        f"(default: {RAMP.mode})",
    )
    uri(f)

    u = sub.add_parser(
        "ui",
        help="print (and on a desktop open) the URL of a study's runs in MLflow's UI; starts "
        "`mlflow ui` on 127.0.0.1 for a local store, links to a tracking server's own UI",
    )
    u.add_argument("study", type=Path, nargs="?", help="study file: open its trials view")
    u.add_argument("--experiment", help="MLflow experiment (default: the study's; else the list)")
    u.add_argument("--port", type=int, default=5000, help="port of the local UI (default: 5000)")
    u.add_argument("--no-browser", action="store_true", help="only print the URL")
    uri(u)

    sub.add_parser("schema", help="print the study file's JSON schema")
    return p
