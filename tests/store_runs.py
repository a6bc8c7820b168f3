"""Reading a test's store back: the runs of one kind in one experiment (tests share it)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from lrstudy import names


def kind_runs(uri: str, experiment: str, kind: str = names.KIND_TRIAL) -> list:
    """Every active run of `kind` (trial runs by default) in `experiment`; [] if it is absent."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(names.TAG_KIND) == kind]
