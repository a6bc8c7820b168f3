"""`python -m lrstudy run|plan|report|find-lr|ui|schema`.

User mistakes (`UserInputError`) print one line and exit 2; Ctrl-C exits 130 after closing runs.
Heavy imports happen inside the commands so `schema` and `--help` stay instant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from lrstudy import __version__
from lrstudy.errors import UserInputError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lrstudy", description="Measured learning-rate studies.")
    p.add_argument("--version", action="version", version=f"lrstudy {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

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
    uri(r)

    pl = sub.add_parser("plan", help="dry run: list the trials and which are already done")
    pl.add_argument("study", type=Path)
    uri(pl)

    rep = sub.add_parser("report", help="write the HTML report of a study from MLflow")
    rep.add_argument("study", type=Path, nargs="?")
    rep.add_argument("--experiment", help="report every trial run of this MLflow experiment")
    rep.add_argument("--run", dest="run_id", help="report the study of this parent run id")
    rep.add_argument("--out", type=Path, help="report folder (default: reports/)")
    uri(rep)

    f = sub.add_parser("find-lr", help="LR range test on the study's task")
    f.add_argument("study", type=Path)
    f.add_argument("--optimizer", help="which of the study's optimizers (default: the first)")
    f.add_argument("--min", dest="lr_min", type=float, default=1e-7)
    f.add_argument("--max", dest="lr_max", type=float, default=10.0)
    f.add_argument("--steps", type=int, default=200)
    f.add_argument("--mode", choices=["exp", "linear"], default="exp")
    uri(f)

    u = sub.add_parser("ui", help="MLflow UI on the same store, bound to 127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    uri(u)

    sub.add_parser("schema", help="print the study file's JSON schema")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except UserInputError as e:
        print(f"lrstudy: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lrstudy: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _load(path: Path):
    from lrstudy.spec import load_spec

    return load_spec(path)


def _uri(args: argparse.Namespace, spec=None) -> str:
    from lrstudy.track.store import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri, spec.tracking.uri if spec else None)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lrstudy.execute.study import run_study

    spec = _load(args.study)
    uri = _uri(args, spec)
    console = Console(stderr=True)
    result = run_study(spec, str(args.study), uri, console=console)
    done = ", ".join(f"{n} {k}" for k, n in sorted(result.outcomes.items())) or "nothing new"
    console.print(
        f"{spec.name}: {result.total} trials; {result.skipped} already finished; ran: {done}"
        + (
            f"; closed {result.closed_orphans} orphaned run(s) as KILLED"
            if result.closed_orphans
            else ""
        ),
        highlight=False,
    )
    if result.interrupted:
        console.print("interrupted; run the same command again to resume", highlight=False)
        return EXIT_INTERRUPTED
    if result.best:
        console.print(
            f"best: {result.best[0]} (final val acc {result.best[1]:.3f})", highlight=False
        )
    print(f"tracking: {uri} (experiment {spec.experiment!r}; browse: python -m lrstudy ui)")
    if not args.no_report and spec.report.enabled:
        from lrstudy.report.build import build_report

        out = args.report_dir or Path(spec.report.dir)
        path = build_report(uri, study=spec.name, experiment=spec.experiment, out_dir=out)
        print(f"report: {path}")
    failed = result.outcomes.get("failed", 0)
    if failed:
        print(
            f"{failed} trial(s) failed; run the same command again to retry them", file=sys.stderr
        )
        return 1
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from lrstudy import names
    from lrstudy.plan import plan_trials
    from lrstudy.track import runs as track_runs
    from lrstudy.track.store import experiment_id, open_client

    spec = _load(args.study)
    trials = plan_trials(spec)
    uri = _uri(args, spec)
    done: dict = {}
    try:
        client = open_client(uri, create=False)
        exp = experiment_id(client, spec.experiment, create=False)
        if exp is not None:
            done = track_runs.finished_trials(
                track_runs.search_study_runs(client, exp, names.KIND_TRIAL, spec.name)
            )
    except UserInputError:
        pass  # no store yet: nothing is done
    width = max(len(t.name) for t in trials)
    for t in trials:
        state = "done" if t.key in done else "todo"
        print(f"{t.key}  {state}  {t.name:<{width}}")
    n_done = sum(t.key in done for t in trials)
    print(
        f"{spec.name}: {len(trials)} trials, {n_done} done, {len(trials) - n_done} to run ({uri})"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lrstudy.report.build import build_report

    if not (args.study or args.experiment or args.run_id):
        raise UserInputError("report: give a STUDY.yaml, --experiment NAME or --run PARENT_RUN_ID")
    spec = _load(args.study) if args.study else None
    uri = _uri(args, spec)
    out = args.out or Path(spec.report.dir if spec else "reports")
    path = build_report(
        uri,
        study=spec.name if spec else None,
        experiment=spec.experiment if spec else args.experiment,
        parent_run_id=args.run_id,
        out_dir=out,
    )
    print(f"report: {path}")
    return 0


def cmd_find_lr(args: argparse.Namespace) -> int:
    from lrstudy.rangetest.study import run_find_lr_cli

    spec = _load(args.study)
    return run_find_lr_cli(spec, str(args.study), _uri(args, spec), args)


def cmd_ui(args: argparse.Namespace) -> int:
    uri = _uri(args)
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(args.port)]
    return subprocess.call(cmd, env={**os.environ, "MLFLOW_TRACKING_URI": uri})


def cmd_schema(args: argparse.Namespace) -> int:
    from lrstudy.spec.study import StudySpec

    print(json.dumps(StudySpec.model_json_schema(), indent=2))
    return 0


_COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "report": cmd_report,
    "find-lr": cmd_find_lr,
    "ui": cmd_ui,
    "schema": cmd_schema,
}
