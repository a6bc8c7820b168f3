"""The notebook API: run a study and get its results back as values (the CLI is a thin shell).

summary = lrstudy.run_study("studies/quickstart.yaml", workers=2)
df = lrstudy.load_results("quickstart")          # one row per trial, as the report sees it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from lrstudy.execute.run_options import check_workers, default_workers
from lrstudy.execute.study import StudyRun
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
    module: Any = None,
    datamodule: Any = None,
    model: Any = None,
    dataset: Any = None,
    loss: Any = None,
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
        module, datamodule, model, dataset, loss: a user's class (or any factory taking the
            init_args) for that task field, instead of a class_path a study file would name:
            `run_study(spec, module=LitModel, datamodule=MyData)` needs no package. The study's
            `task.<field>.init_args` still apply (a `task.<field>` entry may be left out). With
            more than one worker or with Ray they must pickle (cloudpickle; notebook classes do).
    Returns:
        The summary: counts per outcome, the best configuration, the parent run id, and
        `report_path` when a report was written.
    Raises:
        UserInputError: a mistake in the study, the data or the arguments (nothing written).
    """
    from lrstudy.execute.study import run_study as execute

    given = {"module": module, "datamodule": datamodule, "model": model, "dataset": dataset,
             "loss": loss}  # fmt: skip
    factories = {k: v for k, v in given.items() if v is not None}
    if isinstance(path_or_spec, StudySpec):
        spec, source = path_or_spec, f"<study {path_or_spec.name}>"
        if factories:
            spec = with_classes(spec.model_dump(mode="json"), factories, source)
    elif factories:
        from lrstudy.spec.load import read_yaml

        source = str(path_or_spec)
        spec = with_classes(read_yaml(path_or_spec), factories, source)
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
        factories=factories or None,
    )
    result.tracking_uri = uri
    if report and spec.report.enabled and not result.interrupted and not result.unavailable:
        from lrstudy.report.build import build_report

        out = Path(report_dir) if report_dir is not None else Path(spec.report.dir)
        result.report_path = build_report(
            uri, study=spec.name, experiment=spec.experiment, out_dir=out
        )
    return result


def with_classes(raw: dict[str, Any], factories: dict[str, Any], source: str) -> StudySpec:
    """A study (as a dict) with the API's classes named in its task: each given field gets the
    object's dotted name as class_path, keeping the init_args the study gave it."""
    from lrstudy.spec.load import validate
    from lrstudy.train.user_classes import class_path_of

    if not isinstance(raw, dict):
        return validate(raw, source)  # the one-line error for a study that is no mapping
    task = dict(raw.get("task") or {})
    for field, obj in factories.items():
        entry = task.get(field)
        init_args = entry.get("init_args", {}) if isinstance(entry, dict) else {}
        task[field] = {"class_path": class_path_of(obj), "init_args": init_args}
    return validate({**raw, "task": task}, source)
