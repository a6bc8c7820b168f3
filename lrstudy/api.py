"""The notebook API: run a study and get its results back as values (the CLI is a thin shell).

summary = lrstudy.run_study("studies/quickstart.yaml", workers=2)
df = lrstudy.load_results("quickstart")          # one row per trial, as the report sees it
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from lrstudy.execute.study import StudyRun, check_workers, default_workers
from lrstudy.spec import StudySpec, load_spec
from lrstudy.track.store import resolve_tracking_uri


def run_study(
    path_or_spec: str | Path | StudySpec,
    *,
    workers: int | None = None,
    executor: str = "local",
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    engine: str = "auto",
    population_size: int | None = None,
    report: bool = True,
    report_dir: str | Path | None = None,
    console: Console | None = None,
) -> StudyRun:
    """Run every unfinished trial of a study, then write its report (unless `report=False`).

    Args:
        path_or_spec: a study file, or a `StudySpec` already loaded.
        workers: trials at once (default: $LRSTUDY_WORKERS, else the usable cores).
        executor: "local" or "ray".
        tracking_uri: default $MLFLOW_TRACKING_URI, the study's tracking.uri, else sqlite.
        ray_address: with executor="ray": the cluster (default $RAY_ADDRESS, else local).
        engine: "auto" (a population wherever ≥ 2 trials share a shape), "trial" or "population".
        population_size: members per population (default: from the model's parameter count).
        report: write the HTML report when the study is complete (and the spec enables it).
        report_dir: where the report goes (default: the study's report.dir).
        console: where progress goes (default: stderr).
    Returns:
        The summary: counts per outcome, the best configuration, the parent run id, and
        `report_path` when a report was written.
    Raises:
        UserInputError: a mistake in the study, the data or the arguments (nothing written).
    """
    from lrstudy.execute.study import run_study as execute

    if isinstance(path_or_spec, StudySpec):
        spec, source = path_or_spec, f"<study {path_or_spec.name}>"
    else:
        spec, source = load_spec(path_or_spec), str(path_or_spec)
    n = check_workers(default_workers() if workers is None else workers, executor)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    result = execute(
        spec,
        source,
        uri,
        workers=n,
        executor=executor,
        ray_address=ray_address,
        engine=engine,
        population_size=population_size,
        console=console,
    )
    result.tracking_uri = uri
    if report and spec.report.enabled and not result.interrupted and not result.unavailable:
        from lrstudy.report.build import build_report

        out = Path(report_dir) if report_dir is not None else Path(spec.report.dir)
        result.report_path = build_report(
            uri, study=spec.name, experiment=spec.experiment, out_dir=out
        )
    return result
