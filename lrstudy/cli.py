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

from lrstudy.cli_parser import build_parser
from lrstudy.errors import UserInputError
from lrstudy.quiet import quiet_libraries
from lrstudy.summary import summary_lines

EXIT_USER_ERROR = 2
EXIT_TRACKING_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
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


def _workers(raw: str | None) -> int:
    from lrstudy.execute.run_options import default_workers

    return default_workers() if raw is None else _count("--workers", raw)


def _count(flag: str, raw: str | None) -> int | None:
    """An integer flag's value (range checks are the library's); None when not given."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserInputError(f"{flag}: {raw!r} is not allowed; give an integer >= 1") from None


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lrstudy.api import run_study

    spec = _load(args.study)
    console = Console(stderr=True)
    result = run_study(
        args.study,
        workers=_workers(args.workers),
        executor=args.executor,
        tracking_uri=_uri(args, spec),
        ray_address=args.ray_address,
        engine=args.engine,
        population_size=_count("--population-size", args.population_size),
        report=not args.no_report,
        report_dir=args.report_dir,
        console=console,
    )
    for line in summary_lines(spec.name, result):
        # one line each, also in a log file (rich wraps at 80 columns when not on a terminal)
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.unavailable:
        print(
            f"lrstudy: {result.unavailable}; stopped. Runs in flight are closed by the next "
            "invocation once their lease expires: start the server and run the same command "
            "again to finish the study",
            file=sys.stderr,
        )
        return EXIT_TRACKING_UNAVAILABLE
    if result.interrupted:
        console.print("interrupted; run the same command again to resume", highlight=False)
        return EXIT_INTERRUPTED
    print(
        f"tracking: {result.tracking_uri} (experiment {spec.experiment!r}; "
        f"browse: python -m lrstudy ui {args.study})"
    )
    if result.report_path:
        print(f"report: {result.report_path}")
    failed = result.outcomes.get("failed", 0)
    if failed:
        print(
            f"{failed} trial(s) failed; run the same command again to retry them", file=sys.stderr
        )
    for err in result.worker_errors:
        print(f"lrstudy: {err}", file=sys.stderr)
    return 1 if failed or result.worker_errors else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from collections import Counter

    from lrstudy.execute.run_options import check_engine
    from lrstudy.execute.search_notes import search_cost_lines
    from lrstudy.execute.status import study_notes, study_status

    size = _count("--population-size", args.population_size)
    check_engine(args.engine, size)
    spec = _load(args.study)
    uri = _uri(args, spec)
    rows = study_status(spec, str(args.study), uri, engine=args.engine, population_size=size)
    for r in rows:
        print(f"{r.trial.key}  {r.state:<7}  {r.population or '-':<4}  {r.trial.name}")
    n = Counter(r.state for r in rows)
    print(
        f"{spec.name}: {len(rows)} trials, {n['done']} done, {n['running']} running, "
        f"{n['todo']} to run ({uri})"
    )
    pops = Counter(r.population for r in rows if r.population)
    if pops:
        sizes = ", ".join(f"{p} ({k})" for p, k in pops.items())
        print(f"populations (trained as one model each): {sizes}")
    alone = Counter(r.why_alone for r in rows if r.why_alone)
    for r in rows:  # one line per trial, unless many share the reason
        if r.why_alone and alone[r.why_alone] <= 3:
            print(f"alone: {r.trial.name}: {r.why_alone}")
    for why, n in alone.items():
        if n > 3:
            print(f"alone: {n} trials: {why}")
    for line in search_cost_lines(spec, [r.trial for r in rows]):
        print(line)
    for line in study_notes(spec, str(args.study), uri):
        print(line)
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
        # The file's claims, not the ones logged at run time: claims may be added after a run
        # (they do not change the study's hash), and `report` is how a user then checks them.
        claims=list(spec.claims) if spec else None,
    )
    print(f"report: {path}")
    return 0


def cmd_find_lr(args: argparse.Namespace) -> int:
    from lrstudy.rangetest.study import find_lr_for_study

    spec = _load(args.study)
    uri = _uri(args, spec)
    found = find_lr_for_study(
        spec,
        str(args.study),
        uri,
        optimizer=args.optimizer,
        lr_min=args.lr_min,
        lr_max=args.lr_max,
        steps=args.steps,
        mode=args.mode,
    )
    print(found.text)
    print(f"run {found.run_id} in experiment {spec.experiment!r} ({uri})")
    return 0 if found.result.recommended else 1  # 1: the test ran but found no usable LR


def cmd_ui(args: argparse.Namespace) -> int:
    """The study's trials in MLflow's UI: a saved view (columns, sort, filter) and its URL.

    A tracking server already serves a UI: print its runs-view URL and start nothing. A local
    store gets `mlflow ui` on 127.0.0.1:PORT until Ctrl-C. The browser opens only on a desktop.
    """
    import signal
    import webbrowser

    from mlflow.exceptions import MlflowException

    from lrstudy import names
    from lrstudy.track import runs as track_runs
    from lrstudy.track import ui_server, ui_view
    from lrstudy.track.store import experiment_id, open_client

    spec = _load(args.study) if args.study else None
    uri = _uri(args, spec)
    experiment = args.experiment or (spec.experiment if spec else None)
    server = ui_view.is_server_uri(uri)
    base = ui_view.base_url(uri) if server else f"http://127.0.0.1:{args.port}"
    if not server and ui_server.port_in_use(args.port):
        raise UserInputError(f"ui: port {args.port} on 127.0.0.1 is in use; pass --port")
    url, view, metric = ui_view.experiments_url(base), None, None
    if experiment or server:
        client = open_client(uri, create=False)  # a server: reachable; a file: it exists
    if experiment:
        exp = experiment_id(client, experiment, create=False)
        if exp is None:
            raise UserInputError(f"ui: no experiment {experiment!r} in {uri}")
        study = spec.name if spec else None
        trials = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, study)
        try:
            run_names = [r.info.run_name or "" for r in trials]
            tags = trials[0].data.tags if trials else {}
            metric = spec.rank_metric if spec else (
                (tags[names.TAG_METRIC], tags.get(names.TAG_METRIC_MODE, "max"))
                if names.TAG_METRIC in tags else None
            )  # fmt: skip
            key = ui_view.ensure_study_view(client, exp, study, run_names, metric)
            url, view = ui_view.runs_view_url(base, exp, view_key=key), ui_view.view_name(study)
        except (MlflowException, ValueError) as e:  # e.g. a read-only server: no saved columns
            print(f"lrstudy: could not save the runs view ({type(e).__name__}); linking without it")
            url = ui_view.runs_view_url(
                base,
                exp,
                search_filter=ui_view.trials_filter(study),
                order_by=ui_view.column("metrics", names.FINAL_VAL_ACC),
            )
    where = f"MLflow UI of {uri}" if server else f"MLflow UI for {uri} (Ctrl-C stops it)"
    print(f"{where}:\n  {url}")
    if view:
        shown = "final val acc" if metric is None or metric[0] == names.VAL_ACC else metric[0]
        print(f"  view {view!r} (Views menu): outcome, {shown} and settings per trial")
    opened = not args.no_browser and ui_server.display_available()
    if server:
        if opened:
            webbrowser.open(url)
        return 0
    if opened:
        ui_server.open_when_ready(url, f"{base}/health")
    cmd, env = ui_server.mlflow_ui_command(uri, args.port, os.environ)  # quiet: URL above, errors
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ui_server.relay_quietly(proc.stdout)

    def stop(signum, frame):  # `kill PID` of lrstudy ends its UI too, as Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C is how this command ends
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


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
